/**
 * The PciPassthrough kind: schema · observe · plan · render · verify ·
 * persist (a boot-time udev rule and unit), wired into the lifecycle.
 */
import { inputKeysOf } from "../../fields";
import { sameHost } from "../../identity";
import type { HostSnapshot } from "../../observe";
import { withPersistence } from "../../persist";
import type { KindProvider, KindSpec } from "../kind";
import { makeKindProvider } from "../lifecycle";
import { groupMembers, parsePciView, pciObserveSection } from "./observe";
import { pciDisarmSteps, pciPersist } from "./persist";
import { planPci, planPciDelete, readState } from "./plan";
import { renderPciPlan } from "./render";
import { PCI_KIND, PciPassthroughInputs, pciPassthroughInputsSchema, pciPassthroughStoredSchema, VFIO_PCI } from "./schema";
import { verifyPci } from "./verify";

export { normalisePciAddress, pciPassthroughInputsSchema, pciPassthroughStoredSchema } from "./schema";
export type { PciPassthroughInputs } from "./schema";

export const PCI_INPUT_KEYS = inputKeysOf(pciPassthroughInputsSchema);

/** `<hostdev>` elements for libvirt domain XML, one per device (managed='no': this resource does the binding). */
export function libvirtHostdevXml(addresses: string[]): string {
  return addresses
    .map((a) => {
      const [domain, bus, slotFn] = a.split(":");
      const [slot, fn] = slotFn.split(".");
      return [
        "<hostdev mode='subsystem' type='pci' managed='no'>",
        "  <source>",
        `    <address domain='0x${domain}' bus='0x${bus}' slot='0x${slot}' function='0x${fn}'/>`,
        "  </source>",
        "</hostdev>",
      ].join("\n");
    })
    .join("\n");
}

/** QEMU arguments that give a guest the devices: `-device vfio-pci,host=<address>` each. */
export function qemuDeviceArgs(addresses: string[]): string[] {
  return addresses.flatMap((a) => ["-device", `vfio-pci,host=${a}`]);
}

/**
 * Outputs: the inputs, with `driver` as the host has it (vfio-pci, or the
 * driver that took a device back: refresh shows that as drift and the next up
 * binds it again), plus what a VM resource needs. Undefined (gone) when the
 * device or the resource's state file is not on the host.
 */
export function pciOutputs(inputs: PciPassthroughInputs, snap: HostSnapshot): Record<string, unknown> | undefined {
  const view = parsePciView(snap);
  const device = view.devices.get(inputs.address);
  const state = readState(snap, inputs.address);
  if (!device || !state) return undefined;
  const held = state.devices.length > 0 ? state.devices.map((d) => d.address) : [inputs.address];
  const notOnVfio = held.map((a) => view.devices.get(a)).find((d) => d !== undefined && d.driver !== VFIO_PCI);
  const group = device.iommuGroup;
  const out: Record<string, unknown> = {};
  for (const k of PCI_INPUT_KEYS) out[k] = inputs[k];
  return {
    ...out,
    driver: notOnVfio ? (notOnVfio.driver ?? "") : VFIO_PCI,
    iommuGroup: group ?? null,
    vendorId: device.vendorId,
    deviceId: device.deviceId,
    originalDriver: state.devices.find((d) => d.address === inputs.address)?.originalDriver ?? null,
    currentDriver: device.driver ?? null,
    vfioDevice: group !== undefined && view.vfioNodes.has(String(group)) ? `/dev/vfio/${group}` : null,
    groupDevices: group !== undefined ? groupMembers(view, group).map((d) => d.address) : [inputs.address],
    boundDevices: held,
    libvirtHostdevXml: libvirtHostdevXml(held),
    qemuDeviceArgs: qemuDeviceArgs(held),
  };
}

const spec: KindSpec<PciPassthroughInputs> = {
  kind: PCI_KIND,
  schema: pciPassthroughStoredSchema,
  inputKeys: PCI_INPUT_KEYS,
  derivedInputs: ["name"],
  replaces(olds, news) {
    const r: string[] = [];
    if (olds.address !== news.address) r.push("address");
    if (!sameHost(olds.connection, news.connection)) r.push("connection");
    return r;
  },
  // On one host, give the old device back before binding the new one: they may share an IOMMU group.
  deleteBeforeReplace: (olds, news) => sameHost(olds.connection, news.connection),
  plan: (desired, snap) => withPersistence(renderPciPlan(planPci(desired, snap)), pciDisarmSteps(desired, snap, false)),
  planDelete: (props, snap) => withPersistence(renderPciPlan(planPciDelete(props, snap)), pciDisarmSteps(props, snap, true)),
  verify: verifyPci,
  outputs: pciOutputs,
  observeExtra: [pciObserveSection],
  persist: pciPersist,
};

/**
 * The lifecycle keys everything on a `name`; the schema derives it from the
 * canonical address and check() keeps it out of stored inputs.
 *
 * Two schemas: a program may only ask for driver "vfio-pci" (check), while
 * stored state holds the driver the host had at the last refresh (e.g.
 * "e1000" after someone took the device back), so the diff shows
 * `driver: "e1000" => "vfio-pci"` and update binds it again.
 */
const programSchemaProvider = makeKindProvider<PciPassthroughInputs>({ ...spec, schema: pciPassthroughInputsSchema });
export const pciPassthroughProvider: KindProvider = {
  ...makeKindProvider<PciPassthroughInputs>(spec),
  check: (olds, news) => programSchemaProvider.check(olds, news),
};
