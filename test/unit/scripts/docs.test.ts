import * as fs from "fs";
import * as path from "path";
import { README, renderDocs } from "../../../scripts/docs";
import { REPO, sdkFile } from "../../../scripts/sdkSource";

const read = (file: string) => fs.readFileSync(path.join(REPO, file), "utf8");

/**
 * #17 item 5: a field was written three or four times (the zod schema, the
 * input keys, the SDK's Args, the README's tables), and the copies drifted:
 * sdk/bridge.ts still said persistence was "not yet with takeOverUplink", and
 * the README's PortForward table had no `persistence` row. The schema is now
 * the source; `npm run docs` writes the SDK's JSDoc and the README's tables
 * from it, and these fail on anything it would change or cannot fix.
 */
describe("the SDK and the README follow the schemas", () => {
  const result = renderDocs(read);

  it("every SDK Args interface has exactly the schema's fields, optional where the schema is; classes and README sections name their type token, id and outputs", () => {
    expect(result.problems).toEqual([]);
  });

  it("every field's JSDoc and README row is the schema's (run `npm run docs`)", () => {
    expect(result.drift).toEqual([]);
  });
});

describe("npm run docs", () => {
  const stale = (file: string, from: string, to: string) => (f: string) => (f === file ? read(f).replace(from, to) : read(f));

  it("rewrites a stale JSDoc from the schema's description", () => {
    const bridge = sdkFile("bridge");
    const current = read(bridge);
    const doc = /\n *(\/\*\*(?:(?!\*\/)[\s\S])*\*\/)\n {2}persistence\?:/.exec(current)?.[1] as string;
    const { drift, files } = renderDocs(stale(bridge, doc, "/** Not yet with takeOverUplink (refused). */"));
    expect(drift).toEqual([`${bridge} BridgeArgs.persistence: the JSDoc is not the schema's description`]);
    expect(files.get(bridge)).toBe(current);
  });

  it("writes a missing README row, and reports a field the SDK lacks", () => {
    const readme = read(README);
    const row = readme.split("\n").find((l) => l.startsWith("| `description` |")) as string;
    const pf = sdkFile("portForward");
    const withoutField = read(pf).replace(/\n {2}\/\*\*[^\n]*\*\/\n {2}description\?:[^\n]*/, "");
    const { drift, files, problems } = renderDocs((f) => (f === README ? readme.replace(`${row}\n`, "") : f === pf ? withoutField : read(f)));
    expect(drift).toEqual([`${README} PortForward table: no row for description`]);
    expect(files.get(README)).toBe(readme);
    expect(problems).toEqual([`${pf} PortForwardArgs lacks description (declare it by hand: its type is not generated)`]);
  });
});
