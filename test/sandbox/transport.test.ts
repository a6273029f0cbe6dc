/**
 * The SSH transport against real sshd: channel limits and retries, re-dial
 * after a dropped connection, sudo (with and without a password), ~/.ssh/config
 * aliases, timeouts, the local transport, secrets kept out of errors, and a
 * pool that never keeps the process alive.
 */
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { isKvmnetError } from "../../provider/errors";
import { closeAllConnections, hostFor, poolStats } from "../../provider/host";
import { observe } from "../../provider/apply";
import { assertSandboxSupported, Fleet, SandboxHost, startFleet } from "../../testbed/fleet";

let fleet: Fleet;
let h: SandboxHost;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-transport-"));
const SUDO_PASSWORD = "s3cret-sudo-Pa55";

beforeAll(async () => {
  await assertSandboxSupported();
  // MaxSessions 2 makes sshd refuse the third concurrent channel: the pool must retry.
  fleet = await startFleet(1, {
    sshdExtraConfig: [
      "MaxSessions 2",
      "PasswordAuthentication yes",
      // Non-root test users read their keys from their own home (the fleet's key file is root-only).
      "Match User ops,nopw",
      "  AuthorizedKeysFile .ssh/authorized_keys",
    ].join("\n"),
  });
  h = fleet.hosts[0];
  // Users and their homes live in the host's private /etc and /run overlays
  // (/home is the machine's own: never write there).
  await h.exec(
    [
      // sudo looks its host name up; without an entry it waits for DNS that is not there.
      'echo "127.0.1.1 $(hostname)" >> /etc/hosts',
      "mkdir -p /run/kvmnet-test-home",
      "for u in ops nopw; do useradd -M -d /run/kvmnet-test-home/$u -s /bin/sh $u && mkdir -p /run/kvmnet-test-home/$u/.ssh; done",
      `echo 'ops:${SUDO_PASSWORD}' | chpasswd && echo 'nopw:unused-Pa55' | chpasswd`,
      "echo 'ops ALL=(ALL) ALL' > /etc/sudoers.d/ops && echo 'nopw ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nopw",
      "chmod 0440 /etc/sudoers.d/ops /etc/sudoers.d/nopw",
      `for u in ops nopw; do echo '${h.publicKeyLine}' > /run/kvmnet-test-home/$u/.ssh/authorized_keys && chown -R $u /run/kvmnet-test-home/$u; done`,
    ].join(" && "),
  );
});

afterAll(async () => {
  closeAllConnections();
  await fleet?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const conn = (extra: Record<string, unknown> = {}) => ({ host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint, ...extra });

async function rejection(p: Promise<unknown>): Promise<Error & { kind?: string }> {
  try {
    await p;
  } catch (e) {
    expect(isKvmnetError(e)).toBe(true);
    return e as Error & { kind?: string };
  }
  throw new Error("expected a rejection");
}

it("queues and retries when sshd refuses channels (MaxSessions 2), all commands succeed", async () => {
  closeAllConnections();
  const host = hostFor(conn());
  const before = { ...poolStats };
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => host.run(`sleep 0.3; echo ${i}`)));
  expect(results.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 12 }, (_, i) => String(i)));
  expect(poolStats.handshakes - before.handshakes).toBe(1);
  expect(poolStats.channelRetries - before.channelRetries).toBeGreaterThan(0);
});

