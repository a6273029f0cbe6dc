/**
 * PciPassthrough planning: desired inputs vs the observed host → actions. Pure.
 *
 * What a resource holds is written down on the host, in a state file per
 * resource (STATE_DIR/pci/<address>.json): every device it bound to vfio-pci
 * with the driver and driver_override that device had before. Delete gives
 * each device back to that driver even when the host's view changed since
 * (a refresh that saw the device on vfio-pci cannot tell what it came from).
 * The state file is also what makes the resource exist: without it (after a
 * reboot, which empties /run) a refresh reports the resource gone, unless the
 * binding persists: then the boot-time unit (persist.ts) binds the devices
 * again and writes the same state file before sysinit.target.
 */
import { KvmnetError } from "../../errors";
import type { HostSnapshot } from "../../observe";
import { STATE_DIR } from "../../observe";
import { diskUsesOn, groupMembers, interfacesOn, isBridge, parsePciView, PciDevice, PciView } from "./observe";
import { CANONICAL_PCI_ADDRESS, hostDriverName, PciPassthroughInputs, VFIO_PCI } from "./schema";

/** Drivers that leave an IOMMU group viable for vfio (the kernel's own rule, drivers/vfio/group.c). */
const VIABLE_DRIVERS = new Set([VFIO_PCI, "pci-stub"]);

export const PCI_STATE_DIR = `${STATE_DIR}/pci`;

export function stateFilePath(address: string): string {
  return `${PCI_STATE_DIR}/${address}.json`;
}

/** One device a resource holds, and what it had before. */
export interface DeviceRecord {
  address: string;
  /** Driver bound before (null: none). "vfio-pci" when the device was already on it (adopted). */
  originalDriver: string | null;
  /** driver_override before (null: unset). */
  originalOverride: string | null;
  /** Network interfaces the device had: devices are given back in this order (see {@link returnOrder}). */
  originalInterfaces: string[];
}

export interface PciState {
  address: string;
  devices: DeviceRecord[];
}

const validDriver = (v: unknown): string | null => (typeof v === "string" && v !== "" && hostDriverName.safeParse(v).success ? v : null);

/** The resource's state file, or undefined when there is none (or it is unreadable). */
export function readState(snap: HostSnapshot, address: string): PciState | undefined {
  const text = snap.stateFiles[stateFilePath(address)];
  if (text === undefined) return undefined;
  try {
    const parsed = JSON.parse(text) as { devices?: unknown };
    const devices: DeviceRecord[] = [];
    for (const d of Array.isArray(parsed.devices) ? parsed.devices : []) {
      const r = d as Record<string, unknown>;
      if (typeof r.address !== "string" || !CANONICAL_PCI_ADDRESS.test(r.address)) continue;
      const override = typeof r.originalOverride === "string" && /^[\x21-\x7e]{1,64}$/.test(r.originalOverride) ? r.originalOverride : null;
      const ifaces = Array.isArray(r.originalInterfaces) ? r.originalInterfaces.filter((i): i is string => typeof i === "string" && /^[A-Za-z0-9_.-]{1,15}$/.test(i)) : [];
      devices.push({ address: r.address, originalDriver: validDriver(r.originalDriver), originalOverride: override, originalInterfaces: ifaces });
    }
    return { address, devices };
  } catch {
    // A damaged file still says "this resource exists"; the originals are lost.
    return { address, devices: [] };
  }
}

export type PciAction =
  | { op: "loadVfio" }
  | { op: "writeState"; state: PciState; previous?: PciState }
  /** driver_override := vfio-pci, unbind from `from`, drivers_probe, check. */
  | { op: "bind"; address: string; from: string | null; override: string | null }
  /** Restore driver_override, unbind from vfio-pci, bind `to` (none: leave unbound), check. */
  | { op: "giveBack"; address: string; to: string | null; override: string | null }
  /** The device is no longer on vfio-pci but still carries our driver_override: restore it. */
  | { op: "restoreOverride"; address: string; override: string | null }
  | { op: "removeState"; address: string };

/** Re-checked under the host lock: the device's driver is still what the plan saw ("" = none). */
export interface PciGuard {
  op: "driverIs";
  address: string;
  driver: string;
}

export interface PciPlan {
  guards: PciGuard[];
  actions: PciAction[];
}

