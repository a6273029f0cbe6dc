import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { HostSnapshot, parseSnapshot } from "../../../../provider/observe";
import { renderScript } from "../../../../provider/render";
import { libvirtHostdevXml, pciOutputs, qemuDeviceArgs } from "../../../../provider/resources/pciPassthrough";
import { diskUsesOn, interfacesOn, parsePciView, pciObserveSection } from "../../../../provider/resources/pciPassthrough/observe";
import { planPci, planPciDelete, PciPlan, readState, stateFilePath } from "../../../../provider/resources/pciPassthrough/plan";
import { renderPciPlan } from "../../../../provider/resources/pciPassthrough/render";
import { PciPassthroughInputs, pciPassthroughStoredSchema } from "../../../../provider/resources/pciPassthrough/schema";
import { verifyPci } from "../../../../provider/resources/pciPassthrough/verify";
import { expectKvmnetThrow, kindAndHint } from "../../../support/expectError";

// Captured from the lab host (test/lab, q35 + intel-iommu, groupedNics) through SSH:
// 00:02.0 virtio-net eth0 (management and default route), 00:03.0 virtio-blk vda (/),
// 00:04.0 e1000 eth2 (group 3), 00:05.0 virtio-net eth1, group 7 = pcie-pci-bridge
// 01:00.0 + e1000s 02:01.0 (eth3) and 02:02.0 (eth4).
const fixture = (name: string) => fs.readFileSync(path.join(__dirname, "fixtures", `${name}.txt`), "utf8");
const PRISTINE = fixture("lab-pristine");
/** The same host after the provider bound 00:04.0 to vfio-pci (state file written). */
const ON_VFIO = fixture("lab-e1000-on-vfio");

const snapOf = (text: string): HostSnapshot => parseSnapshot(text, "fixture");
/** Replace a `dev <address> …` line of the pci section. */
const withDev = (text: string, address: string, driver: string, override = "(null)") =>
  text.replace(new RegExp(`^dev ${address} (\\S+ \\S+ \\S+) \\S+ (\\S+) .*$`, "m"), `dev ${address} $1 ${driver} $2 ${override}`);
const withState = (text: string, address: string, json: string) =>
  text.replace("@@kvmnet-begin state\n", `@@kvmnet-begin state\n@@kvmnet-file ${stateFilePath(address)}\n${json}\n`);
/** Extra lines appended to the pci section. */
const withPciLines = (text: string, lines: string[]) => text.replace(/\n@@kvmnet-end pci /, `\n${lines.join("\n")}\n@@kvmnet-end pci `);

const inputs = (over: Partial<PciPassthroughInputs> & { address: string }): PciPassthroughInputs => pciPassthroughStoredSchema.parse({ connection: { host: "h" }, ...over });

const expectError = expectKvmnetThrow;

const record = (address: string, originalDriver: string | null, originalInterfaces: string[] = []) => ({ address, originalDriver, originalOverride: null, originalInterfaces });