describe("shared reads (RunOptions.shared)", () => {
  const script = "cat /run/kvmnet-shared-read.txt; echo pid=$$";

  it("asked together, they share one run: one exec on the host", async () => {
    closeAllConnections();
    await h.exec("echo one > /run/kvmnet-shared-read.txt");
    const host = hostFor(conn());
    const before = { ...poolStats };
    // The first ask waits for the handshake; the other five join it.
    const results = await Promise.all(Array.from({ length: 6 }, () => host.run(script, { shared: true })));
    expect(new Set(results.map((r) => r.stdout)).size).toBe(1);
    expect(results[0].stdout).toMatch(/^one\npid=\d+\n$/);
    expect(poolStats.sharedReads - before.sharedReads).toBe(5);
    expect(poolStats.commands - before.commands).toBe(1);
  });

  it("an ask after a run started never joins it: it sees a change that completed before it asked", async () => {
    const host = hostFor(conn());
    await host.run("true"); // connected: the next run starts at once
    await h.exec("echo old > /run/kvmnet-shared-read.txt");
    const slow = host.run(`sleep 0.6; ${script}`, { shared: true });
    await new Promise((r) => setTimeout(r, 200));
    await h.exec("echo new > /run/kvmnet-shared-read.txt"); // done before the next ask
    const before = { ...poolStats };
    const late = await host.run(`sleep 0.6; ${script}`, { shared: true });
    expect(late.stdout).toMatch(/^new\n/);
    expect(poolStats.sharedReads - before.sharedReads).toBe(0);
    expect((await slow).stdout).not.toBe(late.stdout);
  });

  it("asks made while one runs wait for it and then share one run, which sees what changed before they asked", async () => {
    const host = hostFor(conn());
    await host.run("true");
    await h.exec("echo before > /run/kvmnet-shared-read.txt");
    const slowScript = `${script}; sleep 0.5`; // reads first, then keeps running
    const first = host.run(slowScript, { shared: true });
    await new Promise((r) => setTimeout(r, 200)); // the first is running now
    await h.exec("echo after > /run/kvmnet-shared-read.txt");
    const before = { ...poolStats };
    const later = await Promise.all(Array.from({ length: 3 }, () => host.run(slowScript, { shared: true })));
    expect(new Set(later.map((r) => r.stdout)).size).toBe(1);
    expect(later[0].stdout).toMatch(/^after\n/);
    expect((await first).stdout).toMatch(/^before\n/);
    expect(poolStats.sharedReads - before.sharedReads).toBe(2);
    expect(poolStats.commands - before.commands).toBe(1);
  });

  it("runs without the option are never shared", async () => {
    const host = hostFor(conn());
    const results = await Promise.all(Array.from({ length: 3 }, () => host.run(script)));
    expect(new Set(results.map((r) => r.stdout)).size).toBe(3);
  });
});

it("re-dials once when the connection died between uses", async () => {
  closeAllConnections();
  const host = hostFor(conn());
  expect((await host.run("echo one")).stdout).toBe("one\n");
  // Kill the per-connection sshd processes (children of the listener), by pid.
  await h.exec(`for p in $(pgrep -P ${h.sshdPid}); do kill -9 $p; done`);
  await new Promise((r) => setTimeout(r, 300));
  const before = poolStats.redials + poolStats.handshakes;
  expect((await host.run("echo two")).stdout).toBe("two\n");
  expect(poolStats.redials + poolStats.handshakes - before).toBeGreaterThanOrEqual(1);
});

it("runs as root through sudo with a password, and passwordless sudo -n; the password never shows", async () => {
  closeAllConnections();
  const withPw = hostFor(conn({ user: "ops", sudo: { password: SUDO_PASSWORD } }));
  const r = await withPw.run("id -u; cat");
  expect(r.stdout).toBe("0\n");
  expect(r.stderr).not.toContain(SUDO_PASSWORD);
  // A NOPASSWD user given a password anyway: the password line is discarded, never executed.
  const nopwGiven = hostFor(conn({ user: "nopw", sudo: { password: SUDO_PASSWORD } }));
  const r2 = await nopwGiven.run("id -u");
  expect(r2).toMatchObject({ stdout: "0\n", exitCode: 0 });
  expect(r2.stderr).not.toContain(SUDO_PASSWORD);
  const nopw = hostFor(conn({ user: "nopw", sudo: true }));
  expect((await nopw.run("id -u")).stdout).toBe("0\n");
  // observe() under sudo still finds the management interface (SSH_CONNECTION is carried through).
  expect((await observe(nopw)).managementInterface).toBe("mgmt0");
});

it("never runs what follows a newline in a sudo password, even one that bypassed check", async () => {
  closeAllConnections();
  // hostFor does not validate (check does): this is a value that slipped through.
  // The old framing sent "<password>\n@@kvmnet-script\n<script>" on one stream, so
  // a password carrying that marker line ran the rest as root (issue #14, item 6).
  const canary = (who: string) => `/run/kvmnet-canary-${who}`;
  const hostile = (who: string, first: string) => `${first}\n@@kvmnet-script\ntouch ${canary(who)}\n`;
  for (const [user, first] of [
    ["nopw", "anything"], // sudo never reads the password: the shell sees every line
    ["ops", SUDO_PASSWORD], // sudo reads the (right) first line; the rest stays on stdin
  ]) {
    const r = await hostFor(conn({ user, sudo: { password: hostile(user, first) } })).run("echo ran-as-$(id -u)");
    expect({ user, stdout: r.stdout }).toEqual({ user, stdout: "ran-as-0\n" });
    const seen = await h.exec(`test -e ${canary(user)} && echo EXECUTED || echo absent`);
    expect({ user, canary: seen.stdout.trim() }).toEqual({ user, canary: "absent" });
  }
});

