import * as pulumi from "@pulumi/pulumi";
import { Bridge, NatNetwork } from "../../../sdk";

/**
 * #16: @pulumi/pulumi serializes a dynamic resource's provider (six closures) when the
 * resource is declared, and caches that by the provider object's identity. With one
 * provider object per kind, a program of many resources serializes once per kind.
 */
describe("the dynamic provider is serialized once per kind, not once per resource", () => {
  beforeAll(async () => {
    await pulumi.runtime.setMocks({
      newResource: (args) => ({ id: `${args.name}-id`, state: args.inputs }),
      call: (args) => args.inputs,
    });
  });

  it("five Bridges and two NatNetworks: two serializations", async () => {
    // dynamic/index.js requires this module when it first serializes and calls through it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const closure = require("@pulumi/pulumi/runtime/closure/serializeClosure") as { serializeFunction: (...a: unknown[]) => unknown };
    const spy = jest.spyOn(closure, "serializeFunction");
    try {
      const connection = { host: "kvm1.example.net" };
      const bridges = Array.from({ length: 5 }, (_, i) => new Bridge(`b${i}`, { connection, name: `br${i}` }));
      const nets = ["a", "b"].map((n) => new NatNetwork(`n${n}`, { connection, name: n, subnet: "10.0.0.0/24" }));
      await new Promise<void>((resolve) => pulumi.all([...bridges, ...nets].map((r) => r.urn)).apply(() => resolve()));
      expect(spy).toHaveBeenCalledTimes(2);
    } finally {
      spy.mockRestore();
    }
  });
});