describe("the pci observe section", () => {
  const view = parsePciView(snapOf(PRISTINE));

  it("reads devices, groups, interfaces (virtio ones one level deeper) and disks", () => {
    expect(view.iommuGroupCount).toBe(8);
    expect(view.devices.get("0000:00:04.0")).toEqual({
      address: "0000:00:04.0",
      vendorId: "8086",
      deviceId: "100e",
      classCode: "020000",
      driver: "e1000",
      iommuGroup: 3,
      driverOverride: undefined,
    });
    expect(view.devices.get("0000:01:00.0")).toMatchObject({ classCode: "060400", driver: undefined, iommuGroup: 7 });
    expect(interfacesOn(view, "0000:00:02.0")).toEqual(["eth0"]);
    expect(interfacesOn(view, "0000:00:04.0")).toEqual(["eth2"]);
    // An interface behind a bridge runs through the bridge's path too.
    expect(interfacesOn(view, "0000:00:07.0")).toEqual(["eth3", "eth4"]);
    expect(diskUsesOn(view, "0000:00:03.0")).toEqual(["vda mounted at /"]);
    expect(diskUsesOn(view, "0000:00:04.0")).toEqual([]);
    expect(parsePciView(snapOf(ON_VFIO)).vfioNodes).toEqual(new Set(["vfio", "3"]));
  });

  it("follows device-mapper / md holders and sees swap", () => {
    const v = parsePciView(
      snapOf(
        withPciLines(PRISTINE, [
          "blk vdb 254:16 /sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb",
          "blk vdb1 254:17 /sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb/vdb1",
          "blk vdb2 254:18 /sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb/vdb2",
          "blk vdb3 254:19 /sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb/vdb3",
          "blk dm-0 253:0 /sys/devices/virtual/block/dm-0",
          "blk dm-1 253:1 /sys/devices/virtual/block/dm-1",
          "slave dm-0 vdb1",
          "slave dm-1 dm-0",
          "mnt 253:1 /dev/dm-1 /srv/my\\040data",
          "swap /dev/vdb2",
          "mnt 0:40 /dev/vdb3 /mnt/btrfs",
        ]),
      ),
    );
    expect(diskUsesOn(v, "0000:00:05.0")).toEqual(["vdb1 (through dm-0, dm-1) mounted at /srv/my data", "vdb2 used as swap", "vdb3 mounted at /mnt/btrfs"]);
  });

  it("renders as a section every observe and apply script of the kind carries", () => {
    const script = renderScript(renderPciPlan(planPci(inputs({ address: "0000:00:04.0" }), snapOf(PRISTINE))), [pciObserveSection]).text;
    expect(script).toContain("@@kvmnet-begin %s\\n' 'pci'");
    expect(script).toContain("/proc/self/mountinfo");
  });
});

