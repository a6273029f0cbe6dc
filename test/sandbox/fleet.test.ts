/**
 * Tests of the tier-2 harness itself: the hosts are real (SSH with host-key pinning,
 * routes, hidden PCI bus, private state dirs), they reach each other only through the
 * upstream LAN, and every way a fleet can end (stop, failed start, SIGTERM, SIGKILL +
 * cleanupStale) leaves nothing behind.
 */
import { spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { Client, type ClientChannel, type ConnectConfig } from "ssh2";
import {
  assertSandboxSupported,
  cleanupStale,
  fleetPrefixes,
  sandboxPaths,
  snapshotHost,
  startFleet,
  type Fleet,
  type SandboxHost,
  type StartFleetError,
} from "../../testbed/fleet";

const REPO = path.resolve(__dirname, "../..");
// jest.config.js sets testTimeout on the project, which jest does not apply per project.
jest.setTimeout(120_000);

function fingerprintOf(key: Buffer): string {
  return "SHA256:" + crypto.createHash("sha256").update(key).digest("base64").replace(/=+$/, "");
}

interface SshResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

function connect(host: SandboxHost, extra: Partial<ConnectConfig> = {}, expectedFingerprint = host.hostKeyFingerprint): Promise<Client> {
  return new Promise((resolve, reject) => {
    const conn = new Client();
    conn.once("ready", () => resolve(conn));
    conn.once("error", reject);
    conn.connect({
      host: host.address,
      port: host.port,
      username: host.user,
      privateKey: host.privateKey,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) => fingerprintOf(key) === expectedFingerprint,
      ...extra,
    });
  });
}

