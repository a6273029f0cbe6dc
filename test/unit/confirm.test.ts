import { armStep, confirmScript, parseConfirm, revertProgram } from "../../provider/confirm";
import { renderScript } from "../../provider/render";
import { sh } from "../../provider/shell";

const plan = {
  guards: [],
  steps: [
    { description: "one", run: sh`echo one`, undo: sh`echo undo-one` },
    { description: "two", run: sh`echo two` },
    { description: "three", run: sh`echo three`, undo: sh`echo undo-three` },
  ],
  confirm: { timeoutSec: 30, reason: "test" },
};

describe("commit-confirm scripts", () => {
  it("arms the revert before any step, with the undos of every step in reverse order", () => {
    const text = renderScript(plan, [], "0123456789ab").text;
    expect(text).toContain("trap '' HUP PIPE");
    const arm = text.indexOf("arm the automatic revert (30s without confirmation)");
    expect(arm).toBeGreaterThan(0);
    expect(arm).toBeLessThan(text.indexOf("echo one"));
    const revert = revertProgram("0123456789ab", [sh`echo undo-three`, sh`echo undo-one`]);
    expect(revert.indexOf("undo-three")).toBeLessThan(revert.indexOf("undo-one"));
    expect(text).toContain(revert.split("\n").slice(-3, -1).join("\n"));
    // Only while armed, under the host lock.
    expect(revert).toMatch(/flock -w 120 9\n\[ -f '\/run\/kvmnet\/confirm\/0123456789ab.armed' \] \|\| exit 0/);
  });

  it("refuses to render a confirmed plan without a token", () => {
    expect(() => renderScript(plan)).toThrow(/without a token/);
  });

  it("a failed step's undos disarm the revert (the arm step's undo runs last)", () => {
    const text = renderScript(plan, [], "0123456789ab").text;
    const failThree = text.slice(text.indexOf("echo three"));
    expect(failThree.indexOf("echo undo-one")).toBeLessThan(failThree.indexOf("rm -f '/run/kvmnet/confirm/0123456789ab.armed'"));
  });

  it("uses a transient systemd timer where systemd runs, a setsid'd sleeper elsewhere, and never the lock's descriptor", () => {
    const run = armStep("t0", 45, []).run.text;
    expect(run).toContain("systemd-run --quiet --collect --unit='kvmnet-revert-t0' --on-active='45s'");
    expect(run).toContain("setsid sh -c 'sleep 45; exec /bin/sh /run/kvmnet/confirm/t0.revert' </dev/null >/dev/null 2>&1 9>&- &");
  });

  it("reads the outcome of a confirmation", () => {
    expect(parseConfirm("confirmed\n")).toEqual({ state: "confirmed" });
    expect(parseConfirm("reverted 2026-01-01T00:00:00Z reverting: no confirmation arrived \n")).toEqual({
      state: "reverted",
      log: "2026-01-01T00:00:00Z reverting: no confirmation arrived",
    });
    expect(parseConfirm("")).toEqual({ state: "unknown" });
    expect(confirmScript("t0").text).toContain("if [ -f '/run/kvmnet/confirm/t0.armed' ]; then");
  });
});
