/** Driving a kind's provider object the way the engine does, against a test host. */
import type { SandboxHost } from "../../testbed/fleet";

/** The connection input for a sandbox host (its key pinned). */
export function sandboxConnection(h: SandboxHost) {
  return { host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint };
}

/** check() as the engine calls it; throws with the failures when the inputs are refused. */
export async function checkedInputs(
  p: { check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<{ inputs: Record<string, unknown>; failures?: unknown[] }> },
  props: Record<string, unknown>,
) {
  const c = await p.check({}, props);
  if (c.failures?.length) throw new Error(JSON.stringify(c.failures));
  return c.inputs;
}
