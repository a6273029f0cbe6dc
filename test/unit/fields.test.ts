import { z } from "zod";
import { fieldDocs, inputKeysOf, objectOf } from "../../provider/fields";
import { connectionSchema } from "../../provider/host/connection";
import { PCI_INPUT_KEYS } from "../../provider/resources/pciPassthrough";
import { PORT_FORWARD_INPUT_KEYS } from "../../provider/resources/portForward";

describe("a schema's input fields", () => {
  it("are its object's keys, through transforms (pipes), refinements and z.lazy", () => {
    const inner = z.object({ a: z.string(), b: z.number().optional() }).strict();
    const piped = inner.superRefine(() => undefined).transform((v) => ({ ...v, derived: 1 }));
    expect(inputKeysOf(piped.transform((v) => v))).toEqual(["a", "b"]);
    expect(objectOf(z.lazy(() => inner))).toBe(inner);
    expect(inputKeysOf(connectionSchema)).toContain("jumpHost");
    expect(() => objectOf(z.string())).toThrow(/string schema has no object/);
  });

  it("leave out what the schema derives (PortForward's and PciPassthrough's name)", () => {
    expect(PORT_FORWARD_INPUT_KEYS).not.toContain("name");
    expect(PCI_INPUT_KEYS).toEqual(["connection", "address", "driver", "includeIommuGroup", "force", "persistence"]);
  });

  it("carry their documentation: description, Default (the schema's default unless given) and On change (update unless given)", () => {
    const s = z.object({
      req: z.string().describe("Required."),
      opt: z.number().optional().describe("Optional.").meta({ docDefault: "kernel's" }),
      def: z.array(z.string()).default([]).describe("Defaulted.").meta({ onChange: "replace" }),
      typo: z.boolean().default(false).meta({ descripton: "x" }),
    });
    expect(fieldDocs(s)).toEqual([
      { key: "req", description: "Required.", optional: false, defaultText: "—", onChange: "update", unknownMeta: [] },
      { key: "opt", description: "Optional.", optional: true, defaultText: "kernel's", onChange: "update", unknownMeta: [] },
      { key: "def", description: "Defaulted.", optional: true, defaultText: "`[]`", onChange: "replace", unknownMeta: [] },
      { key: "typo", description: undefined, optional: true, defaultText: "`false`", onChange: "update", unknownMeta: ["descripton"] },
    ]);
  });
});
