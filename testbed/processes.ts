/**
 * Processes and what they own, for the testbed's harnesses (testbed/fleet.ts: sandbox
 * hosts; testbed/labHost.ts: QEMU guests). Both start long-lived children on this
 * machine (sshd, qemu) and make things that outlive a crashed test (namespaces, run
 * dirs); this module is the one place that spawns, records, signals and reaps them. The
 * rules it keeps (docs/TESTING.md, "Safety rules"):
 *
 * - A process is named by a {@link PidRef}: its pid and its start time (field 22 of
 *   /proc/<pid>/stat). A recorded pid that the kernel has since given to another process
 *   is not "alive" to us, so it is never signalled: pids are reused, start times are not.
 * - Signals go to pids only, never to a name (no pkill, no killall): a name also matches
 *   what other people run on this machine, tests of another checkout included.
 * - What a harness makes is recorded in a JSON file under /run BEFORE it is made, and the
 *   record names its owner (the test process) by PidRef. When the owner exits or is
 *   signalled, {@link onOwnerExit}'s handlers tear it down; when it was SIGKILLed (no
 *   handler runs), the next harness start reaps every record whose owner is dead
 *   ({@link withReapLock}, {@link RecordDir.list}). Records of other live processes are
 *   never touched.
 * - The on-disk formats are the harnesses' own (fleet records, lab records, slot and
 *   build owners): processes of older checkouts share /run with this one and read them.
 */
import { spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as vm from "vm";

// ---------------------------------------------------------------------------------
// Pids that survive pid reuse

/** A process as recorded: its pid and its start time, which tells a reused pid from it. */
export interface PidRef {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot); "" when it could not be read. */
  start: string;
}

function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // comm may contain spaces and parens; the fields after the LAST ')' are fixed.
    const rest = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
    return { state: rest[0] ?? "", start: rest[19] ?? "" };
  } catch {
    return undefined;
  }
}

/** The PidRef of a running process (start "" when it is already gone). */
export function pidRef(pid: number): PidRef {
  return { pid, start: procStat(pid)?.start ?? "" };
}

/** Alive = exists, not a zombie, and (for a PidRef with a start time) the same process as recorded. */
export function isAlive(ref: PidRef | number): boolean {
  const pid = typeof ref === "number" ? ref : ref.pid;
  const st = procStat(pid);
  if (!st || st.state === "Z" || st.state === "X") return false;
  return typeof ref === "number" || ref.start === "" || st.start === ref.start;
}

/** Send `sig` to `pid`; a process that is already gone is not an error. */
export function killPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Stop processes by pid: SIGTERM to each recorded process that is still the one
 * recorded, SIGKILL to what is left after `graceMs`. `strays()` lists further pids that
 * must go (what runs in a fleet's namespaces): they get SIGKILL at once unless they are
 * among the recorded ones. Synchronous, because exit handlers run it; returns when all are
 * gone, or `graceMs` + 5 s after it started (a process stuck in the kernel is left to the
 * caller's next step, such as deleting its namespace).
 */
export function stopProcesses(recorded: PidRef[], opts: { graceMs: number; strays?: () => number[] }): void {
  for (const p of recorded) if (isAlive(p)) killPid(p.pid, "SIGTERM");
  const killAt = Date.now() + opts.graceMs;
  const giveUpAt = killAt + 5000;
  for (;;) {
    const alive = recorded.filter((p) => isAlive(p));
    const strays = (opts.strays?.() ?? []).filter((p) => isAlive(p));
    if (alive.length === 0 && strays.length === 0) return;
    if (Date.now() > giveUpAt) return;
    const late = Date.now() > killAt;
    for (const p of strays) if (late || !recorded.some((r) => r.pid === p)) killPid(p, "SIGKILL");
    if (late) for (const p of alive) killPid(p.pid, "SIGKILL");
    sleepSync(10);
  }
}

/** Pids (other than this process) whose network namespace is one of the named ones in /run/netns (what `ip netns pids` does). */
export function pidsInNetns(netnsNames: string[]): number[] {
  const inodes = new Set<string>();
  for (const ns of netnsNames) {
    try {
      inodes.add(`net:[${fs.statSync(`/run/netns/${ns}`).ino}]`);
    } catch {
      /* gone */
    }
  }
  if (inodes.size === 0) return [];
  const out: number[] = [];
  for (const ent of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    if (pid === process.pid) continue;
    try {
      if (inodes.has(fs.readlinkSync(`/proc/${ent}/ns/net`))) out.push(pid);
    } catch {
      /* exited, or a kernel thread */
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Running programs

/** What a finished program printed, and its exit code (128 + n when signal n ended it). */
export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** How {@link run} runs a program. */
export interface RunOptions {
  /** Resolve on a non-zero exit instead of rejecting. */
  allowFail?: boolean;
  /** Default 60 s; the program is killed (SIGKILL) when it runs longer. */
  timeoutMs?: number;
  /** Text sent on the program's standard input (default: none, stdin is closed at once). */
  input?: string;
  /** Names the step in errors (default: the program). */
  what?: string;
}

const PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_RUN_TIMEOUT_MS = 60_000;

/** The environment of every child: the sbin dirs on PATH (ip, sshd, nsenter live there) and the C locale (parsed output). */
export function childEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${PATH_ENV}:${process.env.PATH ?? ""}`, LC_ALL: "C" };
}

/** The full path of `cmd` on the children's PATH, or undefined. */
export function which(cmd: string): string | undefined {
  for (const dir of `${PATH_ENV}:${process.env.PATH ?? ""}`.split(":")) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Run a program (no shell) in `/` and collect its output. Rejects on a non-zero exit unless `allowFail`, and on a timeout. */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<ExecResult> {
  const what = opts.what ?? file;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: childEnv(), cwd: "/", stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`${what}: cannot run ${file}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result = { stdout, stderr, code: code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0) };
      if (timedOut) {
        reject(new Error(`${what}: timed out after ${timeoutMs} ms: ${file} ${args.join(" ")}\n${stderr.trim()}`));
      } else if (result.code !== 0 && !opts.allowFail) {
        reject(new Error(`${what}: exit ${result.code}: ${file} ${args.join(" ")}\n${stderr.trim()}`));
      } else {
        resolve(result);
      }
    });
    child.stdin.on("error", () => undefined); // EPIPE when the program ignores stdin
    child.stdin.end(opts.input ?? "");
  });
}