describe("planPci", () => {
  const pristine = snapOf(PRISTINE);

  it("binds an e1000: records its driver first, loads vfio-pci, then override, unbind, probe", () => {
    const p = planPci(inputs({ address: "0000:00:04.0" }), pristine);
    expect(p.guards).toEqual([{ op: "driverIs", address: "0000:00:04.0", driver: "e1000" }]);
    expect(p.actions).toEqual([
      { op: "writeState", state: { address: "0000:00:04.0", devices: [record("0000:00:04.0", "e1000", ["eth2"])] }, previous: undefined },
      { op: "loadVfio" },
      { op: "bind", address: "0000:00:04.0", from: "e1000", override: null },
    ]);
  });

  it("has nothing to do when the device is bound and recorded", () => {
    expect(planPci(inputs({ address: "0000:00:04.0" }), snapOf(ON_VFIO))).toEqual({ guards: [], actions: [] });
  });

  it("re-binds a device taken back by hand, keeping the recorded original", () => {
    const takenBack = snapOf(withDev(ON_VFIO, "0000:00:04.0", "e1000"));
    const p = planPci(inputs({ address: "0000:00:04.0" }), takenBack);
    expect(p.actions).toEqual([{ op: "loadVfio" }, { op: "bind", address: "0000:00:04.0", from: "e1000", override: null }]);
  });

  it("adopts a device already on vfio-pci: its original is vfio-pci, so delete leaves it there", () => {
    const byHand = snapOf(withDev(PRISTINE, "0000:00:04.0", "vfio-pci", "vfio-pci").replace(/^net eth2 .*\n/m, ""));
    const p = planPci(inputs({ address: "0000:00:04.0" }), byHand);
    expect(p.actions).toEqual([
      {
        op: "writeState",
        state: { address: "0000:00:04.0", devices: [{ address: "0000:00:04.0", originalDriver: "vfio-pci", originalOverride: "vfio-pci", originalInterfaces: [] }] },
        previous: undefined,
      },
    ]);
  });

  it("refuses when the IOMMU is off, saying which kernel parameters to add", () => {
    const off = snapOf(PRISTINE.replace(/^iommu 8$/m, "iommu 0"));
    const msg = expectError(() => planPci(inputs({ address: "0000:00:04.0" }), off), "Unsupported", /IOMMU is off/);
    expect(msg).toMatch(/intel_iommu=on iommu=pt.*amd_iommu=on.*reboot/);
  });

  it("refuses a missing device without listing the host's devices", () => {
    const msg = expectError(() => planPci(inputs({ address: "0000:65:00.0" }), pristine), "NotFound", /PCI device 0000:65:00.0 is not on the host/);
    expect(msg).not.toMatch(/0000:00:0/);
  });

  it("refuses PCI bridges", () => {
    expectError(() => planPci(inputs({ address: "0000:01:00.0" }), pristine), "Unsupported", /is a PCI bridge \(class 060400\)/);
  });

  it("refuses the management NIC unless forced, naming the interface", () => {
    expectError(
      () => planPci(inputs({ address: "0000:00:02.0" }), pristine),
      "Conflict",
      /0000:00:02.0 is the NIC of eth0, the interface of this SSH management session[\s\S]*force: true/,
    );
    expect(planPci(inputs({ address: "0000:00:02.0", force: true }), pristine).actions.map((a) => a.op)).toEqual(["writeState", "loadVfio", "bind"]);
  });

  it("refuses the default route's NIC unless forced", () => {
    const routed = { ...pristine, defaultRouteInterface: "eth2" };
    expectError(() => planPci(inputs({ address: "0000:00:04.0" }), routed), "Conflict", /eth2, the interface of the default route/);
    expect(planPci(inputs({ address: "0000:00:04.0", force: true }), routed).actions.map((a) => a.op)).toEqual(["writeState", "loadVfio", "bind"]);
  });

  it("refuses a disk in use unless forced, saying where it is mounted", () => {
    expectError(() => planPci(inputs({ address: "0000:00:03.0" }), pristine), "Conflict", /0000:00:03.0 holds disks in use \(vda mounted at \/\)/);
    expect(planPci(inputs({ address: "0000:00:03.0", force: true }), pristine).actions.map((a) => a.op)).toEqual(["writeState", "loadVfio", "bind"]);
  });

  it("refuses a group that is not viable, listing the other endpoint but not the bridge", () => {
    const msg = expectError(() => planPci(inputs({ address: "0000:02:01.0" }), pristine), "Conflict", /IOMMU group 7 of 0000:02:01.0 is not viable.*0000:02:02.0 \(e1000\)/);
    expect(msg).not.toContain("0000:01:00.0");
    expect(msg).toMatch(/includeIommuGroup: true/);
    // Another endpoint without a driver, or on pci-stub / vfio-pci, keeps the group viable.
    for (const drv of ["-", "pci-stub", "vfio-pci"]) {
      expect(planPci(inputs({ address: "0000:02:01.0" }), snapOf(withDev(PRISTINE, "0000:02:02.0", drv))).actions.map((a) => a.op)).toEqual(["writeState", "loadVfio", "bind"]);
    }
  });

  it("with includeIommuGroup binds every endpoint of the group (not the bridge); the last-named NIC is bound first", () => {
    const p = planPci(inputs({ address: "0000:02:01.0", includeIommuGroup: true }), pristine);
    expect(p.actions).toEqual([
      {
        op: "writeState",
        state: { address: "0000:02:01.0", devices: [record("0000:02:01.0", "e1000", ["eth3"]), record("0000:02:02.0", "e1000", ["eth4"])] },
        previous: undefined,
      },
      { op: "loadVfio" },
      // eth4 first, so a failed bind's undo (which runs backwards) returns eth3's NIC first and both keep their names.
      { op: "bind", address: "0000:02:02.0", from: "e1000", override: null },
      { op: "bind", address: "0000:02:01.0", from: "e1000", override: null },
    ]);
  });

  it("gives NICs back in natural order of their old names, so the kernel hands each its old ethN", () => {
    const state = { address: "0000:02:01.0", devices: [record("0000:02:01.0", "e1000", ["eth10"]), record("0000:02:02.0", "e1000", ["eth9"])] };
    let text = withDev(withDev(PRISTINE, "0000:02:01.0", "vfio-pci", "vfio-pci"), "0000:02:02.0", "vfio-pci", "vfio-pci");
    text = withState(text, "0000:02:01.0", JSON.stringify(state));
    expect(planPciDelete(inputs({ address: "0000:02:01.0", includeIommuGroup: true }), snapOf(text)).actions.map((a) => a.op + " " + ("address" in a ? a.address : ""))).toEqual([
      "giveBack 0000:02:02.0",
      "giveBack 0000:02:01.0",
      "removeState 0000:02:01.0",
    ]);
  });

  it("turning includeIommuGroup off gives the others back, so it is refused while that breaks the group", () => {
    let text = withDev(withDev(PRISTINE, "0000:02:01.0", "vfio-pci", "vfio-pci"), "0000:02:02.0", "vfio-pci", "vfio-pci");
    text = withState(text, "0000:02:01.0", JSON.stringify({ address: "0000:02:01.0", devices: [record("0000:02:01.0", "e1000"), record("0000:02:02.0", "e1000")] }));
    expectError(() => planPci(inputs({ address: "0000:02:01.0" }), snapOf(text)), "Conflict", /would be bound to host drivers: 0000:02:02.0 \(back to e1000\)/);
    // When the other device had no driver before, giving it back keeps the group viable.
    const noDriver = text.replace(/"address":"0000:02:02.0","originalDriver":"e1000"/, '"address":"0000:02:02.0","originalDriver":null');
    const p = planPci(inputs({ address: "0000:02:01.0" }), snapOf(noDriver));
    expect(p.actions).toEqual([
      {
        op: "writeState",
        state: { address: "0000:02:01.0", devices: [record("0000:02:01.0", "e1000")] },
        previous: { address: "0000:02:01.0", devices: [record("0000:02:01.0", "e1000"), record("0000:02:02.0", null)] },
      },
      { op: "giveBack", address: "0000:02:02.0", to: null, override: null },
    ]);
  });
});

