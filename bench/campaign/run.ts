/**
 * Fault campaign (#14 §3): hostile values in every string field of every kind
 * through check and create on a sandbox host, the provider process killed at
 * random points of create/update/delete, and its SSH session cut mid-apply;
 * then a table of what happened. Not part of `npm test` (it prints figures and
 * asserts nothing; docs/TESTING.md, "Benchmarks are not tests"). Root only.
 *
 *   npm run campaign -- [--values N] [--kills N] [--cuts N] [--seed N] [--max-minutes M] [--kinds A,B] [--no-fuzz] [--no-faults]
 *
 * --values  hostile values per field (sampled from the pool with the seed; default: all)
 * --kills   SIGKILLs of the provider process per kind and operation (default 3)
 * --cuts    SSH session cuts per kind and operation (default 2)
 * --seed    PRNG seed: the same seed tries the same values at the same delays (default 1)
 * --max-minutes  no new trial starts after this long (default 20); the table says what ran
 * --kinds   only these kinds (Bridge,NatNetwork,PortForward,VlanSubinterface,PciPassthrough,Connection)
 *
 * Targets: 0 canaries, 0 leftovers, 100% convergence on retry.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { isDeepStrictEqual } from "util";
import { closeAllConnections } from "../../provider/host";
import { isKvmnetError } from "../../provider/errors";
import { Fleet, SandboxHost, snapshotHost, startFleet } from "../../testbed/fleet";
import { baseArgs, CampaignKind, faultSpec, FUZZ_FIELDS, LIVE_KINDS, PROVIDERS, SPARE_PORTS, uncoveredStringFields, withValue } from "./kinds";
import { describeDiff, findCanaries, linesWithMarker, lockFree, scrub, sshSessionPids, strayProcesses } from "./hostState";
import { CANARY_PREFIX, canaryTrial, prng, shuffled, valuePool } from "./values";
import type { WorkerDone, WorkerEvent, WorkerJob, WorkerStep } from "./worker";

// ---------------------------------------------------------------------------------
// Options

interface Options {
  values: number;
  kills: number;
  cuts: number;
  seed: number;
  maxMinutes: number;
  fuzz: boolean;
  faults: boolean;
  /** Kinds to run (default: all). */
  kinds?: string[];
}