/** Like {@link run}, synchronous and never rejecting (30 s limit): for teardown, which runs from exit handlers. */
export function runSync(file: string, args: string[], input?: string): ExecResult {
  const r = spawnSync(file, args, { encoding: "utf8", input, env: childEnv(), timeout: 30_000 });
  return { stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : ""), code: r.status ?? 1 };
}

/** A long-lived child started by {@link spawnTracked}. */
export interface TrackedChild {
  /** Its pid and start time, for the record (taken right after the fork: an exec keeps both). */
  ref: PidRef;
  /** Why it is gone ("exited (code 1)", "exited (SIGKILL)", "could not start: …"), or undefined while it runs. */
  exited(): string | undefined;
}

/**
 * Start a long-lived child whose output goes to `logFile` (appended), and which does not
 * keep this process alive. The caller records `ref` at once (before it waits for
 * anything), so a teardown or the reaper can stop it by pid. `detached`: its own process
 * group, so a Ctrl-C to the test's group does not reach it behind the harness's back.
 */
export function spawnTracked(argv: string[], opts: { logFile: string; cwd: string; detached: boolean }): TrackedChild {
  const logFd = fs.openSync(opts.logFile, "a", 0o600);
  let child;
  try {
    child = spawn(argv[0], argv.slice(1), { env: childEnv(), cwd: opts.cwd, stdio: ["ignore", logFd, logFd], detached: opts.detached });
  } finally {
    fs.closeSync(logFd);
  }
  let exited: string | undefined;
  child.on("error", (err) => (exited = `could not start: ${err.message}`));
  child.on("exit", (code, signal) => (exited = `exited (${signal ?? `code ${code}`})`));
  child.unref();
  if (!child.pid) throw new Error(`could not start ${argv[0]}`);
  return { ref: pidRef(child.pid), exited: () => exited };
}

// ---------------------------------------------------------------------------------
// Sleeping

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Block this thread for `ms` (teardown is synchronous: exit handlers cannot await). */
export function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/** Wait `ms` without blocking the event loop. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------
// Records: what an owner made, written before it is made

/** Write `value` as JSON so that a reader sees the old file or the new one, never half of one. */
export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(3).toString("hex")}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + "\n");
  fs.renameSync(tmp, file);
}

/** The JSON in `file`, or undefined when it is missing or unreadable. */
export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** A record names the process that owns what it lists. */
export interface OwnedRecord {
  owner: PidRef;
}

/**
 * A directory of records, one `<id>.json` per thing an owner made (a fleet, a lab boot).
 * `idOf` reads the id out of a record; `valid` refuses files that are not records of ours.
 */
export class RecordDir<R extends OwnedRecord> {
  constructor(
    readonly dir: string,
    private readonly o: { idOf: (r: R) => string; valid: (r: R) => boolean; idBytes: number; what: string },
  ) {}

  /** The record file of `id` (it may not exist). */
  file(id: string): string {
    return `${this.dir}/${id}.json`;
  }