describe("planPciDelete", () => {
  it("gives the device back to the recorded driver and removes the state", () => {
    const p = planPciDelete(inputs({ address: "0000:00:04.0" }), snapOf(ON_VFIO));
    expect(p.guards).toEqual([{ op: "driverIs", address: "0000:00:04.0", driver: "vfio-pci" }]);
    expect(p.actions).toEqual([
      { op: "giveBack", address: "0000:00:04.0", to: "e1000", override: null },
      { op: "removeState", address: "0000:00:04.0" },
    ]);
  });

  it("only restores driver_override of a device taken back by hand, and gives a group back in address order when names are unknown", () => {
    const takenBack = snapOf(withDev(ON_VFIO, "0000:00:04.0", "e1000", "vfio-pci"));
    expect(planPciDelete(inputs({ address: "0000:00:04.0" }), takenBack).actions).toEqual([
      { op: "restoreOverride", address: "0000:00:04.0", override: null },
      { op: "removeState", address: "0000:00:04.0" },
    ]);
    let group = withDev(withDev(PRISTINE, "0000:02:01.0", "vfio-pci", "vfio-pci"), "0000:02:02.0", "vfio-pci", "vfio-pci");
    group = withState(group, "0000:02:01.0", JSON.stringify({ address: "0000:02:01.0", devices: [record("0000:02:01.0", "e1000"), record("0000:02:02.0", "e1000")] }));
    expect(planPciDelete(inputs({ address: "0000:02:01.0", includeIommuGroup: true }), snapOf(group)).actions.map((a) => a.op + " " + ("address" in a ? a.address : ""))).toEqual([
      "giveBack 0000:02:01.0",
      "giveBack 0000:02:02.0",
      "removeState 0000:02:01.0",
    ]);
  });

  it("does nothing without a state file (after a reboot), even for a device on vfio-pci", () => {
    expect(planPciDelete(inputs({ address: "0000:00:04.0" }), snapOf(withDev(PRISTINE, "0000:00:04.0", "vfio-pci")))).toEqual({ guards: [], actions: [] });
  });

  it("reads a damaged state file as 'exists, originals lost' and drops invalid driver names", () => {
    expect(readState(snapOf(withState(PRISTINE, "0000:00:04.0", "{not json")), "0000:00:04.0")).toEqual({ address: "0000:00:04.0", devices: [] });
    const evil = JSON.stringify({
      devices: [
        { address: "0000:00:04.0", originalDriver: "../../x", originalOverride: "a b" },
        { address: "../x", originalDriver: "e1000" },
      ],
    });
    expect(readState(snapOf(withState(PRISTINE, "0000:00:04.0", evil)), "0000:00:04.0")?.devices).toEqual([
      { address: "0000:00:04.0", originalDriver: null, originalOverride: null, originalInterfaces: [] },
    ]);
  });
});