/** The device and its group, or the error that stops any plan for it. */
export function locateDevice(view: PciView, address: string): { device: PciDevice; group: number; members: PciDevice[] } {
  if (view.iommuGroupCount === 0) {
    throw new KvmnetError({
      kind: "Unsupported",
      message: "the host's IOMMU is off: /sys/kernel/iommu_groups is empty, so no device can be passed through",
      hint:
        "enable VT-d / AMD-Vi in the firmware, add `intel_iommu=on iommu=pt` (Intel) or `amd_iommu=on` (AMD) to the kernel command line " +
        "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot",
    });
  }
  const device = view.devices.get(address);
  if (!device) {
    throw new KvmnetError({ kind: "NotFound", message: `PCI device ${address} is not on the host`, hint: "check the address with `lspci -D` on the host" });
  }
  if (isBridge(device)) {
    throw new KvmnetError({
      kind: "Unsupported",
      message: `PCI device ${address} is a PCI bridge (class ${device.classCode}); bridges cannot be passed through`,
      hint: "pass through the devices behind the bridge instead",
    });
  }
  if (device.iommuGroup === undefined) {
    throw new KvmnetError({
      kind: "Unsupported",
      message: `PCI device ${address} is in no IOMMU group (the IOMMU does not translate for it)`,
      hint: "check `dmesg | grep -i -e DMAR -e IOMMU` on the host; the device cannot be isolated for a guest",
    });
  }
  return { device, group: device.iommuGroup, members: groupMembers(view, device.iommuGroup) };
}

/** The devices `desired` binds to vfio-pci: the device, or every endpoint of its group. */
export function devicesToHold(desired: PciPassthroughInputs, view: PciView): string[] {
  const { members } = locateDevice(view, desired.address);
  if (!desired.includeIommuGroup) return [desired.address];
  const others = members.filter((m) => !isBridge(m) && m.address !== desired.address).map((m) => m.address);
  return [desired.address, ...others];
}

/**
 * The order in which devices are given back: by their interface names, in
 * natural order (eth3 before eth4 before eth10), then by address. The kernel
 * names a returning NIC with the lowest free ethN (net.ifnames=0 hosts), so
 * giving them back in this order gives each its old name again. Binding runs
 * in the opposite order, so the undo of a failed bind (which runs backwards)
 * gives them back in this order too.
 */
export function returnOrder(a: { address: string; originalInterfaces: string[] }, b: { address: string; originalInterfaces: string[] }): number {
  const ka = a.originalInterfaces[0] ?? "";
  const kb = b.originalInterfaces[0] ?? "";
  return ka.localeCompare(kb, "en", { numeric: true }) || a.address.localeCompare(b.address);
}

const recordOf = (state: PciState | undefined, address: string) => state?.devices.find((d) => d.address === address);
const sameState = (a: PciState | undefined, b: PciState) => a !== undefined && JSON.stringify(a) === JSON.stringify(b);
const withDriver = (d: PciDevice) => `${d.address} (${d.driver ?? "no driver"})`;

/** Why binding these devices is refused unless `force`: management path, default route, disks in use. */
function safetyProblems(view: PciView, snap: HostSnapshot, addresses: string[]): string[] {
  const problems: string[] = [];
  for (const a of addresses) {
    for (const ifname of interfacesOn(view, a)) {
      if (ifname === snap.managementInterface) {
        problems.push(`${a} is the NIC of ${ifname}, the interface of this SSH management session; binding it to vfio-pci removes ${ifname} and cuts the host off`);
      } else if (ifname === snap.defaultRouteInterface) {
        problems.push(`${a} is the NIC of ${ifname}, the interface of the default route; binding it to vfio-pci removes ${ifname} and the host's default route`);
      }
    }
    const disks = diskUsesOn(view, a);
    if (disks.length > 0) {
      problems.push(`${a} holds disks in use (${disks.join("; ")}); binding it to vfio-pci pulls them from under the running system`);
    }
  }
  return problems;
}

/**
 * The state file `desired` should have on this host: every device it holds,
 * with what that device had before. A device we hold keeps its recorded
 * original while it is on vfio-pci, or still carries the driver_override
 * vfio-pci that we (or our boot-time rule) wrote, e.g. after a boot where
 * another driver got to it first; any other device's original is what it
 * has now. The plan writes this state and the persisted boot script writes
 * the same at boot, so both are one function of the inputs and the host.
 * Throws what {@link devicesToHold} throws.
 */
export function heldState(desired: PciPassthroughInputs, view: PciView, snap: HostSnapshot): PciState {
  const state = readState(snap, desired.address);
  return {
    address: desired.address,
    devices: devicesToHold(desired, view).map((a) => {
      const d = view.devices.get(a) as PciDevice;
      const kept = recordOf(state, a);
      if (kept && (d.driver === VFIO_PCI || d.driverOverride === VFIO_PCI)) return kept;
      return { address: a, originalDriver: d.driver ?? null, originalOverride: d.driverOverride ?? null, originalInterfaces: interfacesOn(view, a) };
    }),
  };
}