  /**
   * A new record under a fresh random id, created exclusively (two processes never get
   * the same id). `make(id)` builds it, or returns undefined to skip an id (its run dir
   * exists already).
   */
  reserve(make: (id: string) => R | undefined): R {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    for (let attempt = 0; attempt < 50; attempt++) {
      const id = crypto.randomBytes(this.o.idBytes).toString("hex");
      const rec = make(id);
      if (!rec) continue;
      try {
        fs.writeFileSync(this.file(id), JSON.stringify(rec, null, 2) + "\n", { flag: "wx" });
        return rec;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
    throw new Error(`${this.o.what}: could not reserve a free id`);
  }

  /** Write `rec` over its file, atomically: call it BEFORE making what the change records. */
  save(rec: R): void {
    writeJsonAtomic(this.file(this.o.idOf(rec)), rec);
  }

  /** Forget `id`: the last step of a teardown, once everything it listed is gone. */
  remove(id: string): void {
    fs.rmSync(this.file(id), { force: true });
  }

  /** Every record, live or stale. */
  list(): R[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    return names
      .filter((f) => f.endsWith(".json"))
      .map((f) => readJson<R>(`${this.dir}/${f}`))
      .filter((r): r is R => r !== undefined && r !== null && typeof r === "object" && this.o.valid(r));
  }
}

/**
 * May a claimed directory (a lock, a slot, a half-built snapshot: made by mkdir, its
 * owner.json naming the claimer) be taken over? Yes when its owner is dead, or when it has
 * no owner and is older than `unownedMs` (the claimer died between mkdir and writing
 * owner.json). No when the directory is gone meanwhile.
 */
export function claimAbandoned(dir: string, owner: PidRef | undefined, unownedMs: number): boolean {
  if (owner) return !isAlive(owner);
  try {
    return Date.now() - fs.statSync(dir).mtimeMs > unownedMs;
  } catch {
    return false;
  }
}

/**
 * Run `fn` holding the reap lock `lockDir` (a directory: mkdir is atomic), so that two
 * reapers never tear down the same record at once; a lock whose owner died is broken.
 * Only reapers take it, never a harness making things, so a start never waits for another.
 */
export function withReapLock<T>(lockDir: string, fn: () => T): T {
  fs.mkdirSync(path.dirname(lockDir), { recursive: true, mode: 0o755 });
  const giveUpAt = Date.now() + 15_000;
  for (;;) {
    try {
      fs.mkdirSync(lockDir, { mode: 0o755 });
      writeJsonAtomic(`${lockDir}/owner.json`, pidRef(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const owner = readJson<PidRef>(`${lockDir}/owner.json`);
      if (claimAbandoned(lockDir, owner, 5000)) {
        fs.rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > giveUpAt) throw new Error(`${lockDir} held by pid ${owner?.pid ?? "?"}`, { cause: err });
      sleepSync(20);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------
// Exit and signal handlers of the owner

/**
 * The real process object. Under jest, the global `process` is a per-test-file copy
 * whose `on("exit")` / signal listeners never fire; code compiled by vm in "this"
 * context sees the real one (outside jest it is the same object).
 */
const realProcess = vm.runInThisContext("process") as NodeJS.Process;
const cleanups = new Set<() => void>();
let handlersInstalled = false;

/**
 * Run `cleanup` (synchronous: nothing awaits at exit) when this process exits or gets
 * SIGINT, SIGTERM or SIGHUP, unless it was released before. Returns the release. The
 * handlers are installed while any cleanup is registered; after a signal, when nobody
 * else handles it, the process dies by it as it would have without them.
 */
export function onOwnerExit(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  installHandlers();
  return () => {
    cleanups.delete(cleanup);
    if (cleanups.size === 0) uninstallHandlers();
  };
}

function runCleanups(): void {
  for (const c of [...cleanups]) {
    cleanups.delete(c);
    try {
      c();
    } catch {
      /* best effort: the reaper finishes the job later */
    }
  }
  uninstallHandlers();
}

function onSignal(sig: NodeJS.Signals): void {
  runCleanups();
  if (realProcess.listenerCount(sig) === 0) realProcess.kill(realProcess.pid, sig);
}
const onSigint = () => onSignal("SIGINT");
const onSigterm = () => onSignal("SIGTERM");
const onSighup = () => onSignal("SIGHUP");

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  realProcess.on("exit", runCleanups);
  realProcess.on("SIGINT", onSigint);
  realProcess.on("SIGTERM", onSigterm);
  realProcess.on("SIGHUP", onSighup);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  realProcess.removeListener("exit", runCleanups);
  realProcess.removeListener("SIGINT", onSigint);
  realProcess.removeListener("SIGTERM", onSigterm);
  realProcess.removeListener("SIGHUP", onSighup);
}
