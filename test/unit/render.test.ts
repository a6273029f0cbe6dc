import { renderScript } from "../../provider/render";
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
