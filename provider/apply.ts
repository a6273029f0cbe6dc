/**
 * The round trips of the lifecycle: observe a host, and apply a rendered plan
 * (under commit-confirm when the plan may cut the management path, see
 * ./confirm.ts), each returning the host's state as a snapshot.
 */
import { ConfirmOutcome, confirmScript, ConfirmSpec, newToken, parseConfirm } from "./confirm";
import { isKvmnetError, KvmnetError, shortMessageOf } from "./errors";
import { ConnectionInput, dedicatedHostFor, Host } from "./host";
import { HostSnapshot, observeScript, parseSnapshot } from "./observe";
import { applyError, Plan, renderScript } from "./render";
import { Script } from "./shell";

export async function observe(host: Host, extra: readonly Script[] = []): Promise<HostSnapshot> {
  // Shared: the resources of one host that ask at the same moment (created or refreshed together) read it once.
  const r = await host.run(observeScript(extra).text, { timeoutMs: 60_000, shared: true });
  if (r.exitCode !== 0) {
    throw new KvmnetError({ kind: "Failed", message: "observing the host failed", host: host.label, exitCode: r.exitCode, stderr: r.stderr });
  }
  const snap = parseSnapshot(r.stdout, host.label);
  if (snap.uid !== 0) {
    throw new KvmnetError({
      kind: "Permission",
      message: `commands run as uid ${snap.uid}, but managing interfaces needs root`,
      host: host.label,
      hint: "connect as root, or set connection.sudo: true (or { password }) for a user allowed to sudo",
    });
  }
  return snap;
}

/**
 * Run a rendered plan; returns the host's state after it. A plan that may
 * cut the management path runs under commit-confirm (see provider/confirm.ts),
 * confirmed over a new connection made from `connection`.
 */
export async function apply(host: Host, plan: Plan, extra: readonly Script[] = [], connection?: ConnectionInput): Promise<HostSnapshot> {
  if (plan.confirm) {
    if (!connection) throw new KvmnetError({ kind: "Bug", message: "a plan that needs confirming was applied without its connection", host: host.label });
    return applyConfirmed(host, connection, plan, extra);
  }
  const r = await host.run(renderScript(plan, extra).text);
  if (r.exitCode !== 0) throw applyError(host.label, r.exitCode, r.signal, r.stderr);
  return parseSnapshot(r.stdout, host.label);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Seconds past the host's revert deadline the provider waits before it looks again. */
const REVERT_GRACE_SEC = 15;

async function applyConfirmed(host: Host, connection: ConnectionInput, plan: Plan, extra: readonly Script[]): Promise<HostSnapshot> {
  const spec = plan.confirm as ConfirmSpec;
  const token = newToken();
  const deadline = Date.now() + spec.timeoutSec * 1000;
  let after: HostSnapshot | undefined;
  let lastError: unknown;
  try {
    const r = await host.run(renderScript(plan, extra, token).text, { timeoutMs: spec.timeoutSec * 1000 });
    // A failed step undid the steps before it, disarming the revert with them.
    if (r.exitCode !== 0) throw applyError(host.label, r.exitCode, r.signal, r.stderr);
    try {
      after = parseSnapshot(r.stdout, host.label);
    } catch (e) {
      // The steps all ran, but the read-back right after them failed: the path
      // back to us may be moving (a network stack re-applying its profile to the
      // uplink just given back, say). The confirmation decides; look again after it.
      lastError = e;
    }
  } catch (e) {
    // The session may have been cut by the change itself: the steps carry on on the host and the revert is armed.
    if (!isKvmnetError(e) || (e.kind !== "Unreachable" && e.kind !== "Timeout")) throw e;
    lastError = e;
  }

  const ask = async (timeoutMs: number): Promise<ConfirmOutcome | undefined> => {
    const fresh = dedicatedHostFor(connection);
    try {
      return parseConfirm((await fresh.run(confirmScript(token).text, { timeoutMs })).stdout);
    } catch (e) {
      lastError = e;
      return undefined;
    } finally {
      fresh.close();
    }
  };
  let outcome: ConfirmOutcome | undefined;
  while (Date.now() < deadline - 1000) {
    outcome = await ask(Math.max(3000, Math.min(20_000, deadline - Date.now())));
    if (outcome && outcome.state !== "busy") break;
    await sleep(2000);
  }
  const why = `the change needed confirming because ${spec.reason}`;
  const cause = lastError ? shortMessageOf(lastError) : undefined;
  const rolledBack = (log: string, verb: string, hint: string) =>
    new KvmnetError({
      kind: "Verification",
      message: `the host rolled the change back: no new SSH connection ${verb} it within ${spec.timeoutSec}s (${why})${cause ? `; last error: ${cause}` : ""}`,
      host: host.label,
      stderr: log,
      hint,
    });
  if (outcome?.state === "confirmed") return after ?? observe(host, extra);
  if (outcome?.state === "reverted") {
    throw rolledBack(outcome.log, "confirmed", "the host is as it was before this operation; fix what kept new SSH sessions out, or raise confirmTimeoutSec");
  }
  if (outcome?.state === "unknown") {
    throw new KvmnetError({
      kind: "Failed",
      message: `the host has no record of the change's revert (${why}); was it rebooted?`,
      host: host.label,
      hint: "run pulumi refresh to see what the host has",
    });
  }
  // Never reached: the host reverts at the deadline. Look once more after it.
  await sleep(Math.max(0, deadline - Date.now()) + REVERT_GRACE_SEC * 1000);
  const late = await ask(20_000);
  if (late?.state === "reverted") throw rolledBack(late.log, "reached", "the host is as it was before this operation and answers SSH again");
  if (late?.state === "confirmed") return observe(host, extra);
  throw new KvmnetError({
    kind: "Unreachable",
    message: `no new SSH connection reached the host within ${spec.timeoutSec}s of the change, nor ${REVERT_GRACE_SEC}s after its automatic revert was due (${why})${cause ? `; last error: ${cause}` : ""}`,
    host: host.label,
    hint: "the host should have reverted by itself; check it from its console, then run pulumi refresh",
  });
}