/**
 * Plan the actions that take the host from `snap` to `desired` (create and
 * update alike: what the state file says the resource holds is compared with
 * what it should hold). Throws KvmnetError when the plan is refused.
 */
export function planPci(desired: PciPassthroughInputs, snap: HostSnapshot): PciPlan {
  const view = parsePciView(snap);
  const { group, members } = locateDevice(view, desired.address);
  const state = readState(snap, desired.address);
  const hold = devicesToHold(desired, view);
  const release = (state?.devices ?? []).filter((r) => !hold.includes(r.address) && view.devices.has(r.address));

  // Viability: every other endpoint of the group must end up on vfio-pci, pci-stub or no driver.
  if (!desired.includeIommuGroup) {
    const blocking = members.filter((m) => {
      if (isBridge(m) || m.address === desired.address) return false;
      const released = release.find((r) => r.address === m.address);
      const endDriver = released ? released.originalDriver : m.driver;
      return endDriver !== null && endDriver !== undefined && !VIABLE_DRIVERS.has(endDriver);
    });
    if (blocking.length > 0) {
      const given = blocking.map((m) => (release.some((r) => r.address === m.address) ? `${m.address} (back to ${recordOf(state, m.address)?.originalDriver})` : withDriver(m)));
      throw new KvmnetError({
        kind: "Conflict",
        message: `IOMMU group ${group} of ${desired.address} is not viable: other devices in it ${release.length > 0 ? "would be" : "are"} bound to host drivers: ${given.join(", ")}`,
        hint: `a guest can only get a device whose whole IOMMU group is on vfio-pci (or pci-stub, or no driver): set includeIommuGroup: true to bind every device of group ${group}, or unbind those devices first`,
      });
    }
  }

  const toBind = hold.filter((a) => view.devices.get(a)?.driver !== VFIO_PCI);
  if (!desired.force) {
    const problems = safetyProblems(view, snap, toBind);
    if (problems.length > 0) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `refusing to pass through: ${problems.join("; and ")}`,
        hint: "choose another device, or set force: true if you have another way into the host (a console) and accept what breaks",
      });
    }
  }

  const next = heldState(desired, view, snap);

  const guards: PciGuard[] = [];
  const actions: PciAction[] = [];
  if (!sameState(state, next)) actions.push({ op: "writeState", state: next, previous: state });
  if (toBind.length > 0) actions.push({ op: "loadVfio" });
  const bindOrder = next.devices
    .filter((r) => toBind.includes(r.address))
    .sort(returnOrder)
    .reverse()
    .map((r) => r.address);
  for (const a of bindOrder) {
    const d = view.devices.get(a) as PciDevice;
    guards.push({ op: "driverIs", address: a, driver: d.driver ?? "" });
    actions.push({ op: "bind", address: a, from: d.driver ?? null, override: d.driverOverride ?? null });
  }
  actions.push(...giveBackActions(view, release, guards));
  return { guards, actions };
}

/** Give devices back to their original drivers (those still on vfio-pci), in {@link returnOrder}. */
function giveBackActions(view: PciView, records: DeviceRecord[], guards: PciGuard[]): PciAction[] {
  const actions: PciAction[] = [];
  for (const r of [...records].sort(returnOrder)) {
    const d = view.devices.get(r.address);
    if (!d) continue; // gone from the host (hot-unplugged): nothing to give back
    if (d.driver === VFIO_PCI && r.originalDriver !== VFIO_PCI) {
      guards.push({ op: "driverIs", address: r.address, driver: VFIO_PCI });
      actions.push({ op: "giveBack", address: r.address, to: r.originalDriver, override: r.originalOverride });
    } else if (d.driverOverride === VFIO_PCI && r.originalOverride !== VFIO_PCI) {
      // Taken back by hand: only our driver_override is left to restore.
      actions.push({ op: "restoreOverride", address: r.address, override: r.originalOverride });
    }
  }
  return actions;
}

/** Plan the removal: give every recorded device back, then remove the state file. No state file: nothing to do. */
export function planPciDelete(props: PciPassthroughInputs, snap: HostSnapshot): PciPlan {
  const state = readState(snap, props.address);
  if (!state) return { guards: [], actions: [] };
  const guards: PciGuard[] = [];
  const actions = giveBackActions(parsePciView(snap), state.devices, guards);
  actions.push({ op: "removeState", address: props.address });
  return { guards, actions };
}