function parseOptions(argv: string[]): Options {
  const o: Options = { values: Infinity, kills: 3, cuts: 2, seed: 1, maxMinutes: 20, fuzz: true, faults: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a} needs a number ≥ 0, got ${argv[i]}`);
      return v;
    };
    if (a === "--values") o.values = num();
    else if (a === "--kills") o.kills = num();
    else if (a === "--cuts") o.cuts = num();
    else if (a === "--seed") o.seed = num();
    else if (a === "--max-minutes") o.maxMinutes = num();
    else if (a === "--kinds") o.kinds = (argv[++i] ?? "").split(",").filter(Boolean);
    else if (a === "--no-fuzz") o.fuzz = false;
    else if (a === "--no-faults") o.faults = false;
    else
      throw new Error(`unknown option ${a}\nusage: npm run campaign -- [--values N] [--kills N] [--cuts N] [--seed N] [--max-minutes M] [--kinds A,B] [--no-fuzz] [--no-faults]`);
  }
  return o;
}

const log = (s: string) => process.stdout.write(`[campaign ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const short = (s: string, n = 140) => (s.length > n ? `${s.slice(0, n)}…` : s).replace(/\n/g, "\\n");

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what} took over ${ms / 1000}s`)), ms);
    }),
  ]);
}

function errText(e: unknown): { kind: string; message: string } {
  return isKvmnetError(e) ? { kind: e.kind, message: e.shortMessage } : { kind: "Error", message: String((e as Error)?.message ?? e) };
}

// ---------------------------------------------------------------------------------
// Campaign state

interface FuzzRow {
  kind: string;
  fields: number;
  tried: number;
  refused: number;
  refusedNamed: number;
  passed: number;
  /** Passed check, then refused by create before any connection (InvalidArgument). */
  refusedAtCreate: number;
  reachedHost: number;
  created: number;
  /** Passed check but not sent to create (check-only kind or field). */
  checkOnly: number;
  canaries: number;
  injected: number;
  leftovers: number;
}

interface FaultRow {
  kind: string;
  fault: "kill" | "cut";
  op: "create" | "update" | "delete";
  trials: number;
  midOp: number;
  /** Converged on the first retry. */
  converged: number;
  /** Failed the first retry, converged on the second. */
  convergedSecond: number;
  staleLocks: number;
  leftovers: number;
  /** SSH cuts after which the provider call neither resolved nor rejected. */
  unsettled: number;
  modes: Map<string, number>;
}

interface Finding {
  what: string;
  detail: string;
}

class Campaign {
  readonly run: string;
  readonly rnd: () => number;
  readonly fuzzRows: FuzzRow[] = [];
  readonly faultRows: FaultRow[] = [];
  readonly findings: Finding[] = [];
  /** Canary trial number → what carried it. */
  readonly trials = new Map<number, string>();
  readonly workers = new Set<number>();
  readonly jobDir: string;
  baseline: unknown;
  baselinePids = new Set<number>();
  trialNo = 0;
  readonly deadline: number;

  constructor(
    readonly opts: Options,
    readonly fleet: Fleet,
    readonly h: SandboxHost,
  ) {
    this.run = `${opts.seed}x${process.pid}`;
    this.rnd = prng(opts.seed);
    this.jobDir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-campaign-"));
    this.deadline = Date.now() + opts.maxMinutes * 60_000;
  }

  wanted(kind: string): boolean {
    return !this.opts.kinds || this.opts.kinds.includes(kind);
  }

  outOfTime(): boolean {
    return Date.now() > this.deadline;
  }

  note(what: string, detail: string): void {
    this.findings.push({ what, detail });
    log(`FINDING ${what}: ${detail}`);
  }

  async takeBaseline(): Promise<void> {
    this.baseline = await snapshotHost(this.h);
    this.baselinePids = new Set(strayProcesses(this.h, new Set()).map((p) => p.pid));
  }

  /** Wait (up to `ms`) for the lock to be free and stray processes to end; then compare with the baseline. */
  async leftovers(ms = 15_000): Promise<{ diff: string[]; strays: string[]; lockHeld: boolean }> {
    const until = Date.now() + ms;
    let lockHeld: boolean;
    let strays: string[];
    for (;;) {
      lockHeld = !(await lockFree(this.h));
      strays = strayProcesses(this.h, this.baselinePids).map((p) => `pid ${p.pid} ${short(p.args, 80)}`);
      if ((!lockHeld && strays.length === 0) || Date.now() > until) break;
      await sleep(500);
    }
    const diff = describeDiff(this.baseline, await snapshotHost(this.h));
    return { diff, strays, lockHeld };
  }

  /** Put the host back to the baseline after a leftover was recorded. */
  async clean(context: string): Promise<void> {
    const still = await scrub(this.h, this.baseline, this.baselinePids, snapshotHost);
    if (still.length > 0) {
      this.note("scrub incomplete", `${context}: ${still.join("; ")} (re-baselined)`);
      await this.takeBaseline();
    }
  }

  // -------------------------------------------------------------------------------
  // Phase 1: hostile values through check and create

  async fuzz(): Promise<void> {
    const pool = valuePool(this.run);
    const kinds = [...(Object.keys(PROVIDERS) as CampaignKind[]), "Connection" as const].filter((k) => this.wanted(k));
    for (const kind of kinds) {
      const carrier: CampaignKind = kind === "Connection" ? "Bridge" : kind;
      const p = PROVIDERS[carrier];
      const live = LIVE_KINDS.includes(carrier);
      const base = baseArgs(carrier, this.h);
      const row: FuzzRow = {
        kind: kind === "Connection" ? "connection (on Bridge)" : kind,
        fields: FUZZ_FIELDS[kind].length,
        tried: 0,
        refused: 0,
        refusedNamed: 0,
        passed: 0,
        refusedAtCreate: 0,
        reachedHost: 0,
        created: 0,
        checkOnly: 0,
        canaries: 0,
        injected: 0,
        leftovers: 0,
      };
      this.fuzzRows.push(row);
      // The base inputs themselves must pass, or every refusal below would mean nothing.
      const baseCheck = await p.check({}, base);
      if (baseCheck.failures?.length) throw new Error(`${carrier} base inputs fail check: ${JSON.stringify(baseCheck.failures)}`);
      for (const field of FUZZ_FIELDS[kind]) {
        if (this.outOfTime()) break;
        const values = shuffled(pool, this.rnd).slice(0, Math.min(pool.length, this.opts.values));
        let fieldCreated = 0;
        for (const v of values) {
          const trial = ++this.trialNo;
          const value = v.make(trial);
          const where = `${row.kind} ${field.path} = ${v.label}`;
          this.trials.set(trial, where);
          row.tried++;
          const args = withValue(base, field.path, value);
          for (const k of field.without ?? []) delete args[k];
          let checked;
          try {
            checked = await p.check({}, args);
          } catch (e) {
            this.note("check threw", `${where}: ${errText(e).message}`);
            row.refused++;
            continue;
          }
          if (checked.failures?.length) {
            row.refused++;
            const top = field.path.split(".")[0];
            const named = checked.failures.some((f) => f.property === top && f.reason.startsWith(`${field.path}:`));
            if (named) row.refusedNamed++;
            else this.note("refused without naming the field", `${where}: ${short(JSON.stringify(checked.failures))}`);
            continue;
          }
          row.passed++;
          if (!live || !field.create) {
            row.checkOnly++;
            continue;
          }
          await this.fuzzCreate(carrier, row, where, checked.inputs, v.canary ? `kvmnet-canary-${this.run}-${trial}` : undefined, value);
          fieldCreated++;
        }
        log(`fuzz ${row.kind}.${field.path}: ${values.length} values, ${fieldCreated} sent to create`);
      }
      const canaries = await findCanaries(this.h);
      for (const c of canaries) {
        const n = canaryTrial(c.name, this.run);
        if (n !== undefined && this.trials.get(n)?.startsWith(row.kind)) {
          row.canaries++;
          this.note("CANARY", `${c.where} ${c.name} ← ${this.trials.get(n)}`);
        }
      }
      log(`fuzz ${row.kind}: tried ${row.tried}, refused ${row.refused}, passed ${row.passed}, created ${row.created}, canaries ${row.canaries}, leftovers ${row.leftovers}`);
    }
  }

  private async fuzzCreate(kind: CampaignKind, row: FuzzRow, where: string, inputs: Record<string, unknown>, marker: string | undefined, value: string): Promise<void> {
    const p = PROVIDERS[kind];
    let created: { id: string; outs: Record<string, unknown> } | undefined;
    try {
      created = await withTimeout(p.create(inputs), 180_000, "create");
      row.reachedHost++;
      row.created++;
    } catch (e) {
      const err = errText(e);
      if (err.kind === "InvalidArgument") {
        row.refusedAtCreate++;
        log(`  create refused before connecting (InvalidArgument): ${where}: ${short(err.message, 160)}`);
      } else {
        row.reachedHost++;
        log(`  create refused on the host (${err.kind}): ${where}: ${short(err.message, 160)}`);
      }
    }
    if (created && marker) {
      // Where the value landed, and whether it made a line of its own in a file another program reads.
      const lines = await linesWithMarker(this.h, marker);
      const ownLines = value
        .split(/\r\n|\r|\n/)
        .slice(1)
        .map((l) => l.trim())
        .filter(Boolean);
      const injected = lines.filter(
        (l) => ownLines.includes(l.line.trim()) || (l.file.startsWith("/run/kvmnet/nat/") && /,(ignore|set:)/.test(l.line)) || /^\s*add table ip kvmnet_canary/.test(l.line),
      );
      if (injected.length > 0) {
        row.injected++;
        this.note("INJECTED LINE", `${where}: ${injected.map((l) => `${l.file}: ${short(l.line, 100)}`).join(" | ")}`);
      } else if (lines.length > 0) {
        log(
          `  value reached the host literally: ${where} → ${lines
            .map((l) => `${l.file}: ${short(l.line, 80)}`)
            .slice(0, 3)
            .join(" | ")}`,
        );
      }
    }
    if (created) {
      try {
        await withTimeout(p.delete(created.id, created.outs), 180_000, "delete");
      } catch (e) {
        this.note("fuzz delete failed", `${where}: ${errText(e).kind}: ${short(errText(e).message)}`);
      }
    }
    const left = await this.leftovers(5_000);
    const all = [...left.diff, ...left.strays, ...(left.lockHeld ? ["host lock still held"] : [])];
    if (all.length > 0) {
      row.leftovers++;
      this.note("LEFTOVER", `${where}: ${all.join("; ")}`);
      await this.clean(where);
    }
  }

  // -------------------------------------------------------------------------------
  // Phase 2: kills and SSH cuts

  /** Run a worker; `interrupt` is called with the worker's pid when step `target` starts. */
  async runWorker(
    kind: CampaignKind,
    steps: WorkerStep[],
    opts: { target?: number; interrupt?: (pid: number) => Promise<void>; timeoutMs?: number } = {},
  ): Promise<{ done: WorkerDone[]; interruptedMidOp: boolean; exit: string; stderr: string }> {
    const job: WorkerJob = { kind, steps };
    const file = path.join(this.jobDir, `job-${++this.trialNo}.json`);
    fs.writeFileSync(file, JSON.stringify(job));
    const child = spawn(process.execPath, ["--import", "tsx", path.join(__dirname, "worker.ts"), file], { stdio: ["ignore", "pipe", "pipe"], cwd: path.join(__dirname, "../..") });
    const pid = child.pid!;
    this.workers.add(pid);
    const done: WorkerDone[] = [];
    let stderr = "";
    let buf = "";
    let interruptedMidOp = false;
    let interrupting: Promise<void> | undefined;
    const timeoutMs = opts.timeoutMs ?? 240_000;
    const exit = new Promise<string>((resolve) => {
      const timer = setTimeout(() => {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // exited meanwhile
        }
      }, timeoutMs);
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        this.workers.delete(pid);
        resolve(signal ? `signal ${signal}` : `exit ${code}`);
      });
    });
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let ev: WorkerEvent;
        try {
          ev = JSON.parse(line) as WorkerEvent;
        } catch {
          continue;
        }
        if (ev.event === "done") done.push(ev);
        if (ev.event === "start" && ev.step === opts.target && opts.interrupt) {
          const interrupt = opts.interrupt;
          interrupting = interrupt(pid).then(() => {
            interruptedMidOp = !done.some((d) => d.step === opts.target);
          });
        }
      }
    });
    const how = await exit;
    if (interrupting) await interrupting;
    return { done, interruptedMidOp, exit: how, stderr };
  }

  /** How long each operation of each kind takes here, from one clean worker run. */
  readonly durations = new Map<string, number>();

  async calibrate(kind: CampaignKind): Promise<void> {
    const p = PROVIDERS[kind];
    const spec = faultSpec(kind, this.h);
    const createIn = (await p.check({}, spec.create)).inputs;
    const updateIn = (await p.check({}, spec.update)).inputs;
    const r = await this.runWorker(kind, [{ op: "create", inputs: createIn }, { op: "update", news: updateIn }, { op: "read" }, { op: "delete" }]);
    const failed = r.done.filter((d) => !d.ok);
    if (r.done.length !== 4 || failed.length > 0) {
      throw new Error(`calibration of ${kind} failed (${r.exit}): ${JSON.stringify(failed.map((d) => d.error))} ${short(r.stderr, 400)}`);
    }
    for (const [i, op] of ["create", "update", "read", "delete"].entries()) this.durations.set(`${kind} ${op}`, r.done[i].ms);
    const left = await this.leftovers();
    if (left.diff.length + left.strays.length > 0) this.note("LEFTOVER", `${kind} clean create/update/delete: ${[...left.diff, ...left.strays].join("; ")}`);
    log(`calibrated ${kind}: create ${r.done[0].ms} ms, update ${r.done[1].ms} ms, read ${r.done[2].ms} ms, delete ${r.done[3].ms} ms`);
  }

  async faults(): Promise<void> {
    const kinds = LIVE_KINDS.filter((k) => this.wanted(k));
    for (const kind of kinds) await this.calibrate(kind);
    for (const kind of kinds) {
      for (const op of ["create", "update", "delete"] as const) {
        for (const fault of ["kill", "cut"] as const) {
          const row: FaultRow = { kind, fault, op, trials: 0, midOp: 0, converged: 0, convergedSecond: 0, staleLocks: 0, leftovers: 0, unsettled: 0, modes: new Map() };
          this.faultRows.push(row);
          const n = fault === "kill" ? this.opts.kills : this.opts.cuts;
          for (let i = 0; i < n && !this.outOfTime(); i++) await this.faultTrial(kind, op, fault, row);
          log(`${fault} ${kind} ${op}: ${row.converged}/${row.trials} converged (${row.midOp} mid-operation), stale locks ${row.staleLocks}, leftovers ${row.leftovers}`);
        }
      }
    }
  }

  private async faultTrial(kind: CampaignKind, op: "create" | "update" | "delete", fault: "kill" | "cut", row: FaultRow): Promise<void> {
    const p = PROVIDERS[kind];
    const spec = faultSpec(kind, this.h);
    const createIn = (await p.check({}, spec.create)).inputs;
    const updateIn = (await p.check({}, spec.update)).inputs;
    const steps: WorkerStep[] =
      op === "create" ? [{ op: "create", inputs: createIn }] : [{ op: "create", inputs: createIn }, { op, ...(op === "update" ? { news: updateIn } : {}) } as WorkerStep];
    const target = steps.length - 1;
    const expected = this.durations.get(`${kind} ${op}`) ?? 1000;
    // Within the call as calibrated (a little short of its end: the "start" line reaches us late).
    const delay = Math.round(this.rnd() * expected * 0.9);
    const label = `${fault} ${kind} ${op} @${delay}ms`;
    let cutPids: number[] = [];
    const preSessions = new Set(sshSessionPids(this.h));
    const first = await this.runWorker(kind, steps, {
      target,
      interrupt: async (pid) => {
        await sleep(delay);
        if (fault === "kill") {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // the worker finished before the kill landed
          }
        } else {
          cutPids = sshSessionPids(this.h).filter((x) => !preSessions.has(x));
          for (const x of cutPids) {
            try {
              process.kill(x, "SIGKILL");
            } catch {
              // session ended by itself
            }
          }
        }
      },
    });
    row.trials++;
    const setup = first.done.find((d) => d.step === 0);
    if (op !== "create" && !setup?.ok) {
      row.modes.set(`setup create failed: ${setup?.error?.kind ?? first.exit}`, (row.modes.get(`setup create failed: ${setup?.error?.kind ?? first.exit}`) ?? 0) + 1);
      this.note("fault setup failed", `${label}: ${JSON.stringify(setup?.error)} ${short(first.stderr, 200)}`);
      await this.finishTrial(row, label, false, [`setup failed`]);
      return;
    }
    const targetDone = first.done.find((d) => d.step === target);
    if (first.interruptedMidOp) row.midOp++;
    // Under a cut the worker lives on and must answer; one that exits without answering lost the call.
    const interruptedWith = targetDone
      ? targetDone.ok
        ? "op finished"
        : `op failed ${targetDone.error?.kind}`
      : fault === "kill"
        ? "op killed"
        : `worker ended (${first.exit}) without an answer${first.stderr ? `: ${short(first.stderr, 200)}` : ""}`;
    if (fault === "cut" && !targetDone) row.unsettled++;
    if (fault === "cut" && !targetDone)
      this.note("NO ANSWER AFTER SSH CUT", `${label}: the provider call neither resolved nor rejected; the worker ${first.exit.replace("exit", "exited with")}`);
    // The state the engine holds now, and what the next `pulumi up` does with it.
    const stateId = op === "create" ? (targetDone?.ok ? targetDone.id : undefined) : setup?.id;
    const stateOuts = op === "create" ? targetDone?.outs : targetDone?.ok && op === "update" ? targetDone.outs : setup?.outs;
    const lockRightAfter = !(await lockFree(this.h));
    const scriptsRightAfter = strayProcesses(this.h, this.baselinePids).filter((x) => x.comm !== "dnsmasq").length;
    let retry: WorkerStep[];
    if (op === "create") retry = targetDone?.ok ? [{ op: "read" }, { op: "delete" }] : [{ op: "create", inputs: createIn }, { op: "read" }, { op: "delete" }];
    else if (op === "update") retry = targetDone?.ok ? [{ op: "read" }, { op: "delete" }] : [{ op: "update", news: updateIn }, { op: "read" }, { op: "delete" }];
    else retry = targetDone?.ok ? [] : [{ op: "delete" }];
    // The next `pulumi up` (and, when that fails, the one after it): the first
    // step starts from the state the engine holds; later steps follow the worker.
    let problems: string[] = [];
    let firstProblems: string[] = [];
    let attempts = 0;
    let state = { id: stateId, outs: stateOuts };
    while (retry.length > 0 && attempts < 2) {
      attempts++;
      const steps = withState(retry, state.id, state.outs);
      const r = await this.runWorker(kind, steps);
      problems = [];
      let failedAt = -1;
      for (const [i, s] of steps.entries()) {
        const d = r.done.find((x) => x.step === i);
        if (!d) problems.push(`retry ${s.op}: no answer (${r.exit}) ${short(r.stderr, 200)}`);
        else if (!d.ok) problems.push(`retry ${s.op}: ${d.error?.kind}: ${d.error?.message}`);
        else if (s.op === "read" && !d.id) problems.push("retry read: the object is gone");
        else if (s.op === "read" && op === "update" && !isDeepStrictEqual(pick(d.outs, spec.updatedKeys), pick(updateIn, spec.updatedKeys))) {
          problems.push(`retry read: not the updated object (${JSON.stringify(pick(d.outs, spec.updatedKeys))})`);
        } else {
          if (s.op !== "delete") state = { id: d.id, outs: d.outs };
          else state = { id: undefined, outs: undefined };
          continue;
        }
        failedAt = i;
        break;
      }
      if (problems.length === 0) break;
      if (attempts === 1) {
        firstProblems = problems;
        this.note("NOT CONVERGED (1st retry)", `${label}: ${problems.join(" / ")}`);
      }
      // A read that found the wrong object or none ends the story: the engine would plan from it.
      retry = failedAt >= 0 && retry[failedAt].op !== "read" ? retry.slice(failedAt) : [];
      if (retry.length === 0) break;
    }
    if (attempts === 2) {
      if (problems.length === 0) row.convergedSecond++;
      else this.note("NOT CONVERGED (2nd retry)", `${label}: ${problems.join(" / ")}`);
    }
    if (problems.length > 0 && state.id) {
      // Still in the engine's state: `pulumi destroy` deletes it. What remains after
      // that is a leftover; an object the engine never recorded stays a leftover anyway.
      const r = await this.runWorker(kind, withState([{ op: "delete" }], state.id, state.outs));
      const d = r.done[0];
      if (!d?.ok) this.note("DESTROY FAILED", `${label}: delete of the state's object: ${d ? `${d.error?.kind}: ${d.error?.message}` : r.exit}`);
    }
    log(
      `${label}: ${interruptedWith}${fault === "cut" ? ` (cut ${cutPids.length} sshd pids)` : ""}; lock ${lockRightAfter ? "held" : "free"} and ${scriptsRightAfter} host processes right after; ${attempts === 0 ? "nothing to retry" : attempts === 1 && problems.length === 0 ? "retry ok" : `retry failed${attempts === 2 ? `, 2nd retry ${problems.length === 0 ? "ok" : problems.join(" / ")}` : ""}`}`,
    );
    await this.finishTrial(row, label, attempts <= 1 && problems.length === 0, firstProblems, attempts === 2 && problems.length === 0);
  }

  private async finishTrial(row: FaultRow, label: string, retryOk: boolean, problems: string[], secondOk = false): Promise<void> {
    const left = await this.leftovers();
    const all = [...left.diff, ...left.strays];
    if (left.lockHeld) {
      row.staleLocks++;
      this.note("STALE LOCK", `${label}: ${LOCK_HINT}`);
    }
    if (all.length > 0) {
      row.leftovers++;
      this.note("LEFTOVER", `${label}: ${all.join("; ")}`);
      await this.clean(label);
    }
    const clean = all.length === 0 && !left.lockHeld;
    if (retryOk && clean) row.converged++;
    else {
      const mode = modeOf(problems, all, left.lockHeld);
      row.modes.set(mode, (row.modes.get(mode) ?? 0) + 1);
    }
    if (secondOk && !clean) row.convergedSecond--;
  }

  async finalCanaryScan(): Promise<number> {
    const found = await findCanaries(this.h);
    for (const c of found) if (canaryTrial(c.name, this.run) === undefined) this.note("canary file of another run", `${c.where} ${c.name}`);
    return found.filter((c) => canaryTrial(c.name, this.run) !== undefined).length;
  }
}