it("fails clearly without sudo for a non-root user, and with a wrong sudo password", async () => {
  closeAllConnections();
  const err = await rejection(observe(hostFor(conn({ user: "ops" }))));
  expect(err.kind).toBe("Permission");
  expect(err.message).toMatch(/needs root[\s\S]*sudo/);
  const wrong = await hostFor(conn({ user: "ops", sudo: { password: "wrong-Pa55word" } })).run("id -u");
  expect(wrong.exitCode).not.toBe(0);
  expect(wrong.stdout + wrong.stderr).not.toContain("wrong-Pa55word");
});

it("keeps secrets out of errors: a wrong login password", async () => {
  closeAllConnections();
  const err = await rejection(hostFor({ host: h.address, hostKey: h.hostKeyFingerprint, user: "ops", password: "Not-The-Password-42" }).run("true"));
  expect(err.kind).toBe("Unreachable");
  expect(err.message).toMatch(/authentication failed for user ops/);
  expect(err.message).not.toContain("Not-The-Password-42");
});

it("resolves ~/.ssh/config aliases: HostName, User, Port, IdentityFile, ProxyJump", async () => {
  closeAllConnections();
  const home = path.join(tmp, "home");
  fs.mkdirSync(path.join(home, ".ssh"), { recursive: true });
  fs.writeFileSync(path.join(home, ".ssh", "id_lab"), h.privateKey, { mode: 0o600 });
  fs.writeFileSync(
    path.join(home, ".ssh", "config"),
    `Host lab-alias\n  HostName ${h.address}\n  User nopw\n  Port 22\n  IdentityFile ~/.ssh/id_lab\n` +
      // The second alias hops through the first (the host reaching its own uplink address).
      `Host lab-jumped\n  HostName ${h.uplinkAddress}\n  User root\n  IdentityFile ~/.ssh/id_lab\n  ProxyJump lab-alias\n`,
  );
  fs.copyFileSync(h.knownHostsPath, path.join(home, ".ssh", "known_hosts"));
  const oldHome = process.env.HOME;
  process.env.HOME = home;
  try {
    const host = hostFor({ host: "lab-alias", hostKey: h.hostKeyFingerprint, sudo: true });
    expect(host.label).toBe(`nopw@lab-alias (${h.address}):22`);
    // Logged in as nopw (from the file), running as root through sudo.
    expect((await host.run('echo "$SUDO_USER"; id -u')).stdout).toBe("nopw\n0\n");
    const jumped = hostFor({ host: "lab-jumped", hostKey: h.hostKeyFingerprint });
    expect(jumped.label).toBe(`root@lab-jumped (${h.uplinkAddress}):22 via nopw@lab-alias (${h.address}):22`);
    // Through the jump the session starts inside the host (source = its uplink address), not at our veth.
    expect((await jumped.run('echo "${SSH_CONNECTION%% *}"')).stdout.trim()).toBe(h.uplinkAddress);
  } finally {
    process.env.HOME = oldHome;
  }
});

it("bounds the wait for a channel by readyTimeoutMs when the server stops answering", async () => {
  closeAllConnections();
  const host = hostFor(conn({ readyTimeoutMs: 1000 }));
  expect((await host.run("echo one")).stdout).toBe("one\n");
  // Freeze this connection's sshd processes (children of the listener), by pid.
  const frozen = (await h.exec(`pgrep -P ${h.sshdPid} || true`)).stdout.trim().split("\n").filter(Boolean);
  expect(frozen.length).toBeGreaterThan(0);
  await h.exec(`kill -STOP ${frozen.join(" ")}`);
  try {
    const err = await rejection(host.run("echo two"));
    expect(err.kind).toBe("Unreachable");
    expect(err.message).toContain("no answer to a channel open within 1000 ms");
  } finally {
    await h.exec(`kill -KILL ${frozen.join(" ")}; kill -CONT ${frozen.join(" ")}`, { allowFail: true });
    closeAllConnections();
  }
}, 30_000);