describe("rendered scripts", () => {
  const render = (p: PciPlan) => renderScript(renderPciPlan(p), [pciObserveSection]).text;

  it("are valid sh with every value quoted; an unbind's undo restores driver_override before binding back", () => {
    const bind = render(planPci(inputs({ address: "0000:02:02.0", includeIommuGroup: true }), snapOf(PRISTINE)));
    const del = render(planPciDelete(inputs({ address: "0000:00:04.0" }), snapOf(ON_VFIO)));
    for (const s of [bind, del]) execFileSync("sh", ["-n"], { input: s });
    expect(bind).toContain("printf '%s\\n' 'vfio-pci' > '/sys/bus/pci/devices/0000:02:02.0/driver_override'");
    expect(bind).toContain("printf '%s' '0000:02:02.0' > '/sys/bus/pci/devices/0000:02:02.0/driver/unbind'");
    expect(bind).toContain("printf '%s' '0000:02:01.0' > '/sys/bus/pci/drivers_probe'");
    // The unbind's undo restores driver_override before binding the old driver again.
    expect(bind).toContain("printf '\\n' > '/sys/bus/pci/devices/0000:02:02.0/driver_override'; printf '%s' '0000:02:02.0' > '/sys/bus/pci/drivers/e1000/bind'");
    expect(del).toContain("printf '%s' '0000:00:04.0' > '/sys/bus/pci/drivers/vfio-pci/unbind'");
    expect(del).toContain("printf '%s' '0000:00:04.0' > '/sys/bus/pci/drivers/e1000/bind'");
    expect(del).toContain("rm -f '/run/kvmnet/state/pci/0000:00:04.0.json'");
  });

  it("refuse a driver name that is not one (second fence)", () => {
    expect(() => renderPciPlan({ guards: [], actions: [{ op: "giveBack", address: "0000:00:04.0", to: "../../../tmp", override: null }] })).toThrow(/not a driver name/);
    expect(() => renderPciPlan({ guards: [], actions: [{ op: "removeState", address: "0000:00:04.0;id" }] })).toThrow(/not a canonical PCI address/);
  });
});

