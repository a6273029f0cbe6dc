/**
 * The attach outputs and the libvirt registration's refusal, through the
 * lifecycle against a real sandbox host (netns + sshd). Sandbox hosts have no
 * libvirt: `libvirt` fails at create naming it and what to install, and the
 * host is left as it was (the registration itself runs on a real libvirtd in
 * test/lab/libvirt.engine.test.ts; a VLAN's attach point, which this kernel
 * cannot make, in test/unit/libvirt.test.ts).
 */
import { bridgeProvider } from "../../provider/resources/bridge";
import { oneSandboxHost, sandboxConnection } from "../support/drive";
import { expectKvmnetError } from "../support/expectError";
import { snapshotHost } from "../../testbed/fleet";

const host = oneSandboxHost();

const conn = () => sandboxConnection(host());

async function checked(provider: typeof bridgeProvider, inputs: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await provider.check({}, inputs);
  expect(r.failures).toBeUndefined();
  return r.inputs;
}

describe("libvirt registration on a host without libvirt", () => {
  it("fails at create as Unsupported, naming libvirt and what to install, and changes nothing", async () => {
    const before = await snapshotHost(host());
    const inputs = await checked(bridgeProvider, { connection: conn(), name: "br-lv", libvirt: { network: "lan" } });
    const err = await expectKvmnetError(
      bridgeProvider.create(inputs),
      "Unsupported",
      /libvirt: bridge br-lv asks for libvirt network lan, but (the host has no virsh|the system libvirtd)/,
    );
    expect(String((err as { hint?: string }).hint)).toMatch(/apt-get install libvirt-daemon-system.*nothing was changed/);
    expect(await snapshotHost(host())).toEqual(before);
  });
});

describe("attach outputs", () => {
  it("a Bridge's name the bridge with the model; a model change is an update of outputs only", async () => {
    const before = await snapshotHost(host());
    const inputs = await checked(bridgeProvider, { connection: conn(), name: "br-at" });
    const { id, outs } = await bridgeProvider.create(inputs);
    expect(outs).toMatchObject({
      model: "virtio-net-pci",
      libvirtInterfaceXml: "<interface type='bridge'>\n  <source bridge='br-at'/>\n  <model type='virtio'/>\n</interface>",
      qemuNetdevArgs: ["-netdev", "bridge,id=net-br-at,br=br-at", "-device", "virtio-net-pci,netdev=net-br-at"],
    });
    expect(outs.libvirt).toBeUndefined();
    const news = await checked(bridgeProvider, { connection: conn(), name: "br-at", model: "e1000" });
    expect(await bridgeProvider.diff(id, outs, news)).toMatchObject({ changes: true, replaces: [] });
    const ifindex = outs.ifindex;
    const updated = (await bridgeProvider.update(id, outs, news)).outs;
    expect(updated).toMatchObject({ ifindex, model: "e1000", qemuNetdevArgs: ["-netdev", "bridge,id=net-br-at,br=br-at", "-device", "e1000,netdev=net-br-at"] });
    // State written before `model` existed reads as the default: no change by itself.
    const { model: _m, ...old } = outs;
    expect((await bridgeProvider.diff(id, old, await checked(bridgeProvider, { connection: conn(), name: "br-at" }))).changes).toBe(false);
    await bridgeProvider.delete(id, updated);
    expect(await snapshotHost(host())).toEqual(before);
  });
});
