/**
 * A connection lost in the middle of the SSH handshake (after the server's
 * version line, before authentication finished) must fail the call. ssh2 emits
 * no "error" then — only "end" and "close" — and clears its own ready timeout,
 * so a dial that waited for "ready" or "error" waited forever: in the engine's
 * provider process (kept alive by its gRPC server) the resource hung for good.
 * Found by the fault campaign (`npm run campaign`: "cut PortForward create
 * @46ms: the provider call neither resolved nor rejected").
 *
 * The sandbox host's sshd runs a slow AuthorizedKeysCommand, so the handshake
 * (and no keys file: sshd reads the file first) is held in the authentication phase while the test kills that session's sshd
 * processes (by pid: the descendants of this host's sshd).
 */
import * as fs from "fs";
import { isKvmnetError } from "../../provider/errors";
import { closeAllConnections, hostFor } from "../../provider/host";
import { assertSandboxSupported, Fleet, SandboxHost, startFleet } from "../../testbed/fleet";

let fleet: Fleet;
let h: SandboxHost;

beforeAll(async () => {
  await assertSandboxSupported();
  fleet = await startFleet(1, {
    sshdExtraConfig: ["AuthorizedKeysFile none", "AuthorizedKeysCommand /usr/bin/sleep 30", "AuthorizedKeysCommandUser nobody"].join("\n"),
  });
  h = fleet.hosts[0];
});

afterAll(async () => {
  closeAllConnections();
  await fleet?.stop();
});

/** Pids below `root` (children, grandchildren, ...), from /proc. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) {
      if (pp !== p || out.includes(c)) continue;
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it("a connection cut during authentication fails the call with Unreachable instead of never settling", async () => {
  const call = hostFor({ host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint, readyTimeoutMs: 120_000 }).run("echo reached");
  const outcome = call.then(
    () => "resolved",
    (e: unknown) => e,
  );
  // Wait until the session is in authentication: sshd has run the keys command.
  let session: number[] = [];
  for (let i = 0; i < 200 && !session.some((p) => /sleep/.test(fs.readFileSync(`/proc/${p}/comm`, "utf8"))); i++) {
    await sleep(50);
    session = descendants(h.sshdPid).filter((p) => fs.existsSync(`/proc/${p}`));
  }
  expect(session.length).toBeGreaterThan(0);
  for (const p of session) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  // A hang detector, not a timing claim: the call gets 20 s (its ready timeout is 120 s).
  const settled = await Promise.race([outcome, sleep(20_000).then(() => "never settled")]);
  expect(settled).not.toBe("never settled");
  expect(settled).not.toBe("resolved");
  expect(isKvmnetError(settled)).toBe(true);
  const e = settled as Error & { kind?: string };
  expect(e.kind).toBe("Unreachable");
  expect(e.message).toMatch(/connection (was )?closed during the SSH handshake/);
}, 60_000);