describe("outputs and verify", () => {
  it("report what a VM resource needs, and the driver as the host has it", () => {
    const outs = pciOutputs(inputs({ address: "0000:00:04.0" }), snapOf(ON_VFIO));
    expect(outs).toMatchObject({
      address: "0000:00:04.0",
      driver: "vfio-pci",
      iommuGroup: 3,
      vendorId: "8086",
      deviceId: "100e",
      originalDriver: "e1000",
      currentDriver: "vfio-pci",
      vfioDevice: "/dev/vfio/3",
      groupDevices: ["0000:00:04.0"],
      boundDevices: ["0000:00:04.0"],
      qemuDeviceArgs: ["-device", "vfio-pci,host=0000:00:04.0"],
    });
    expect(outs).not.toHaveProperty("name");
    expect(outs?.libvirtHostdevXml).toBe(
      "<hostdev mode='subsystem' type='pci' managed='no'>\n  <source>\n    <address domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>\n  </source>\n</hostdev>",
    );
    const drifted = pciOutputs(inputs({ address: "0000:00:04.0" }), snapOf(withDev(ON_VFIO, "0000:00:04.0", "e1000")));
    expect(drifted).toMatchObject({ driver: "e1000", currentDriver: "e1000", originalDriver: "e1000" });
    expect(pciOutputs(inputs({ address: "0000:00:04.0" }), snapOf(withDev(ON_VFIO, "0000:00:04.0", "-")))).toMatchObject({ driver: "", currentDriver: null });
    // No state file (never created, or the host rebooted): gone.
    expect(pciOutputs(inputs({ address: "0000:00:04.0" }), snapOf(PRISTINE))).toBeUndefined();
  });

  it("libvirt XML and QEMU arguments cover every bound device", () => {
    expect(qemuDeviceArgs(["0000:02:01.0", "0000:02:02.0"])).toEqual(["-device", "vfio-pci,host=0000:02:01.0", "-device", "vfio-pci,host=0000:02:02.0"]);
    expect(libvirtHostdevXml(["0000:02:01.0", "0000:02:02.0"]).match(/<hostdev /g)).toHaveLength(2);
    expect(libvirtHostdevXml(["abcd:ef:1f.7"])).toContain("<address domain='0xabcd' bus='0xef' slot='0x1f' function='0x7'/>");
  });

  it("verify names the driver, the vfio node and the state file", () => {
    expect(verifyPci(inputs({ address: "0000:00:04.0" }), snapOf(ON_VFIO))).toEqual([]);
    expect(verifyPci(inputs({ address: "0000:00:04.0" }), snapOf(PRISTINE))).toEqual([
      "pci 0000:00:04.0 driver desired vfio-pci, current e1000",
      "pci 0000:00:04.0 /dev/vfio/3 desired present, current absent",
      "pci 0000:00:04.0 state file /run/kvmnet/state/pci/0000:00:04.0.json desired present, current absent",
    ]);
  });
});

/**
 * #14 item 7: a create whose result the engine never saw. PciPassthrough's
 * create plans from its own state file (/run/kvmnet/state/pci/<address>.json,
 * written before the first bind), like an update, so the retry converges by
 * itself, keeps the driver recorded before the lost create, and delete gives
 * the device back to it. The hints of its Conflicts are asserted word for word.
 */
describe("a create retried after its result was lost", () => {
  const pristine = snapOf(PRISTINE);

  it("converges with nothing to do, and delete still gives the device back to its original driver", () => {
    const onVfio = snapOf(ON_VFIO);
    expect(planPci(inputs({ address: "0000:00:04.0" }), onVfio)).toEqual({ guards: [], actions: [] });
    expect(readState(onVfio, "0000:00:04.0")?.devices).toEqual([record("0000:00:04.0", "e1000")]);
    expect(planPciDelete(inputs({ address: "0000:00:04.0" }), onVfio).actions[0]).toEqual({ op: "giveBack", address: "0000:00:04.0", to: "e1000", override: null });
  });

  it("converges when the kill came between the state file and the bind: the bind is finished, the original kept", () => {
    const halfway = snapOf(withState(PRISTINE, "0000:00:04.0", JSON.stringify({ address: "0000:00:04.0", devices: [record("0000:00:04.0", "e1000", ["eth2"])] })));
    expect(planPci(inputs({ address: "0000:00:04.0" }), halfway).actions).toEqual([{ op: "loadVfio" }, { op: "bind", address: "0000:00:04.0", from: "e1000", override: null }]);
  });

  it("prints hints that say what to set", () => {
    expect(kindAndHint(() => planPci(inputs({ address: "0000:02:01.0" }), pristine))).toEqual({
      kind: "Conflict",
      hint: "a guest can only get a device whose whole IOMMU group is on vfio-pci (or pci-stub, or no driver): set includeIommuGroup: true to bind every device of group 7, or unbind those devices first",
    });
    expect(kindAndHint(() => planPci(inputs({ address: "0000:00:02.0" }), pristine))).toEqual({
      kind: "Conflict",
      hint: "choose another device, or set force: true if you have another way into the host (a console) and accept what breaks",
    });
  });
});