const LOCK_HINT = "/run/lock/kvmnet.lock still held 15 s after the retry ended";

/** `steps` with the first one working on the object `id`/`outs` (the engine's state), when there is one. */
function withState(steps: WorkerStep[], id: string | undefined, outs: Record<string, unknown> | undefined): WorkerStep[] {
  if (!id || steps[0].op === "create") return steps;
  const [first, ...rest] = steps;
  const named: WorkerStep = first.op === "update" ? { ...first, id, olds: outs } : { ...first, id, props: outs };
  return [named, ...rest];
}

function pick(o: Record<string, unknown> | undefined, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = o?.[k];
  return out;
}

/** A failure mode in a few words: the error kind and the first words of its message. */
function modeOf(problems: string[], leftovers: string[], lockHeld: boolean): string {
  if (problems.length > 0) return short(problems[0].replace(/\d+(\.\d+)*/g, "N"), 110);
  if (lockHeld) return "stale lock";
  return `leftover: ${short(leftovers[0] ?? "", 80)}`;
}

// ---------------------------------------------------------------------------------
// Report

function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(w[i])).join(" | ")} |`;
  return [line(head), `| ${w.map((x) => "-".repeat(x)).join(" | ")} |`, ...cells.slice(1).map(line)].join("\n");
}

function report(c: Campaign, totalCanaries: number, argv: string[], startedAt: Date): string {
  const out: string[] = [];
  out.push(
    `Fault campaign ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC, \`npm run campaign -- ${argv.join(" ")}\` (${Math.round((Date.now() - startedAt.getTime()) / 1000)} s)`,
  );
  out.push("");
  const live = new Set<string>(LIVE_KINDS);
  const summary: (string | number)[][] = [];
  const kindsInOrder = [...Object.keys(PROVIDERS), "connection (on Bridge)"];
  for (const k of kindsInOrder) {
    const f = c.fuzzRows.find((r) => r.kind === k);
    const faults = c.faultRows.filter((r) => r.kind === k);
    const trials = faults.reduce((a, r) => a + r.trials, 0);
    const conv = faults.reduce((a, r) => a + r.converged, 0);
    const conv2 = faults.reduce((a, r) => a + r.convergedSecond, 0);
    const canLive = live.has(k) || k.startsWith("connection");
    summary.push([
      k,
      f?.tried ?? "-",
      f ? `${f.refused} (${f.refusedNamed} naming the field)` : "-",
      f ? (canLive ? `${f.reachedHost}${f.checkOnly ? ` (+${f.checkOnly} check-only)` : ""}` : `n/a (needs the lab; ${f.passed} passed check)`) : "-",
      f?.canaries ?? "-",
      f ? `${f.leftovers + faults.reduce((a, r) => a + r.leftovers, 0)}` : "-",
      live.has(k)
        ? `${conv}/${trials}${trials ? ` (${Math.round((100 * conv) / trials)}%)` : ""}${conv2 ? `, +${conv2} on a 2nd retry` : ""}`
        : k.startsWith("connection")
          ? "-"
          : "n/a (needs the lab)",
    ]);
  }
  out.push(table(["kind", "values tried", "refused at check", "reached the host", "canaries", "leftovers", "converged on retry"], summary));
  out.push("");
  out.push(
    table(
      ["fuzz: kind", "fields", "tried", "refused", "passed check", "refused at create", "reached host", "created", "injected lines", "leftovers"],
      c.fuzzRows.map((r) => [r.kind, r.fields, r.tried, r.refused, r.passed, r.refusedAtCreate, r.reachedHost, r.created, r.injected, r.leftovers]),
    ),
  );
  out.push("");
  out.push(
    table(
      ["fault", "kind", "op", "trials", "hit mid-op", "converged on retry", "on a 2nd retry", "call never settled", "stale locks", "leftovers", "failure modes (1st retry)"],
      c.faultRows.map((r) => [
        r.fault === "kill" ? "SIGKILL provider" : "cut SSH session",
        r.kind,
        r.op,
        r.trials,
        r.midOp,
        r.converged,
        r.convergedSecond,
        r.fault === "cut" ? r.unsettled : "-",
        r.staleLocks,
        r.leftovers,
        [...r.modes].map(([m, n]) => `${n}× ${m}`).join("; ") || "-",
      ]),
    ),
  );
  const trials = c.faultRows.reduce((a, r) => a + r.trials, 0);
  const conv = c.faultRows.reduce((a, r) => a + r.converged, 0);
  const conv2 = c.faultRows.reduce((a, r) => a + r.convergedSecond, 0);
  const leftovers = c.fuzzRows.reduce((a, r) => a + r.leftovers, 0) + c.faultRows.reduce((a, r) => a + r.leftovers, 0);
  out.push("");
  out.push(
    `Totals: canaries ${totalCanaries} (target 0), leftovers ${leftovers} (target 0), converged on retry ${conv}/${trials}${trials ? ` = ${((100 * conv) / trials).toFixed(1)}%` : ""} (target 100%); ${conv2} more on a 2nd retry.`,
  );
  return out.join("\n");
}

