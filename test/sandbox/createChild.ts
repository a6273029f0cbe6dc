/**
 * Runs ONE create in a process of its own, for test/sandbox/interrupt.ts to
 * kill while the host is applying it: what the engine's dynamic-provider
 * process is when `pulumi up` is interrupted. Input (env KVMNET_CHILD_CREATE):
 * `{ "kind": "<KindName>", "inputs": { … } }`. Prints "created <id>" on success.
 */
import { closeAllConnections, kinds, KindName } from "../../provider";

async function main(): Promise<void> {
  const { kind, inputs } = JSON.parse(process.env.KVMNET_CHILD_CREATE ?? "{}") as { kind: KindName; inputs: Record<string, unknown> };
  const provider = kinds[kind];
  const checked = await provider.check({}, inputs);
  if (checked.failures?.length) throw new Error(JSON.stringify(checked.failures));
  const { id } = await provider.create(checked.inputs);
  process.stdout.write(`created ${id}\n`);
  closeAllConnections();
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
