/**
 * provider/render.ts: what a failing step runs, the error a failed apply script reports, and the hint it
 * prints (#14 item 7: every hint a user can see is asserted). A failed step's
 * script undid the steps before it, so the hint says the host is as it was; a
 * failed guard changed nothing and needs no such hint.
 */
import { applyError, EXIT_GUARD_FAILED, EXIT_STEP_FAILED, renderScript } from "../../provider/render";
import { sh } from "../../provider/shell";

describe("renderScript: a failing step", () => {
  const plan = {
    guards: [],
    steps: [
      { description: "one", run: sh`echo one`, undo: sh`echo undo-one` },
      { description: "two", run: sh`echo two`, undo: sh`echo undo-two`, cleanup: sh`echo cleanup-two` },
      { description: "three", run: sh`echo three`, undo: sh`echo undo-three` },
    ],
  };
  /** The lines run when step `description` fails. */
  const failBranch = (text: string, description: string) => {
    const start = text.indexOf(`step failed: ${description}`);
    return text.slice(start, text.indexOf("\nfi", start));
  };

  it("cleans what it left itself (#14), then undoes the steps before it, last first", () => {
    const text = renderScript(plan).text;
    const two = failBranch(text, "two");
    expect(two).toContain("cleanup-two");
    expect(two).not.toContain("undo-two");
    expect(two.indexOf("cleanup-two")).toBeLessThan(two.indexOf("undo-one"));
  });

  it("a step's cleanup runs only when that step fails", () => {
    const text = renderScript(plan).text;
    expect(failBranch(text, "one")).not.toContain("cleanup-two");
    expect(failBranch(text, "three")).not.toContain("cleanup-two");
    expect(failBranch(text, "three")).toContain("undo-two");
  });
});

describe("applyError", () => {
  it("says a failed step was undone", () => {
    const e = applyError("root@h:22", EXIT_STEP_FAILED, null, "@@kvmnet-fail Failed step failed: create bridge br0\nRTNETLINK answers: File exists\n");
    expect({ kind: e.kind, message: e.shortMessage, hint: e.hint, stderr: e.stderr }).toEqual({
      kind: "Failed",
      message: "step failed: create bridge br0",
      hint: "the steps already applied were undone: the host is as it was before this operation",
      stderr: "RTNETLINK answers: File exists",
    });
  });

  it("calls a feature the kernel lacks Unsupported, and says so in the hint", () => {
    const e = applyError("root@h:22", EXIT_STEP_FAILED, null, "@@kvmnet-fail Failed step failed: create VLAN eth1.10\nError: Unknown device type.\n");
    expect({ kind: e.kind, hint: e.hint }).toEqual({
      kind: "Unsupported",
      hint: "the host's kernel lacks this feature; the steps already applied were undone: the host is as it was before this operation",
    });
  });

  it("keeps a guard's kind and prints no undo hint (nothing was changed)", () => {
    const e = applyError("root@h:22", EXIT_GUARD_FAILED, null, "@@kvmnet-fail Conflict an interface named br0 appeared on the host while this change was planned\n");
    expect({ kind: e.kind, message: e.shortMessage, hint: e.hint }).toEqual({
      kind: "Conflict",
      message: "an interface named br0 appeared on the host while this change was planned",
      hint: undefined,
    });
  });
});
