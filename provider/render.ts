/**
 * Render a plan into the one POSIX sh script that applies it.
 *
 * Shape of every mutating script:
 *   1. take the host-wide lock (flock on /run/kvmnet/lock), so two resources
 *      on one host never interleave read-modify-write;
 *   2. re-check the plan's preconditions (guards) under the lock: the observe
 *      round trip ran without it;
 *   3. run the steps in order; when step k fails, run its own cleanup (what
 *      its run may have left half done), then the undo of steps k-1 … 1
 *      (reverse order) and exit, so a failed create leaves nothing and a
 *      failed update leaves the old state;
 *   4. release the lock and print the observe sections, so the caller
 *      verifies against the state the host really has — in the same round trip.
 * Step output goes to stderr; stdout carries only the framed sections.
 */
import { armStep, ConfirmSpec } from "./confirm";
import type { ErrorKind } from "./errors";
import { KvmnetError } from "./errors";
import { LOCK_FILE, observeScript } from "./observe";
import { joinLines, literal, Script, sh } from "./shell";

export interface Step {
  /** What the step does, in words (shown when it fails). */
  description: string;
  run: Script;
  /** Restores what `run` changed; omitted when nothing needs restoring. */
  undo?: Script;
  /**
   * Runs when `run` itself fails, before the undos of the earlier steps: removes
   * what a run that stopped part way may have left (a file written before the
   * command that failed, #14). Unlike `undo` it must hold after a partial run,
   * so it is its own field: an undo may assume its step completed.
   */
  cleanup?: Script;
}

export interface Guard {
  /** Succeeds (exit 0) when the precondition holds. */
  test: Script;
  kind: ErrorKind;
  message: string;
}

export interface Plan {
  guards: Guard[];
  steps: Step[];
  /** Set when the change may cut the management path: the steps run under commit-confirm (provider/confirm.ts). */
  confirm?: ConfirmSpec;
}

export const EXIT_STEP_FAILED = 3;
export const EXIT_GUARD_FAILED = 4;
export const EXIT_LOCK_BUSY = 75;

/** Wait this long for another kvmnet script on the same host. */
const LOCK_WAIT_SECONDS = 90;

/**
 * `observeExtra`: a kind's own observe sections, read back with the standard ones.
 * `confirmToken`: required when `plan.confirm` is set; names the armed revert.
 */
export function renderScript(plan: Plan, observeExtra: readonly Script[] = [], confirmToken?: string): Script {
  let steps = plan.steps;
  const prelude: Script[] = [];
  if (plan.confirm) {
    if (!confirmToken) throw new KvmnetError({ kind: "Bug", message: "a plan that needs confirming was rendered without a token" });
    // The revert is the undo of every step, last first: the state before this plan.
    const undos = plan.steps
      .filter((s) => s.undo)
      .map((s) => s.undo as Script)
      .reverse();
    const arm = armStep(confirmToken, plan.confirm.timeoutSec, undos);
    steps = [{ description: `arm the automatic revert (${plan.confirm.timeoutSec}s without confirmation)`, ...arm }, ...steps];
    // A session cut by the change itself must not stop the steps half done.
    prelude.push(literal("trap '' HUP PIPE"));
  }
  const parts: Script[] = [
    literal("set -u"),
    ...prelude,
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    literal('kvmnet_fail() { printf \'@@kvmnet-fail %s %s\\n\' "$1" "$2" >&2; }'),
    sh`mkdir -p /run/lock && exec 9>>${LOCK_FILE}`,
    sh`if ! command -v flock >/dev/null 2>&1; then kvmnet_fail Unsupported ${"the host lacks flock(1) (util-linux)"}; exit ${EXIT_GUARD_FAILED}; fi`,
    sh`if ! flock -w ${LOCK_WAIT_SECONDS} 9; then kvmnet_fail Timeout ${`another kvmnet change held ${LOCK_FILE} for ${LOCK_WAIT_SECONDS}s`}; exit ${EXIT_LOCK_BUSY}; fi`,
  ];
  for (const g of plan.guards) {
    parts.push(sh`if ! { ${g.test}; } >&2; then kvmnet_fail ${g.kind} ${g.message}; exit ${EXIT_GUARD_FAILED}; fi`);
  }
  steps.forEach((step, i) => {
    const undos = steps
      .slice(0, i)
      .reverse()
      .filter((s) => s.undo)
      .map((s) => sh`{ ${s.undo as Script}; } >&2 2>/dev/null || true`);
    parts.push(
      joinLines([
        sh`if ! { ${step.run}; } >&2; then`,
        sh`  kvmnet_fail Failed ${`step failed: ${step.description}`}`,
        ...(step.cleanup ? [sh`  { ${step.cleanup}; } >&2 2>/dev/null || true`] : []),
        ...undos.map((u) => sh`  ${u}`),
        sh`  exit ${EXIT_STEP_FAILED}`,
        literal("fi"),
      ]),
    );
  });
  // Release the lock before reading the result back: the read-back only
  // looks, and holding the lock through it would serialize every other
  // resource's apply behind our observation (measured: bench/bridge-concurrency.ts).
  parts.push(literal("exec 9>&-"));
  parts.push(observeScript(observeExtra));
  return joinLines(parts);
}

/** Turn a failed apply script's output into the error it reports. */
export function applyError(host: string, exitCode: number | null, signal: string | null, stderr: string): KvmnetError {
  const m = /^@@kvmnet-fail (\S+) (.*)$/m.exec(stderr);
  const rest = stderr.replace(/^@@kvmnet-fail .*$\n?/m, "").trim();
  if (m) {
    // The kernel's own word for a missing feature (a module or config option not built).
    const unsupported = m[1] === "Failed" && /Operation not supported|Unknown device type/.test(rest);
    return new KvmnetError({
      kind: unsupported ? "Unsupported" : (m[1] as ErrorKind),
      message: m[2],
      host,
      exitCode,
      stderr: rest,
      hint:
        exitCode === EXIT_STEP_FAILED
          ? `${unsupported ? "the host's kernel lacks this feature; " : ""}the steps already applied were undone: the host is as it was before this operation`
          : undefined,
    });
  }
  return new KvmnetError({ kind: "Failed", message: "apply script failed", host, exitCode, signal, stderr: rest });
}
