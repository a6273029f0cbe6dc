/** Compare the host after apply with what was asked (nmstate-style messages). Pure. */
import type { HostSnapshot } from "../../observe";
import { parsePciView } from "./observe";
import { devicesToHold, readState, stateFilePath } from "./plan";
import { PciPassthroughInputs, VFIO_PCI } from "./schema";

/** Every way the host differs from `desired`; empty when it matches. */
export function verifyPci(desired: PciPassthroughInputs, snap: HostSnapshot): string[] {
  const view = parsePciView(snap);
  const device = view.devices.get(desired.address);
  if (!device) return [`pci ${desired.address} is not on the host`];
  let hold: string[];
  try {
    hold = devicesToHold(desired, view);
  } catch (e) {
    return [`pci ${desired.address}: ${(e as Error).message.split("\n")[0]}`];
  }
  const problems: string[] = [];
  for (const a of hold) {
    const d = view.devices.get(a);
    if (d?.driver !== VFIO_PCI) problems.push(`pci ${a} driver desired ${VFIO_PCI}, current ${d ? (d.driver ?? "none") : "device gone"}`);
  }
  if (device.iommuGroup !== undefined && !view.vfioNodes.has(String(device.iommuGroup))) {
    problems.push(`pci ${desired.address} /dev/vfio/${device.iommuGroup} desired present, current absent`);
  }
  if (!readState(snap, desired.address)) problems.push(`pci ${desired.address} state file ${stateFilePath(desired.address)} desired present, current absent`);
  return problems;
}
