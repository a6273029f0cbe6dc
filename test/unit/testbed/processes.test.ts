/**
 * testbed/processes.ts: pid references that survive pid reuse, stopping by pid, records
 * and their reaper, the owner's exit handlers. The processes here are this test's own
 * children (`sleep`, a node that registers a cleanup); nothing else is signalled.
 */
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { claimAbandoned, isAlive, OwnedRecord, pidRef, RecordDir, stopProcesses, withReapLock } from "../../../testbed/processes";

const REPO = path.resolve(__dirname, "../../..");
const children: ChildProcess[] = [];
let tmp = "";

/** A child that sleeps; with ignoreTerm it ignores SIGTERM (inherited across exec), so only SIGKILL stops it. */
function sleeper(ignoreTerm = false): number {
  const child = spawn("sh", ["-c", `${ignoreTerm ? "trap '' TERM; " : ""}exec sleep 30`], { stdio: "ignore" });
  children.push(child);
  return child.pid!;
}

/** Wait (bounded) until sh has exec'd sleep, so a trap set before the exec is in force. */
function waitForExec(pid: number): void {
  const until = Date.now() + 5000;
  while (Date.now() < until && fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() !== "sleep") spawnSync("sleep", ["0.02"]);
}

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-processes-"));
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("pid references", () => {
  test("a running child is alive under its own PidRef, not under one with another start time (a reused pid)", () => {
    const pid = sleeper();
    const ref = pidRef(pid);
    expect(ref.start).toMatch(/^\d+$/);
    expect(isAlive(ref)).toBe(true);
    expect(isAlive({ pid, start: String(Number(ref.start) + 1) })).toBe(false);
  });

  test("a pid that does not exist is not alive", () => {
    expect(isAlive(2 ** 22 + 1)).toBe(false);
  });
});

describe("stopProcesses", () => {
  test("SIGTERM first: a process that honours it is gone well before the grace ends", () => {
    const pid = sleeper();
    const t0 = Date.now();
    stopProcesses([pidRef(pid)], { graceMs: 3000 });
    expect(isAlive(pid)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  test("SIGKILL after the grace to a process that ignores SIGTERM", () => {
    const pid = sleeper(true);
    waitForExec(pid);
    const t0 = Date.now();
    stopProcesses([pidRef(pid)], { graceMs: 300 });
    expect(isAlive(pid)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  test("a recorded pid whose start time differs is another process: it is never signalled", () => {
    const pid = sleeper();
    const stale = { pid, start: String(Number(pidRef(pid).start) + 1) };
    stopProcesses([stale], { graceMs: 0 });
    expect(isAlive(pidRef(pid))).toBe(true);
  });

  test("strays get SIGKILL at once, without waiting for the grace", () => {
    const pid = sleeper(true);
    waitForExec(pid);
    const t0 = Date.now();
    stopProcesses([], { graceMs: 10_000, strays: () => [pid] });
    expect(isAlive(pid)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

interface TestRecord extends OwnedRecord {
  name: string;
  things: string[];
}

describe("RecordDir", () => {
  const dirOf = () => new RecordDir<TestRecord>(`${tmp}/records`, { idOf: (r) => r.name, valid: (r) => /^[0-9a-f]{4}$/.test(r.name), idBytes: 2, what: "test" });

  test("reserve creates the record file exclusively under a fresh id; save, list and remove", () => {
    const records = dirOf();
    const a = records.reserve((id) => ({ name: id, owner: pidRef(process.pid), things: [] }));
    const b = records.reserve((id) => ({ name: id, owner: pidRef(process.pid), things: [] }));
    expect(a.name).not.toBe(b.name);
    expect(fs.existsSync(records.file(a.name))).toBe(true);
    a.things.push("netns x");
    records.save(a);
    fs.writeFileSync(`${tmp}/records/junk.json`, "{ not json");
    fs.writeFileSync(`${tmp}/records/other.json`, JSON.stringify({ name: "not-ours", owner: pidRef(process.pid), things: [] }));
    expect(records.list().sort((x, y) => x.name.localeCompare(y.name))).toEqual([a, b].sort((x, y) => x.name.localeCompare(y.name)));
    records.remove(a.name);
    expect(records.list()).toEqual([b]);
  });

  test("make() may skip an id; after 50 skips reserve gives up", () => {
    const records = dirOf();
    let asked = 0;
    expect(() => records.reserve(() => (asked++, undefined))).toThrow(/test: could not reserve a free id/);
    expect(asked).toBe(50);
  });
});

describe("claimed directories and the reap lock", () => {
  test("a claim is abandoned when its owner is dead, or when it has no owner after the grace", () => {
    const dir = `${tmp}/claim`;
    fs.mkdirSync(dir);
    const pid = sleeper();
    const dead = pidRef(pid);
    stopProcesses([dead], { graceMs: 1000 });
    expect(claimAbandoned(dir, dead, 60_000)).toBe(true);
    expect(claimAbandoned(dir, pidRef(process.pid), 0)).toBe(false);
    expect(claimAbandoned(dir, undefined, 60_000)).toBe(false);
    const old = (Date.now() - 120_000) / 1000;
    fs.utimesSync(dir, old, old);
    expect(claimAbandoned(dir, undefined, 60_000)).toBe(true);
    expect(claimAbandoned(`${tmp}/gone`, undefined, 0)).toBe(false);
  });

  test("withReapLock breaks a lock whose owner is dead, runs fn, and releases the lock", () => {
    const lock = `${tmp}/state/reap.lock`;
    fs.mkdirSync(lock, { recursive: true });
    const dead = pidRef(sleeper());
    stopProcesses([dead], { graceMs: 1000 });
    fs.writeFileSync(`${lock}/owner.json`, JSON.stringify(dead));
    let heldByUs: unknown;
    expect(withReapLock(lock, () => ((heldByUs = JSON.parse(fs.readFileSync(`${lock}/owner.json`, "utf8"))), 42))).toBe(42);
    expect(heldByUs).toEqual(pidRef(process.pid));
    expect(fs.existsSync(lock)).toBe(false);
  });
});

describe("onOwnerExit", () => {
  /** A node process that registers a cleanup writing `marker` (its release is `release`), then runs `then`. */
  function owner(marker: string, then: string) {
    const code = `const p = require("./testbed/processes.ts"); const release = p.onOwnerExit(() => require("fs").writeFileSync(${JSON.stringify(marker)}, "cleaned")); ${then}`;
    return spawnSync(process.execPath, ["--require", "tsx/cjs", "-e", code], { cwd: REPO, encoding: "utf8", timeout: 30_000 });
  }

  test("the cleanup runs when the owner exits", () => {
    const marker = `${tmp}/exit`;
    const r = owner(marker, "process.exit(3);");
    expect(r.status).toBe(3);
    expect(fs.readFileSync(marker, "utf8")).toBe("cleaned");
  });

  test("the cleanup runs on SIGTERM, and the owner then dies by the signal", () => {
    const marker = `${tmp}/term`;
    const r = owner(marker, "setInterval(() => undefined, 1000); process.kill(process.pid, 'SIGTERM');");
    expect(r.signal).toBe("SIGTERM");
    expect(fs.readFileSync(marker, "utf8")).toBe("cleaned");
  });

  test("a released cleanup does not run", () => {
    const marker = `${tmp}/released`;
    const r = owner(marker, "release(); process.exit(0);");
    expect(r.status).toBe(0);
    expect(fs.existsSync(marker)).toBe(false);
  });
});
