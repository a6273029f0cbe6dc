/**
 * Commit-confirm: changes that could cut the provider off from the host.
 *
 * Moving the NIC that carries the SSH session into a bridge is the classic
 * way to lock yourself out of a remote host. A plan that touches such an
 * interface carries `confirm`, and then:
 *
 *   1. the apply script first ARMS a revert on the host — a detached timer
 *      (a transient systemd timer where systemd runs, a setsid'd sleeper
 *      where it does not) that runs, after `timeoutSec`, the undo of every
 *      step of the plan in reverse order, i.e. restores the previous state;
 *   2. the steps run (SIGHUP and SIGPIPE ignored, so a session cut mid-way
 *      cannot stop them half done);
 *   3. the provider CONFIRMS over a NEW SSH connection (never the one that
 *      made the change, which may survive a change that new sessions do not);
 *      confirming disarms the revert;
 *   4. no confirmation in time → the host reverts by itself and the provider
 *      reports that the change was rolled back, and why.
 *
 * Arm, disarm and the revert take the host lock and decide on one file
 * (`<token>.armed`), so a confirm racing the timer either wins (the revert
 * then does nothing) or finds the revert done — never both or neither.
 */
import { randomBytes } from "crypto";
import { LOCK_FILE } from "./observe";
import { stopUnit } from "./persist/systemd";
import { joinLines, literal, Script, sh, writeFile } from "./shell";

export const CONFIRM_DIR = "/run/kvmnet/confirm";

export interface ConfirmSpec {
  /** Seconds the host waits for the confirmation before it reverts. */
  timeoutSec: number;
  /** Why the change needs confirming (in messages), e.g. "eth0 carries the SSH session". */
  reason: string;
}

const paths = (token: string) => ({
  armed: `${CONFIRM_DIR}/${token}.armed`,
  revert: `${CONFIRM_DIR}/${token}.revert`,
  pid: `${CONFIRM_DIR}/${token}.pid`,
  log: `${CONFIRM_DIR}/${token}.log`,
  done: `${CONFIRM_DIR}/${token}.reverted`,
});

/** Unit names of the transient timer and service (`systemd-run --unit`). */
export const revertUnit = (token: string) => `kvmnet-revert-${token}`;

/** A fresh random token (hex): names the revert's files and units. */
export function newToken(): string {
  return randomBytes(6).toString("hex");
}

/** The revert program the timer runs: under the lock, only while still armed. */
export function revertProgram(token: string, undos: Script[]): string {
  const p = paths(token);
  return joinLines([
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    literal("trap '' HUP PIPE"),
    sh`exec 9>>${LOCK_FILE}`,
    sh`flock -w 120 9`,
    sh`[ -f ${p.armed} ] || exit 0`,
    sh`rm -f ${p.armed}`,
    sh`exec >>${p.log} 2>&1`,
    literal("date -u '+%Y-%m-%dT%H:%M:%SZ reverting: no confirmation arrived'"),
    ...undos.map((u) => sh`{ ${u}; } || true`),
    sh`date -u > ${p.done}`,
  ]).text;
}

/**
 * The first step of a confirmed plan. Its undo disarms: when a later step
 * fails, the script undoes what it did itself and the timer must not fire.
 */
export function armStep(token: string, timeoutSec: number, undos: Script[]): { run: Script; undo: Script } {
  const p = paths(token);
  const unit = revertUnit(token);
  const run = joinLines([
    sh`mkdir -p ${CONFIRM_DIR}`,
    writeFile(p.revert, revertProgram(token, undos), "0700"),
    sh`if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then`,
    sh`  systemd-run --quiet --collect --unit=${unit} --on-active=${`${timeoutSec}s`} --timer-property=AccuracySec=1s /bin/sh ${p.revert}`,
    literal("else"),
    // setsid: its own session, so the end of our SSH session does not take it along.
    // 9>&-: it must not inherit the host lock's descriptor (it would hold the lock while it sleeps).
    sh`  setsid sh -c ${`sleep ${timeoutSec}; exec /bin/sh ${p.revert}`} </dev/null >/dev/null 2>&1 9>&- &`,
    sh`  echo $! > ${p.pid}`,
    literal("fi"),
    // No timer, no change: without a revert armed nothing below may run.
    sh`kvmnet_armed=$?; if [ "$kvmnet_armed" -ne 0 ]; then rm -f ${p.revert} ${p.pid}; false; else : > ${p.armed}; fi`,
  ]);
  return { run, undo: disarmBody(token) };
}

/** Remove the armed marker, stop the timer or sleeper, drop the files. Caller holds the lock. */
function disarmBody(token: string): Script {
  const p = paths(token);
  const unit = revertUnit(token);
  return joinLines([
    sh`rm -f ${p.armed}`,
    // The sleeper leads its own process group (setsid): end the sleep with it.
    sh`if [ -f ${p.pid} ]; then kill -- "-$(cat ${p.pid})" 2>/dev/null || kill "$(cat ${p.pid})" 2>/dev/null; fi`,
    stopUnit(`${unit}.timer`, { quiet: true, onlyUnderSystemd: true }),
    sh`rm -f ${p.revert} ${p.pid} ${p.log} ${p.done}`,
    sh`rmdir ${CONFIRM_DIR} /run/kvmnet 2>/dev/null`,
    literal("true"),
  ]);
}

/**
 * Run over the NEW connection. Prints one line:
 *   confirmed        the revert was still armed and is now disarmed;
 *   reverted <log>   the timer fired first: the previous state is back;
 *   unknown          no trace of the token (a reboot wiped /run).
 */
export function confirmScript(token: string): Script {
  const p = paths(token);
  return joinLines([
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    sh`exec 9>>${LOCK_FILE}`,
    sh`flock -w 120 9 || { echo busy; exit 0; }`,
    sh`if [ -f ${p.armed} ]; then`,
    disarmBody(token),
    literal("  echo confirmed"),
    sh`elif [ -f ${p.done} ]; then`,
    sh`  printf 'reverted '; tr '\\n' ' ' < ${p.log}; echo`,
    sh`  rm -f ${p.revert} ${p.pid} ${p.log} ${p.done}; rmdir ${CONFIRM_DIR} /run/kvmnet 2>/dev/null; true`,
    literal("else"),
    literal("  echo unknown"),
    literal("fi"),
  ]);
}

export type ConfirmOutcome = { state: "confirmed" } | { state: "reverted"; log: string } | { state: "unknown" } | { state: "busy" };

export function parseConfirm(stdout: string): ConfirmOutcome {
  const line = stdout.trim().split("\n").pop() ?? "";
  if (line === "confirmed") return { state: "confirmed" };
  if (line.startsWith("reverted")) return { state: "reverted", log: line.slice("reverted".length).trim() };
  if (line === "busy") return { state: "busy" };
  return { state: "unknown" };
}
