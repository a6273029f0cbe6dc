/**
 * PciPassthrough on a real kernel: the lab host (testbed/labHost.ts, q35 +
 * intel-iommu) with its passthrough candidates — an e1000 at 00:04.0 (its own
 * IOMMU group), a virtio-net at 00:05.0, and (groupedNics) two e1000s behind a
 * PCIe-to-PCI bridge that share one group — driven through the provider's
 * lifecycle over SSH, exactly as the engine calls it.
 *
 * One VM for the file's main tests; the IOMMU-off case needs a boot of its own
 * (intel_iommu=off), made after the first VM is shut down, so at most one of
 * this file's VMs runs at a time. Needs root; under CI=true a machine that
 * cannot run lab hosts fails here (checkLabSupport throws), never skips.
 */
import { closeAllConnections, hostFor } from "../../provider/host";
import { apply, observe } from "../../provider/apply";
import type { KindProvider } from "../../provider/resources/kind";
import { pciPassthroughProvider as provider } from "../../provider/resources/pciPassthrough";
import { pciObserveSection } from "../../provider/resources/pciPassthrough/observe";
import { planPci } from "../../provider/resources/pciPassthrough/plan";
import { renderPciPlan } from "../../provider/resources/pciPassthrough/render";
import { pciPassthroughStoredSchema } from "../../provider/resources/pciPassthrough/schema";
import { literal } from "../../provider/shell";
import { bootLabHost, checkLabSupport, cleanupStaleLab, LabHost } from "../../testbed/labHost";

jest.setTimeout(30 * 60_000);

const E1000 = "0000:00:04.0";
const MGMT_NIC = "0000:00:02.0";
const ROOT_DISK = "0000:00:03.0";
const GROUP_A = "0000:02:01.0";
const GROUP_B = "0000:02:02.0";
const GROUP_BRIDGE = "0000:01:00.0";

const timings: Record<string, number> = {};
afterAll(() => {
  console.log(`pci lab timings: ${JSON.stringify(timings)}`);
});

function connectionOf(h: LabHost) {
  return { host: h.address, port: h.port, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint };
}

/** check() then create(), as the engine does; returns id and outputs. */
async function create(p: KindProvider, h: LabHost, args: Record<string, unknown>) {
  const checked = await p.check({}, { connection: connectionOf(h), ...args });
  expect(checked.failures).toBeUndefined();
  return { checked: checked.inputs, ...(await p.create(checked.inputs)) };
}

async function driverOf(h: LabHost, address: string): Promise<string> {
  return (await h.exec(`d=$(readlink /sys/bus/pci/devices/${address}/driver) || d=; echo "\${d##*/}"`)).stdout.trim();
}

async function overrideOf(h: LabHost, address: string): Promise<string> {
  return (await h.exec(`cat /sys/bus/pci/devices/${address}/driver_override`)).stdout.trim();
}

async function ifnameOfMac(h: LabHost, mac: string): Promise<string | undefined> {
  const links = JSON.parse((await h.exec("ip -j link")).stdout) as { ifname: string; address?: string }[];
  return links.find((l) => l.address === mac)?.ifname;
}

/**
 * What passthrough may change on the host: each PCI device's driver and
 * driver_override, the network interfaces (name and MAC), /dev/vfio and our
 * state directory. (Link up/down is left out: NetworkManager brings a returned
 * NIC up on its own schedule.)
 */
async function pciSnapshot(h: LabHost): Promise<string> {
  return (
    await h.exec(
      'for d in /sys/bus/pci/devices/*; do l=$(readlink "$d/driver") || l=; echo "${d##*/} ${l##*/} $(cat "$d/driver_override")"; done; ' +
        "ip -br link | awk '{print $1, $3}' | sort; ls /dev/vfio; ls -R /run/kvmnet 2>/dev/null; true",
    )
  ).stdout;
}