// ---------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opts = parseOptions(argv);
  const startedAt = new Date();
  if (process.getuid?.() !== 0) throw new Error("the campaign needs root (it starts sandbox hosts)");
  log(`seed ${opts.seed}, values/field ${opts.values}, kills ${opts.kills} and cuts ${opts.cuts} per kind and operation, at most ${opts.maxMinutes} min`);
  let fleet: Fleet | undefined;
  let campaign: Campaign | undefined;
  let stopping = false;
  const stopAll = async () => {
    if (stopping) return;
    stopping = true;
    for (const pid of campaign?.workers ?? []) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    closeAllConnections();
    // Synchronously, before the first await: on a signal the fleet's own handler
    // (installed by startFleet) ends the process once it has torn the fleet down.
    if (campaign) fs.rmSync(campaign.jobDir, { recursive: true, force: true });
    await fleet?.stop();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping workers and the fleet`);
    void stopAll().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    fleet = await startFleet(1);
    const h = fleet.hosts[0];
    campaign = new Campaign(opts, fleet, h);
    const uncovered = uncoveredStringFields(h);
    if (uncovered.length > 0) throw new Error(`string fields the campaign does not fuzz: ${uncovered.join(", ")} (add them to FUZZ_FIELDS)`);
    // Spare interfaces for Bridge ports: a veth pair, both ends down.
    await h.exec(`ip link add ${SPARE_PORTS[0]} type veth peer name ${SPARE_PORTS[1]}`);
    await campaign.takeBaseline();
    // The canary detector must see a canary, or "0 canaries" would prove nothing.
    const control = `${CANARY_PREFIX}${campaign.run}-0`;
    await h.exec(`touch ${control}`);
    const seen = (await findCanaries(h)).some((c) => c.where === "sandbox host" && c.name === path.basename(control));
    await h.exec(`rm -f ${control}`);
    if (!seen) throw new Error(`the canary scan did not find ${control}, made on the sandbox host to test it`);
    log(`sandbox host ${h.netns} at ${h.address}, run tag ${campaign.run}`);
    if (opts.fuzz) await campaign.fuzz();
    closeAllConnections();
    if (opts.faults) await campaign.faults();
    const canaries = await campaign.finalCanaryScan();
    const text = report(campaign, canaries, argv, startedAt);
    console.log("\n" + text);
    if (campaign.findings.length > 0) {
      console.log(`\nFindings (${campaign.findings.length}):`);
      for (const f of campaign.findings) console.log(`- ${f.what}: ${f.detail}`);
    }
  } finally {
    await stopAll();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