describe("through a jump host, every network wait is bounded by readyTimeoutMs", () => {
  // Targets are the host's own uplink address (inside the sandbox namespace the
  // fleet made): the jump host's sshd dials it from inside that namespace.
  const table = "kvmnet_test_blackhole";
  let listenerPid: string | undefined;
  beforeAll(async () => {
    // Port 2222: SYNs are dropped, so the jump's connect() hangs (~130 s of SYN retries).
    await h.exec(
      `nft add table inet ${table} && nft add chain inet ${table} input '{ type filter hook input priority 0; }' && nft add rule inet ${table} input ip daddr ${h.uplinkAddress} tcp dport 2222 drop`,
    );
    // Port 2223: accepts TCP and never says a word of SSH.
    const started = await h.exec(
      `python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${h.uplinkAddress}", 2223)); s.listen(8); c=[s.accept() for _ in range(8)]; time.sleep(600)' >/dev/null 2>&1 & echo $!`,
    );
    listenerPid = started.stdout.trim();
  });
  afterAll(async () => {
    await h.exec(`nft delete table inet ${table}`, { allowFail: true });
    if (listenerPid) await h.exec(`kill ${listenerPid}`, { allowFail: true });
  });

  it(
    "fails Unreachable when the jump host's forward to the target gets no answer",
    async () => {
      closeAllConnections();
      const target = `${h.uplinkAddress}:2222`;
      const err = await rejection(hostFor(conn({ host: h.uplinkAddress, port: 2222, jumpHost: conn(), readyTimeoutMs: 1000 })).run("true"));
      expect(err.kind).toBe("Unreachable");
      expect(err.message).toContain(`cannot reach ${target}`);
      expect(err.message).toContain("within 1000 ms");
      expect(err.message).toContain(`host root@${h.address}:22`);
      // The jump connection itself is still good.
      expect((await hostFor(conn()).run("echo still-here")).stdout).toBe("still-here\n");
    },
    30_000, // without the bound the forward waits for the kernel's SYN retries (~130 s)
  );

  it("fails Timeout when the target behind the jump accepts TCP but never completes the SSH handshake", async () => {
    closeAllConnections();
    const err = await rejection(hostFor(conn({ host: h.uplinkAddress, port: 2223, jumpHost: conn(), readyTimeoutMs: 1000 })).run("true"));
    expect(err.kind).toBe("Timeout");
    expect(err.message).toContain("no SSH handshake within 1000 ms");
    expect(err.message).toContain(`${h.uplinkAddress}:2223 via`);
  }, 30_000);
});

it("times out a command that runs too long", async () => {
  closeAllConnections();
  const err = await rejection(hostFor(conn()).run("sleep 30", { timeoutMs: 1000 }));
  expect(err.kind).toBe("Timeout");
});

