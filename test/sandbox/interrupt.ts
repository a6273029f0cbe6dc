/**
 * An interrupted create, done for real (#14 item 7): the provider process dies
 * while the host runs the create's apply script, and the script runs to its
 * end after the client is gone. The engine then has no record of the object
 * and, on the next `up`, calls create again with the same inputs.
 *
 * How: the test holds the host-wide lock (the apply script's `flock` on
 * LOCK_FILE) with a process of its own, starts the create in a child process
 * (createChild.ts), waits until that create's apply script on the host is
 * blocked on the lock, kills the child (SIGKILL, by pid: the SSH connection
 * drops with it), releases the lock, and waits until the orphaned script on
 * the host has finished. Only processes this module started are killed, by pid.
 */
import { ChildProcess, spawn } from "child_process";
import * as path from "path";
import { LOCK_FILE } from "../../provider/observe";
import type { KindName } from "../../provider";
import type { SandboxHost } from "../../testbed/fleet";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const HOLDER_PID_FILE = "/run/kvmnet-test-lock-holder.pid";

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Pids of apply scripts' `flock -w … 9` waiting in this host's network namespace. */
export async function waitingApplies(h: SandboxHost): Promise<number[]> {
  const r = await h.exec(
    `me=$(readlink /proc/self/ns/net); for p in $(pgrep -f '^flock -w [0-9]+ 9$'); do [ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] && echo $p; done; true`,
  );
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

/** Hold the host lock with a process of our own; returns its pid (kill it to release). */
export async function holdHostLock(h: SandboxHost): Promise<number> {
  await h.exec(`mkdir -p /run/lock && rm -f ${HOLDER_PID_FILE} && setsid flock ${LOCK_FILE} sh -c 'echo $$ > ${HOLDER_PID_FILE}; exec sleep 120' </dev/null >/dev/null 2>&1 &`);
  return waitFor("the lock holder", async () => {
    const r = await h.exec(`cat ${HOLDER_PID_FILE} 2>/dev/null || true`);
    return r.stdout.trim() ? Number(r.stdout.trim()) : undefined;
  });
}

/** Release the lock {@link holdHostLock} took (kills its holder, by pid). */
export async function releaseHostLock(h: SandboxHost, holder: number): Promise<void> {
  await h.exec(`[ -e /proc/${holder} ] && kill ${holder}; rm -f ${HOLDER_PID_FILE}; true`);
}

/** The shell running the apply script that waits (flock pid `flockPid`) for the lock. */
async function scriptOf(h: SandboxHost, flockPid: number): Promise<number> {
  return Number((await h.exec(`awk '/^PPid:/ { print $2 }' /proc/${flockPid}/status`)).stdout.trim());
}

async function waitUntilGone(h: SandboxHost, pid: number): Promise<void> {
  await waitFor("the orphaned apply script to finish", async () => ((await h.exec(`[ -e /proc/${pid} ] && echo running || true`)).stdout.trim() ? undefined : true));
}

/**
 * Run `create` (in this process) and cut its SSH connection while its apply
 * script waits for the host lock: the sandbox sshd's per-connection processes
 * (children of the sshd this test's fleet started) are killed by pid. Returns
 * what `create` threw (or resolved to) once the orphaned script has finished.
 */
export async function createAndCutConnectionMidApply(h: SandboxHost, create: () => Promise<unknown>): Promise<unknown> {
  const holder = await holdHostLock(h);
  try {
    const outcome = create().then(
      (v) => ({ resolved: v }),
      (e: unknown) => ({ rejected: e }),
    );
    const flockPid = await waitFor("the create's apply script to wait for the host lock", async () => (await waitingApplies(h))[0]);
    const scriptPid = await scriptOf(h, flockPid);
    await h.exec(`for p in $(pgrep -P ${h.sshdPid}); do kill -9 $p; done; true`);
    const result = await outcome;
    await releaseHostLock(h, holder);
    await waitUntilGone(h, scriptPid);
    return "rejected" in result ? result.rejected : result.resolved;
  } finally {
    await releaseHostLock(h, holder);
  }
}

/**
 * Start `create(inputs)` of `kind` in a child process and kill it once its
 * apply script is under way on `h`; returns when that script has finished on
 * the host. The caller's next create with the same inputs is the engine's retry.
 */
export async function createAndKillMidApply(h: SandboxHost, kind: KindName, inputs: Record<string, unknown>): Promise<void> {
  // 1. Hold the host lock: the child's apply script will block right after it starts.
  const holder = await holdHostLock(h);
  let child: ChildProcess | undefined;
  try {
    // 2. The create, in a process of its own (tsx loaded into node itself: the pid is the one holding the connection).
    const root = path.resolve(__dirname, "../..");
    child = spawn(process.execPath, ["--import", "tsx", path.join(__dirname, "createChild.ts")], {
      cwd: root,
      env: { ...process.env, KVMNET_CHILD_CREATE: JSON.stringify({ kind, inputs }) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout?.on("data", (d) => (output += String(d)));
    child.stderr?.on("data", (d) => (output += String(d)));
    const exited = new Promise<number | null>((r) => child?.on("exit", (code) => r(code)));
    // 3. Its apply script is on the host, waiting for the lock.
    const flockPid = await waitFor("the create's apply script to wait for the host lock", async () => {
      if (child?.exitCode !== null) throw new Error(`the create ended before its apply started: ${output}`);
      return (await waitingApplies(h))[0];
    });
    const scriptPid = await scriptOf(h, flockPid);
    // 4. The provider dies mid-apply.
    process.kill(child.pid as number, "SIGKILL");
    await exited;
    // 5. The lock comes free; the orphaned script carries on without its client.
    await releaseHostLock(h, holder);
    await waitUntilGone(h, scriptPid);
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) process.kill(child.pid as number, "SIGKILL");
    await releaseHostLock(h, holder);
  }
}
