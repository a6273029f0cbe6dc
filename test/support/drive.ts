/** Driving a kind's provider object the way the engine does, against a test host. */
import { closeAllConnections } from "../../provider/host";
import { assertSandboxSupported, Fleet, SandboxHost, startFleet } from "../../testbed/fleet";

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

/**
 * One sandbox host for the test file: started before its tests (then `setup`
 * runs on it), stopped after them with every SSH connection closed. Returns a
 * getter: the host exists once the file's beforeAll ran.
 */
export function oneSandboxHost(setup?: (h: SandboxHost) => Promise<void>): () => SandboxHost {
  let fleet: Fleet | undefined;
  let host: SandboxHost | undefined;
  beforeAll(async () => {
    await assertSandboxSupported();
    fleet = await startFleet(1);
    [host] = fleet.hosts;
    await setup?.(host);
  });
  afterAll(async () => {
    closeAllConnections();
    await fleet?.stop();
  });
  return () => {
    if (!host) throw new Error("the sandbox host is not started yet: use it inside a test or a hook after oneSandboxHost's");
    return host;
  };
}