function sshExec(conn: Client, cmd: string): Promise<SshResult> {
  return new Promise((resolve, reject) => {
    conn.exec(cmd, (err: Error | undefined, stream: ClientChannel) => {
      if (err) return reject(err);
      let stdout = "";
      let stderr = "";
      let code: number | null = null;
      stream.on("data", (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      stream.on("exit", (c: number | null) => (code = c));
      stream.on("close", () => resolve({ stdout, stderr, code }));
    });
  });
}

async function eventually(check: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

/** A pid is gone when /proc has no live (non-zombie) process for it. */
function pidGone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}

/** Everything of a run still on the machine; all empty once the fleet is gone. */
function leftovers(runId: string): { netns: string[]; rootLinks: string[]; slots: string[]; files: string[] } {
  const prefixes = fleetPrefixes(runId);
  const netnsList = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout;
  const links = JSON.parse(spawnSync("ip", ["-j", "link", "show"], { encoding: "utf8" }).stdout) as { ifname: string }[];
  const slots = fs.readdirSync(sandboxPaths.slotsDir).filter((k) => {
    try {
      return (JSON.parse(fs.readFileSync(`${sandboxPaths.slotsDir}/${k}/owner.json`, "utf8")) as { runId: string }).runId === runId;
    } catch {
      return false;
    }
  });
  return {
    netns: netnsList
      .split("\n")
      .map((l) => l.split(" ")[0] ?? "")
      .filter((n) => n.startsWith(prefixes.netns)),
    rootLinks: links.map((l) => l.ifname).filter((n) => n.startsWith(prefixes.rootLink)),
    slots,
    files: [`/tmp/kvs-${runId}`, `${sandboxPaths.fleetsDir}/${runId}.json`].filter((f) => fs.existsSync(f)),
  };
}
const NOTHING = { netns: [], rootLinks: [], slots: [], files: [] };

test("this machine can run sandbox hosts", async () => {
  await expect(assertSandboxSupported()).resolves.toBeUndefined();
});

describe("a fleet of two hosts", () => {
  let fleet: Fleet;
  let h1: SandboxHost;
  let h2: SandboxHost;

  beforeAll(async () => {
    await assertSandboxSupported();
    fleet = await startFleet(2);
    [h1, h2] = fleet.hosts as [SandboxHost, SandboxHost];
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  test("hosts are described consistently", () => {
    expect(fleet.hosts.map((h) => h.index)).toEqual([1, 2]);
    for (const h of fleet.hosts) {
      expect(h.netns).toBe(`kvs-${fleet.runId}-${h.index}`);
      expect(h.address).toMatch(/^198\.18\.\d+\.\d+$/);
      expect(h.uplinkAddress).toBe(`198.19.0.${10 + h.index}`);
      expect(h.hostKeyFingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
      expect(h.hostKeyLine).toMatch(/^ssh-ed25519 AAAA/);
      expect(fs.readFileSync(h.knownHostsPath, "utf8")).toBe(`${h.address} ${h.hostKeyLine}\n`);
      expect(fs.readlinkSync(`/proc/${h.sshdPid}/exe`)).toBe("/usr/sbin/sshd");
    }
    expect(fs.statSync(fleet.dir).mode & 0o777).toBe(0o700);
  });

  test.each([1, 2])("host %i over SSH: pinned host key, uplink default route, no PCI bus, empty private state, own netns", async (i) => {
    const host = fleet.hosts[i - 1];
    const before = host.acceptedConnections();
    const conn = await connect(host);
    try {
      const route = await sshExec(conn, "ip -j route");
      expect(route.code).toBe(0);
      const routes = JSON.parse(route.stdout) as { dst: string; gateway?: string; dev: string }[];
      expect(routes.filter((r) => r.dst === "default")).toEqual([expect.objectContaining({ gateway: "198.19.0.1", dev: "eth0" })]);

      expect(await sshExec(conn, "ls /sys/bus/pci/devices")).toEqual({ stdout: "", stderr: "", code: 0 });
      const hidden = await sshExec(conn, "find /sys/bus/pci/drivers /sys/kernel/iommu_groups /sys/devices/pci0000:00 -mindepth 1");
      expect(hidden).toEqual({ stdout: "", stderr: "", code: 0 });

      const state = await sshExec(conn, "test -d /run/kvmnet && test -d /etc/kvmnet && find /run/kvmnet /etc/kvmnet -mindepth 1");
      expect(state).toEqual({ stdout: "", stderr: "", code: 0 });

      const identify = await sshExec(conn, "ip netns identify; hostname");
      expect(identify.stdout).toBe(`${host.netns}\n${host.netns}\n`);
    } finally {
      conn.end();
    }
    expect(await eventually(() => host.acceptedConnections() === before + 1)).toBe(true);
  });

  test("a host with the wrong pinned fingerprint is refused", async () => {
    await expect(connect(h1, {}, "SHA256:" + "A".repeat(43))).rejects.toThrow();
  });

  test("hosts reach each other and the upstream router only over the uplink LAN", async () => {
    await h1.exec(`ping -c1 -W2 ${h2.uplinkAddress}`);
    await h1.exec(`ping -c1 -W2 ${fleet.upstream.address}`);
    // Host 2's management address is not routable from host 1 (no route via upstream).
    const mgmt = await h1.exec(`ping -c1 -W1 ${h2.address}`, { allowFail: true });
    expect(mgmt.code).not.toBe(0);
    const upstreamRoutes = await fleet.upstream.exec("ip -j route");
    expect((JSON.parse(upstreamRoutes.stdout) as { dst: string }[]).map((r) => r.dst)).toEqual(["198.19.0.0/24"]);
  });

  test("one host is a jump host to another (TCP forwarding over the uplink LAN)", async () => {
    const jump = await connect(h1);
    try {
      const sock = await new Promise<ClientChannel>((resolve, reject) => jump.forwardOut("127.0.0.1", 0, h2.uplinkAddress, 22, (err, ch) => (err ? reject(err) : resolve(ch))));
      const inner = await connect(h2, { sock });
      try {
        expect((await sshExec(inner, "ip netns identify")).stdout.trim()).toBe(h2.netns);
      } finally {
        inner.end();
      }
    } finally {
      jump.end();
    }
  });

  test("state dirs, /etc and /run are private to each host and to the machine", async () => {
    const marker = `kvs-probe-${fleet.runId}`;
    await h1.exec(`echo one > /run/kvmnet/x && echo one > /etc/kvmnet/x && echo one > /etc/${marker} && echo one > /run/${marker}`);
    try {
      expect((await h1.exec("cat /run/kvmnet/x")).stdout).toBe("one\n");
      const onH2 = await h2.exec(`ls /run/kvmnet/x /etc/kvmnet/x /etc/${marker} /run/${marker}`, { allowFail: true });
      expect(onH2.code).not.toBe(0);
      expect(onH2.stdout).toBe("");
      for (const f of ["/run/kvmnet/x", "/etc/kvmnet/x", `/etc/${marker}`, `/run/${marker}`]) expect(fs.existsSync(f)).toBe(false);
    } finally {
      await h1.exec(`rm -f /run/kvmnet/x /etc/kvmnet/x /etc/${marker} /run/${marker}`);
    }
  });

  test("the root namespace only gains the veth ends with their /30", () => {
    const { rootLink } = fleetPrefixes(fleet.runId);
    const addrs = JSON.parse(spawnSync("ip", ["-j", "addr", "show"], { encoding: "utf8" }).stdout) as {
      ifname: string;
      addr_info: { local: string; prefixlen: number; family: string }[];
    }[];
    const ours = addrs.filter((l) => l.ifname.startsWith(rootLink));
    expect(ours.map((l) => l.ifname).sort()).toEqual([`${rootLink}1`, `${rootLink}2`]);
    for (const l of ours) {
      expect(l.addr_info).toHaveLength(1); // no IPv6 link-local either
      expect(l.addr_info[0]).toMatchObject({ family: "inet", prefixlen: 30 });
    }
    const routes = JSON.parse(spawnSync("ip", ["-j", "route", "show", "table", "all"], { encoding: "utf8" }).stdout) as { dev?: string }[];
    const viaOurs = routes.filter((r) => r.dev?.startsWith(rootLink));
    // per link: the connected /30 (main) plus the local and broadcast entries (local table)
    expect(viaOurs.filter((r) => !("table" in r) || (r as { table?: string }).table === "main")).toHaveLength(2);
  });

  test("addGuest puts the guest's veth peer into the host, ready to enslave", async () => {
    const guest = await fleet.addGuest(h1, "vnet7");
    expect(guest.netns).toMatch(new RegExp(`^kvs-${fleet.runId}-g\\d+$`));
    expect(guest.ifname).toBe("eth0");
    const peer = JSON.parse((await h1.exec("ip -j -d link show dev vnet7")).stdout) as { linkinfo: { info_kind: string }; master?: string }[];
    expect(peer[0].linkinfo.info_kind).toBe("veth");
    expect(peer[0].master).toBeUndefined();
    // Real L2 through a bridge in the host, as a VM's tap would be used.
    await h1.exec("ip link add kvsbr9 type bridge && ip addr add 10.199.0.1/24 dev kvsbr9 && ip link set kvsbr9 up && ip link set vnet7 master kvsbr9");
    try {
      await guest.exec("ip addr add 10.199.0.2/24 dev eth0");
      await guest.exec("ping -c1 -W2 10.199.0.1");
    } finally {
      await h1.exec("ip link del kvsbr9");
    }
  });

  test("snapshotHost is stable, and equal again after an object is made and removed", async () => {
    const s0 = await snapshotHost(h2);
    expect(await snapshotHost(h2)).toEqual(s0);
    expect(s0).toMatchObject({ sysctls: { "net.ipv4.ip_forward": "0" }, files: [{ path: "/etc/kvmnet" }, { path: "/run/kvmnet" }] });

    await h2.exec(
      "ip link add kvsbr1 type bridge && ip link set kvsbr1 up && nft add table inet kvmnet_probe && " +
        "nft add chain inet kvmnet_probe c '{ type filter hook input priority 0; }' && nft add rule inet kvmnet_probe c counter && " +
        "echo 1 > /proc/sys/net/ipv4/ip_forward && echo s > /run/kvmnet/state",
    );
    await h2.exec(`ping -c2 -i0.2 ${fleet.upstream.address}`); // counters move
    const during = await snapshotHost(h2);
    expect(during).not.toEqual(s0);
    expect(await snapshotHost(h2)).toEqual(during);

    await h2.exec("ip link del kvsbr1 && nft delete table inet kvmnet_probe && echo 0 > /proc/sys/net/ipv4/ip_forward && rm /run/kvmnet/state");
    expect(await snapshotHost(h2)).toEqual(s0);
  });
});

describe("leaving nothing behind", () => {
  test("stop() removes processes, namespaces, root links, slots and files; twice is fine", async () => {
    const fleet = await startFleet(2);
    const guest = await fleet.addGuest(fleet.hosts[0], "tap0");
    // A stray daemon in a host and one in a guest: stop() must find them by namespace.
    const stray = Number((await fleet.hosts[1].exec("setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")).stdout.trim());
    const strayGuest = Number((await guest.exec("setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")).stdout.trim());
    const sshdPids = fleet.hosts.map((h) => h.sshdPid);
    expect(leftovers(fleet.runId).netns).toHaveLength(4);

    await fleet.stop();
    expect(leftovers(fleet.runId)).toEqual(NOTHING);
    expect(await eventually(() => [...sshdPids, stray, strayGuest].every(pidGone))).toBe(true);
    await expect(fleet.stop()).resolves.toBeUndefined();
  });

  test("a failed start cleans up and reports sshd's log", async () => {
    let error: StartFleetError | undefined;
    try {
      const fleet = await startFleet(1, { sshdExtraConfig: "NoSuchKeyword yes" });
      await fleet.stop();
    } catch (err) {
      error = err as StartFleetError;
    }
    expect(error).toBeDefined();
    expect(error!.message).toMatch(/Bad configuration option: NoSuchKeyword/);
    expect(error!.runId).toMatch(/^[0-9a-f]{6}$/);
    expect(leftovers(error!.runId!)).toEqual(NOTHING);
  });

  test("a process that exits without stop() leaves nothing (exit handler)", () => {
    const child = spawnSync(
      process.execPath,
      ["--require", "tsx/cjs", "-e", "require('./testbed/fleet.ts').startFleet(1).then((f) => { console.log(f.runId); process.exit(0); })"],
      { cwd: REPO, encoding: "utf8", timeout: 60_000 },
    );
    const runId = child.stdout.trim();
    expect(runId).toMatch(/^[0-9a-f]{6}$/);
    expect(leftovers(runId)).toEqual(NOTHING);
  });

  /** Start `npm run sandbox -- up 1 --json` (the CLI) and wait for its JSON. */
  async function startCliFleet(): Promise<{ ownerPid: number; runId: string; exited: Promise<void> }> {
    const child = spawn(path.join(REPO, "node_modules/.bin/tsx"), ["testbed/sandboxCli.ts", "up", "1", "--json"], {
      cwd: REPO,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    let out = "";
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CLI printed no fleet in 30 s:\n${out}\n${err}`)), 30_000);
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        try {
          const desc = JSON.parse(out) as { ownerPid: number; runId: string };
          clearTimeout(timer);
          resolve({ ...desc, exited });
        } catch {
          /* not complete yet */
        }
      });
      child.once("exit", (code) => reject(new Error(`CLI exited (${code}) before printing a fleet:\n${out}\n${err}`)));
    });
  }

  test("SIGTERM to the owner process tears the fleet down", async () => {
    const { ownerPid, runId, exited } = await startCliFleet();
    expect(leftovers(runId).netns).toHaveLength(2);
    process.kill(ownerPid, "SIGTERM");
    await exited;
    expect(leftovers(runId)).toEqual(NOTHING);
  });

  test("after SIGKILL of the owner, cleanupStale() removes the fleet", async () => {
    const { ownerPid, runId, exited } = await startCliFleet();
    const record = JSON.parse(fs.readFileSync(`${sandboxPaths.fleetsDir}/${runId}.json`, "utf8")) as { pids: { pid: number }[] };
    process.kill(ownerPid, "SIGKILL");
    await exited;
    expect(leftovers(runId).netns).toHaveLength(2); // nothing could run on SIGKILL
    const removed = await cleanupStale();
    expect(removed.some((line) => line.includes(`fleet ${runId}`))).toBe(true);
    expect(leftovers(runId)).toEqual(NOTHING);
    expect(await eventually(() => record.pids.every((p) => pidGone(p.pid)))).toBe(true);
  });
});