/** Wait (bounded) until no process's command line holds `marker`; returns what is left. */
async function processesLeft(exec: (cmd: string) => Promise<{ stdout: string }>, marker: string): Promise<string> {
  let left = "";
  for (let i = 0; i < 50; i++) {
    left = (await exec(`pgrep -af -- ${marker} | grep -v pgrep || true`)).stdout.trim();
    if (!left) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return left;
}

it("bounds captured output over SSH: a flood fails with the limit named, and the command and channel are gone", async () => {
  closeAllConnections();
  const host = hostFor(conn());
  const MiB = 1024 * 1024;
  for (const [stream, redirect] of [
    ["stdout", ""],
    ["stderr", " >&2"],
  ]) {
    const marker = `kvmnet-flood-${stream}-${process.pid}`;
    // Never ends on its own: without the bound it would run into the timeout.
    const err = await rejection(host.run(`yes ${marker}${redirect}; echo never`, { maxOutputBytes: MiB, timeoutMs: 15_000 }));
    expect(err.kind).toBe("Failed");
    expect(err.message).toContain(`more than 1048576 bytes on ${stream}`);
    expect(err.message).toContain(`host ${host.label}`);
    expect(await processesLeft((c) => h.exec(c), marker)).toBe("");
  }
  // MaxSessions 2: a channel left open by the floods would make sshd refuse these.
  const retries = poolStats.channelRetries;
  const ok = await Promise.all([host.run("echo a"), host.run("echo b")]);
  expect(ok.map((r) => r.stdout)).toEqual(["a\n", "b\n"]);
  expect(poolStats.channelRetries).toBe(retries);
});

it("bounds captured output locally: a flood fails with the limit named, and the process is gone", async () => {
  const local = hostFor({ host: "this-machine", local: true });
  const marker = `kvmnet-flood-local-${process.pid}`;
  const err = await rejection(local.run(`yes ${marker}; echo never`, { maxOutputBytes: 1024 * 1024, timeoutMs: 15_000 }));
  expect(err.kind).toBe("Failed");
  expect(err.message).toContain("more than 1048576 bytes on stdout");
  expect(err.message).toContain("host local");
  const root = (cmd: string) =>
    new Promise<{ stdout: string }>((resolve, reject) => execFile("sh", ["-c", cmd], (e: Error | null, stdout) => (e ? reject(e) : resolve({ stdout }))));
  expect(await processesLeft(root, marker)).toBe("");
});

describe("files that are not regular files are refused, never read (a FIFO would block the event loop)", () => {
  /**
   * Run hostFor(connection).run("true") in a child process (a blocking read
   * freezes the whole event loop, so only another process can time it out) and
   * return the error it reports, or HUNG.
   */
  async function errorInChild(connection: Record<string, unknown>, env: Record<string, string> = {}): Promise<{ kind?: string; message: string }> {
    const script = path.join(tmp, `fifo-${Math.random().toString(36).slice(2)}.ts`);
    fs.writeFileSync(
      script,
      `import { hostFor, closeAllConnections } from ${JSON.stringify(path.resolve(__dirname, "../../provider/host"))};
(async () => {
  try {
    await hostFor(${JSON.stringify(connection)}).run("true");
    console.log(JSON.stringify({ message: "no error" }));
  } catch (e) {
    console.log(JSON.stringify({ kind: (e as { kind?: string }).kind, message: (e as Error).message }));
  } finally {
    closeAllConnections();
  }
})();`,
    );
    // node itself with tsx's loader (not the tsx CLI, which runs node as a child
    // that the timeout's SIGKILL would not reach): a hung child must die.
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        ["--import", "tsx", script],
        { cwd: path.resolve(__dirname, "../.."), timeout: 15_000, killSignal: "SIGKILL", env: { ...process.env, ...env } },
        (err, stdout) => {
          resolve(err && !stdout.trim() ? { message: "HUNG (killed after 15 s)" } : JSON.parse(stdout.trim().split("\n").pop() as string));
        },
      );
    });
  }
  const fifo = path.join(tmp, "a-fifo");
  beforeAll(async () => {
    await new Promise<void>((resolve, reject) => execFile("mkfifo", [fifo], (e: Error | null) => (e ? reject(e) : resolve())));
  });

  it("knownHostsFile", async () => {
    const err = await errorInChild({ host: h.address, privateKey: h.privateKey, knownHostsFile: fifo });
    expect(err).toEqual({ kind: "InvalidArgument", message: expect.stringContaining(`connection.knownHostsFile ${fifo} is not a regular file`) });
    expect(err.message).toContain(`(host root@${h.address}:22)`);
  }, 30_000);

  it("an IdentityFile from the ssh config", async () => {
    const config = path.join(tmp, "fifo-identity-config");
    fs.writeFileSync(config, `Host fifo-alias\n  HostName ${h.address}\n  IdentityFile ${fifo}\n`);
    const err = await errorInChild({ host: "fifo-alias", hostKey: h.hostKeyFingerprint }, { KVMNET_SSH_CONFIG: config });
    expect(err).toEqual({ kind: "InvalidArgument", message: expect.stringContaining(`IdentityFile ${fifo} (from ${config}) is not a regular file`) });
  }, 30_000);

  it("the ssh config file itself", async () => {
    const err = await errorInChild({ host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint }, { KVMNET_SSH_CONFIG: fifo });
    expect(err).toEqual({ kind: "InvalidArgument", message: expect.stringContaining(`ssh config ${fifo} is not a regular file`) });
  }, 30_000);
});

it("runs locally with connection.local (no SSH)", async () => {
  const local = hostFor({ host: "this-machine", local: true });
  expect(local.label).toBe("local");
  const r = await local.run("echo $((6*7))", { stdin: "ignored" });
  expect(r).toMatchObject({ stdout: "42\n", exitCode: 0 });
});

it("never keeps the process alive: a program that forgets to close the pool exits at once", async () => {
  const script = path.join(tmp, "lifetime.ts");
  fs.writeFileSync(
    script,
    `import { hostFor } from ${JSON.stringify(path.resolve(__dirname, "../../provider/host"))};
hostFor(${JSON.stringify(conn())}).run("echo ok").then((r) => { console.log(r.stdout.trim()); console.log(Date.now()); });`,
  );
  const tsx = path.resolve(__dirname, "../../node_modules/.bin/tsx");
  const { stdout, exited } = await new Promise<{ stdout: string; exited: number }>((resolve, reject) => {
    execFile(tsx, [script], { timeout: 25_000 }, (err: Error | null, stdout) => (err ? reject(err) : resolve({ stdout, exited: Date.now() })));
  });
  const [ok, finishedAt] = stdout.trim().split("\n");
  expect(ok).toBe("ok");
  // Exits right after the work, not after the 30 s idle timer (the child is killed at 25 s).
  expect(exited - Number(finishedAt)).toBeLessThan(10_000);
});
