/**
 * A PciPassthrough's boot-time binding (persistence other than "runtime").
 *
 * The network stack the host runs does not matter to a PCI binding: any
 * persisting backend means "bind at boot, before any VM can start", through
 * two layers of our own (systemd required, see requireSystemd):
 *
 * 1. `/etc/udev/rules.d/40-kvmnet-vfio-<address>.rules`: on each held device's
 *    `add` event, write driver_override=vfio-pci, load vfio-pci and probe the
 *    device. udev applies `ATTR{}` assignments while it processes the rules,
 *    and 80-drivers.rules only loads the device's driver (by modalias) after
 *    every rule has run, so the host driver never binds it: not even when its
 *    module is already loaded for another device (three e1000s, one passed
 *    through), since the kernel never matches a driver against a device whose
 *    driver_override names another. What the rule cannot stop is a driver that
 *    bound the device before the root filesystem's udev ran: one built into the
 *    kernel, or loaded from an initramfs that carries it (initramfs-tools with
 *    MODULES=most packs NIC drivers; our rule is not in the initramfs).
 * 2. `kvmnet-vfio-<address>.service`, a oneshot (DefaultDependencies=no,
 *    After=systemd-udev-trigger.service, Before=sysinit.target) enabled by the
 *    `sysinit.target.wants/` link that `systemctl enable` would make. It runs
 *    `/etc/kvmnet/vfio-<address>.sh`: the live bind's own steps (render.ts),
 *    which also move a device that another driver got first, and it writes the
 *    resource's state file under /run, so a refresh after the reboot finds the
 *    resource and its original drivers exactly as after the live bind. Every
 *    ordinary service (libvirtd, libvirt-guests, any unit that starts a VM) is
 *    ordered after sysinit.target, so the devices are on vfio-pci before it runs.
 *
 * includeIommuGroup: one rule line per held device and one script binding
 * them all (a group is only usable by a guest when every endpoint is on
 * vfio-pci). The files are functions of the inputs and of the state the live
 * bind records (heldState), which a refresh reads back unchanged.
 */
import { KvmnetError } from "../../errors";
import type { HostSnapshot } from "../../observe";
import type { Backend } from "../../persist";
import { resolveBackend } from "../../persist";
import { ETC_DIR, PersistFile, PersistSet, writtenBy } from "../../persist/files";
import { bootHooksToDisarm, disarmSteps, PersistedUnit, requireSystemd, SYSTEMD_DIR, unitFiles } from "../../persist/systemd";
import type { Step } from "../../render";
import { parsePciView } from "./observe";
import { heldState, PciState } from "./plan";
import { renderBootBind } from "./render";
import { CANONICAL_PCI_ADDRESS, PCI_KIND, PciPassthroughInputs, VFIO_PCI } from "./schema";

export const UDEV_RULES_DIR = "/etc/udev/rules.d";
export const UNIT_DIR = SYSTEMD_DIR;
/** Where the boot scripts live: /etc/kvmnet itself, so removing the last object of ours leaves no directory behind. */
export const BOOT_SCRIPT_DIR = ETC_DIR;

/** A canonical address, or a Bug: these values become file names, unit names and udev match text. */
function canonical(a: string): string {
  if (!CANONICAL_PCI_ADDRESS.test(a)) throw new KvmnetError({ kind: "Bug", message: `not a canonical PCI address: ${JSON.stringify(a)}` });
  return a;
}

export const unitName = (address: string) => `kvmnet-vfio-${canonical(address)}.service`;
export const unitPath = (address: string) => `${UNIT_DIR}/${unitName(address)}`;
export const unitWantsLink = (address: string) => `${UNIT_DIR}/sysinit.target.wants/${unitName(address)}`;
/** 40: before 80-drivers.rules, which loads the driver a device's modalias asks for. */
export const udevRulePath = (address: string) => `${UDEV_RULES_DIR}/40-kvmnet-vfio-${canonical(address)}.rules`;
export const bootScriptPath = (address: string) => `${BOOT_SCRIPT_DIR}/vfio-${canonical(address)}.sh`;

const header = (address: string) => writtenBy(`PciPassthrough ${address}`);

/** The udev rule: one line per held device. */
export function renderUdevRule(state: PciState): string {
  const devices = state.devices.map((d) => canonical(d.address)).sort();
  return [
    header(state.address),
    `# On the add event, before 80-drivers.rules loads a driver for the device, driver_override`,
    `# leaves ${VFIO_PCI} the only driver that may bind it; ${VFIO_PCI} is loaded and the device probed.`,
    `# ${unitName(state.address)} binds it before sysinit.target should another driver have got there first.`,
    ...devices.map(
      (a) =>
        `ACTION=="add", SUBSYSTEM=="pci", KERNEL=="${a}", ATTR{driver_override}="${VFIO_PCI}", ` +
        `RUN{builtin}+="kmod load ${VFIO_PCI}", RUN+="/bin/sh -c 'echo $kernel > /sys/bus/pci/drivers_probe'"`,
    ),
  ].join("\n");
}

/** The oneshot unit that runs the boot script before sysinit.target. */
export function bootUnit(state: PciState): PersistedUnit {
  const a = canonical(state.address);
  const held = state.devices.map((d) => canonical(d.address)).sort();
  return {
    unit: unitName(a),
    stage: "early",
    header: header(a),
    description: `kvmnet: bind PCI ${held.join(" ")} to ${VFIO_PCI} for passthrough`,
    execStart: `/bin/sh ${bootScriptPath(a)}`,
  };
}

/** The boot script: the live bind's steps, and the state file the live bind writes. */
export function renderBootScript(state: PciState): string {
  return ["#!/bin/sh", header(state.address), `# Run at boot by ${unitName(state.address)}: the same steps as the live bind.`, renderBootBind(state).text].join("\n");
}

/** KindSpec.persist: the files that bind `desired`'s devices to vfio-pci at every boot. */
export function pciPersist(desired: PciPassthroughInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  requireSystemd(backend, snap, `pcipassthrough ${desired.address}`);
  const state = heldState(desired, parsePciView(snap), snap);
  const a = desired.address;
  const files: PersistFile[] = [
    { path: udevRulePath(a), content: renderUdevRule(state) },
    { path: bootScriptPath(a), content: renderBootScript(state), mode: "0755" },
    ...unitFiles(bootUnit(state)),
  ];
  return { files };
}

/**
 * The boot unit comes off live when the binding stops persisting (on delete,
 * or when `desired`'s persistence resolves to "runtime"): a oneshot with
 * RemainAfterExit stays "active" after its file is removed until the next
 * boot, so it is stopped (it has no ExecStop: the devices are untouched; the
 * give-back is the live plan's). Appended to the live plan, before the core
 * removes the files.
 */
export function pciDisarmSteps(desired: PciPassthroughInputs, snap: HostSnapshot, deleting: boolean): Step[] {
  if (!deleting && resolveBackend(desired.persistence, snap, `${PCI_KIND} ${desired.address}`) !== "runtime") return [];
  const hooks = bootHooksToDisarm(PCI_KIND, desired.address, unitPath(desired.address), undefined, snap);
  return hooks ? disarmSteps(hooks) : [];
}
