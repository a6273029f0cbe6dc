/** Driving a kind's provider object the way the engine does, against a test host. */
import { closeAllConnections } from "../../provider/host";
import { ensurePulumi, Stack } from "../../testbed/engine";
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

/**
 * A Pulumi program (`project`, a dir) under the real engine against one
 * sandbox host, for the test file: before its tests the host starts (then
 * `setup` runs on it), a stack `stackName` is made, connected to the host and
 * given `config`; after them `teardown` runs (the test's own processes),
 * then the stack is destroyed and disposed and the host stops. `ready`
 * receives the host, the stack and the fleet (for guests and the upstream
 * client).
 */
export function exampleOnSandboxHost(
  o: { project: string; stackName: string; config?: Record<string, string>; setup?: (h: SandboxHost) => Promise<void>; teardown?: () => Promise<void> },
  ready: (h: SandboxHost, stack: Stack, fleet: Fleet) => void,
): void {
  let fleet: Fleet | undefined;
  let stack: Stack | undefined;
  beforeAll(async () => {
    await assertSandboxSupported();
    const bin = await ensurePulumi();
    fleet = await startFleet(1);
    const [h] = fleet.hosts;
    await o.setup?.(h);
    stack = new Stack(o.project, o.stackName, bin);
    await stack.init();
    await stack.connectTo(h);
    for (const [k, v] of Object.entries(o.config ?? {})) await stack.setConfig(k, v);
    ready(h, stack, fleet);
  });
  afterAll(async () => {
    await o.teardown?.();
    await stack?.pulumi(["destroy", "--yes"]);
    await stack?.dispose();
    await fleet?.stop();
  });
}