describe("PciPassthrough on the lab host", () => {
  let h: LabHost;

  beforeAll(async () => {
    checkLabSupport();
    cleanupStaleLab();
    // Cold, no snapshot: the only boot with groupedNics alone in the tier, so saving it
    // would cost a settle, a save and a restore (~6 s) and never be used (#15).
    h = await bootLabHost({ groupedNics: true, snapshot: false });
    timings.bootMs = h.bootMs;
  });

  afterAll(async () => {
    closeAllConnections();
    await h?.shutdown();
  });

  it("binds the e1000 to vfio-pci (short address normalised); delete gives it back and its interface returns with the same name", async () => {
    const before = await pciSnapshot(h);
    const ifname = await ifnameOfMac(h, h.macs.e1000!);
    expect(ifname).toMatch(/^eth\d$/);
    expect(await driverOf(h, E1000)).toBe("e1000");

    let t = Date.now();
    const { id, outs, checked } = await create(provider, h, { address: "00:04.0" });
    timings.createMs = Date.now() - t;
    expect(checked.address).toBe(E1000);
    expect(id).toBe(`127.0.0.1/pcipassthrough/${E1000}`);
    const group = (await h.exec(`readlink /sys/bus/pci/devices/${E1000}/iommu_group`)).stdout.trim().split("/").pop();
    expect(outs).toMatchObject({
      address: E1000,
      driver: "vfio-pci",
      iommuGroup: Number(group),
      vendorId: "8086",
      deviceId: "100e",
      originalDriver: "e1000",
      currentDriver: "vfio-pci",
      vfioDevice: `/dev/vfio/${group}`,
      groupDevices: [E1000],
      boundDevices: [E1000],
      qemuDeviceArgs: ["-device", `vfio-pci,host=${E1000}`],
    });
    expect(outs.libvirtHostdevXml).toContain("<address domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>");
    // The real kernel agrees: vfio-pci holds it, the group's VFIO node is a character device, the NIC is gone.
    expect(await driverOf(h, E1000)).toBe("vfio-pci");
    await h.exec(`test -c /dev/vfio/${group}`);
    expect(await ifnameOfMac(h, h.macs.e1000!)).toBeUndefined();
    expect(JSON.parse((await h.exec(`cat /run/kvmnet/state/pci/${E1000}.json`)).stdout)).toEqual({
      address: E1000,
      devices: [{ address: E1000, originalDriver: "e1000", originalOverride: null, originalInterfaces: [ifname] }],
    });

    // read sees the same; a second create-equivalent plan has nothing to do.
    t = Date.now();
    const read = await provider.read(id, outs);
    timings.readMs = Date.now() - t;
    expect(read.props).toEqual(outs);
    expect(read.inputs?.driver).toBe("vfio-pci");

    t = Date.now();
    await provider.delete(id, outs);
    timings.deleteMs = Date.now() - t;
    expect(await driverOf(h, E1000)).toBe("e1000");
    expect(await overrideOf(h, E1000)).toBe("(null)");
    expect(await ifnameOfMac(h, h.macs.e1000!)).toBe(ifname);
    expect(await pciSnapshot(h)).toBe(before);
    expect((await provider.read(id, outs)).id).toBe("");
  });

  it("refuses the management NIC (eth0's virtio device) without force, naming the interface; nothing changes", async () => {
    const before = await pciSnapshot(h);
    const checked = await provider.check({}, { connection: connectionOf(h), address: MGMT_NIC });
    await expect(provider.create(checked.inputs)).rejects.toThrow(
      /Conflict: refusing to pass through: 0000:00:02.0 is the NIC of eth0, the interface of this SSH management session[\s\S]*force: true/,
    );
    expect(await driverOf(h, MGMT_NIC)).toBe("virtio-pci");
    expect(await pciSnapshot(h)).toBe(before);
  });

  it("refuses the root disk's controller without force, saying where it is mounted", async () => {
    const checked = await provider.check({}, { connection: connectionOf(h), address: ROOT_DISK });
    await expect(provider.create(checked.inputs)).rejects.toThrow(/0000:00:03.0 holds disks in use \(vda mounted at \/\)/);
    expect(await driverOf(h, ROOT_DISK)).toBe("virtio-pci");
  });

  it("refuses a device whose IOMMU group is not viable, listing the other device", async () => {
    // The lab's grouped NICs really do share one group with their bridge.
    const members = (await h.exec(`ls /sys/bus/pci/devices/${GROUP_A}/iommu_group/devices`)).stdout.trim().split(/\s+/);
    expect(members.sort()).toEqual([GROUP_BRIDGE, GROUP_A, GROUP_B].sort());
    const before = await pciSnapshot(h);
    const checked = await provider.check({}, { connection: connectionOf(h), address: GROUP_A });
    await expect(provider.create(checked.inputs)).rejects.toThrow(
      /IOMMU group \d+ of 0000:02:01.0 is not viable: other devices in it are bound to host drivers: 0000:02:02.0 \(e1000\)[\s\S]*includeIommuGroup: true/,
    );
    expect(await pciSnapshot(h)).toBe(before);
  });

  it("with includeIommuGroup binds both endpoints (not the bridge), and delete returns both", async () => {
    const before = await pciSnapshot(h);
    const names = await Promise.all(h.macs.grouped!.map((m) => ifnameOfMac(h, m)));
    const { id, outs } = await create(provider, h, { address: GROUP_A, includeIommuGroup: true });
    expect(await driverOf(h, GROUP_A)).toBe("vfio-pci");
    expect(await driverOf(h, GROUP_B)).toBe("vfio-pci");
    expect(await driverOf(h, GROUP_BRIDGE)).toBe("");
    await h.exec(`test -c ${outs.vfioDevice as string}`);
    expect(outs.boundDevices).toEqual([GROUP_A, GROUP_B]);
    expect(outs.groupDevices).toEqual([GROUP_A, GROUP_B, GROUP_BRIDGE].sort());
    expect(outs.qemuDeviceArgs).toEqual(["-device", `vfio-pci,host=${GROUP_A}`, "-device", `vfio-pci,host=${GROUP_B}`]);
    await provider.delete(id, outs);
    expect(await driverOf(h, GROUP_A)).toBe("e1000");
    expect(await driverOf(h, GROUP_B)).toBe("e1000");
    expect(await Promise.all(h.macs.grouped!.map((m) => ifnameOfMac(h, m)))).toEqual(names);
    expect(await pciSnapshot(h)).toBe(before);
  });

  it("a refresh after someone rebinds the device to e1000 by hand shows drift, and update binds it again", async () => {
    const { id, outs, checked } = await create(provider, h, { address: E1000 });
    await h.exec(
      `printf '\\n' > /sys/bus/pci/devices/${E1000}/driver_override && printf ${E1000} > /sys/bus/pci/drivers/vfio-pci/unbind && printf ${E1000} > /sys/bus/pci/drivers/e1000/bind`,
    );
    expect(await driverOf(h, E1000)).toBe("e1000");
    const read = await provider.read(id, outs);
    expect(read.id).toBe(id);
    expect(read.props).toMatchObject({ driver: "e1000", currentDriver: "e1000", originalDriver: "e1000", vfioDevice: null });
    expect(read.inputs?.driver).toBe("e1000");
    // The engine diffs the refreshed inputs against the program's: an in-place update of `driver`.
    expect(await provider.diff(id, read.props, checked)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    const updated = await provider.update(id, read.props, checked);
    expect(updated.outs).toMatchObject({ driver: "vfio-pci", currentDriver: "vfio-pci", originalDriver: "e1000" });
    expect(await driverOf(h, E1000)).toBe("vfio-pci");
    await provider.delete(id, updated.outs);
    expect(await driverOf(h, E1000)).toBe("e1000");
  });

  it("adopts a device someone bound to vfio-pci by hand, and delete leaves it there (as the host had it)", async () => {
    await h.exec(
      `echo vfio-pci > /sys/bus/pci/devices/${E1000}/driver_override && printf ${E1000} > /sys/bus/pci/devices/${E1000}/driver/unbind && printf ${E1000} > /sys/bus/pci/drivers_probe`,
    );
    try {
      const before = await pciSnapshot(h);
      const { id, outs } = await create(provider, h, { address: E1000 });
      expect(outs).toMatchObject({ driver: "vfio-pci", originalDriver: "vfio-pci", currentDriver: "vfio-pci" });
      await provider.delete(id, outs);
      expect(await pciSnapshot(h)).toBe(before);
    } finally {
      await h.exec(
        `printf '\\n' > /sys/bus/pci/devices/${E1000}/driver_override; printf ${E1000} > /sys/bus/pci/drivers/vfio-pci/unbind; printf ${E1000} > /sys/bus/pci/drivers/e1000/bind`,
        { allowFail: true },
      );
    }
    expect(await driverOf(h, E1000)).toBe("e1000");
  });

  it("force passes through the NIC of the default route (the SSH session rides the connected route on eth0)", async () => {
    const ifname = (await ifnameOfMac(h, h.macs.e1000!))!;
    await h.exec(`ip link set ${ifname} up && ip addr add 192.0.2.15/24 dev ${ifname} && ip route del default && ip route add default via 192.0.2.1 dev ${ifname} onlink`);
    try {
      const refused = await provider.check({}, { connection: connectionOf(h), address: E1000 });
      await expect(provider.create(refused.inputs)).rejects.toThrow(new RegExp(`0000:00:04.0 is the NIC of ${ifname}, the interface of the default route`));
      expect(await driverOf(h, E1000)).toBe("e1000");
      const { id, outs } = await create(provider, h, { address: E1000, force: true });
      expect(outs.force).toBe(true);
      expect(await driverOf(h, E1000)).toBe("vfio-pci");
      // What force breaks: the interface and its default route are gone.
      expect((await h.exec("ip -j route show default")).stdout.trim()).toBe("[]");
      await provider.delete(id, outs);
      expect(await driverOf(h, E1000)).toBe("e1000");
      expect(await ifnameOfMac(h, h.macs.e1000!)).toBe(ifname);
    } finally {
      await h.exec(`ip route del default 2>/dev/null; ip addr flush dev ${ifname} 2>/dev/null; ip route add default via 10.0.2.2 dev eth0`, { allowFail: true });
    }
    expect((await h.exec("ip -j route show default")).stdout).toContain('"dev":"eth0"');
  });

  it("a failure after binding undoes every step: both grouped NICs back on e1000, driver_override cleared, no state file", async () => {
    const before = await pciSnapshot(h);
    const host = hostFor(connectionOf(h));
    const desired = pciPassthroughStoredSchema.parse({ connection: connectionOf(h), address: GROUP_B, includeIommuGroup: true });
    const plan = renderPciPlan(planPci(desired, await observe(host, [pciObserveSection])));
    plan.steps.push({ description: "fail on purpose after both devices are bound", run: literal("false") });
    await expect(apply(host, plan, [pciObserveSection])).rejects.toThrow(/step failed: fail on purpose[\s\S]*the steps already applied were undone/);
    expect(await driverOf(h, GROUP_A)).toBe("e1000");
    expect(await driverOf(h, GROUP_B)).toBe("e1000");
    expect(await pciSnapshot(h)).toBe(before);
  });
});

describe("PciPassthrough on a lab host booted with intel_iommu=off", () => {
  let h: LabHost;

  beforeAll(async () => {
    // Cold, no snapshot: the only boot with this kernel command line (a snapshot would be
    // built and never restored), and what is proven depends on how this kernel booted.
    h = await bootLabHost({ kernelArgs: ["intel_iommu=off"], snapshot: false });
    timings.iommuOffBootMs = h.bootMs;
  });

  afterAll(async () => {
    closeAllConnections();
    await h?.shutdown();
  });

  it("refuses with the IOMMU-off error naming the kernel parameters, and changes nothing", async () => {
    expect((await h.exec("ls /sys/kernel/iommu_groups | wc -l")).stdout.trim()).toBe("0");
    const checked = await provider.check({}, { connection: connectionOf(h), address: E1000 });
    await expect(provider.create(checked.inputs)).rejects.toThrow(/Unsupported: the host's IOMMU is off[\s\S]*intel_iommu=on iommu=pt[\s\S]*amd_iommu=on/);
    expect(await driverOf(h, E1000)).toBe("e1000");
    expect((await h.exec("ls /run/kvmnet 2>/dev/null | wc -l")).stdout.trim()).toBe("0");
  });
});
