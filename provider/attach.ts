/**
 * How a VM attaches to what a kind made: the `libvirtInterfaceXml` and
 * `qemuNetdevArgs` outputs, and the guest NIC model they name. Pure.
 *
 * An attach point is a bridge (Bridge, NatNetwork's bridge, a VLAN or tap in a
 * bridge), a device that is no bridge (a VLAN on its own: libvirt attaches to
 * it with macvtap, `type='direct'`), or a tap made for one guest.
 */
import { z } from "zod";
import { KvmnetError } from "./errors";

/** The guest NIC models seed 004 compares, as QEMU's `-device` names them. */
export const NIC_MODELS = ["virtio-net-pci", "e1000", "rtl8139"] as const;
export const nicModel = z.enum(NIC_MODELS, { error: () => ({ message: 'must be "virtio-net-pci" (the default), "e1000" or "rtl8139"' }) });
export type NicModel = z.output<typeof nicModel>;

/** libvirt's `<model type=…>` for each QEMU device. */
const LIBVIRT_MODEL: Record<NicModel, string> = { "virtio-net-pci": "virtio", e1000: "e1000", rtl8139: "rtl8139" };

export type AttachPoint = { kind: "bridge"; bridge: string } | { kind: "direct"; dev: string } | { kind: "tap"; dev: string };

/**
 * A value placed inside an XML attribute or element. Interface and libvirt
 * network names are validated at check to characters XML reads literally;
 * this refuses anything else rather than escaping it, so what a user reads in
 * the output is what the host has.
 */
export function xmlLiteral(v: string): string {
  if (/[<>&'"\s]/.test(v) || v.length === 0) throw new KvmnetError({ kind: "Bug", message: `a value that is not XML-literal reached an attach snippet: ${JSON.stringify(v)}` });
  return v;
}

/** A QEMU id (letters, digits, '-', '.', '_', a letter first) for a netdev named after `name`. */
export function netdevId(name: string): string {
  const id = name.replace(/[^A-Za-z0-9._-]/g, "_");
  return /^[A-Za-z]/.test(id) ? `net-${id}` : `net-n${id}`;
}

/**
 * The `<interface>` element a libvirt domain attaches with: through the
 * libvirt network when one is registered (`type='network'`), else straight to
 * the bridge (`type='bridge'`), the device (`type='direct'`, macvtap) or the
 * tap (`type='ethernet'`, `managed='no'`: libvirt opens the tap we made).
 */
export function libvirtInterfaceXml(at: AttachPoint, model: NicModel, network?: string): string {
  const source = network
    ? `  <source network='${xmlLiteral(network)}'/>`
    : at.kind === "bridge"
      ? `  <source bridge='${xmlLiteral(at.bridge)}'/>`
      : at.kind === "direct"
        ? `  <source dev='${xmlLiteral(at.dev)}' mode='bridge'/>`
        : `  <target dev='${xmlLiteral(at.dev)}' managed='no'/>`;
  const type = network ? "network" : at.kind === "tap" ? "ethernet" : at.kind;
  return [`<interface type='${type}'>`, source, `  <model type='${LIBVIRT_MODEL[model]}'/>`, `</interface>`].join("\n");
}

/**
 * QEMU's arguments (one argv word each) for a NIC on a bridge:
 * `-netdev bridge,id=…,br=…` (QEMU's bridge helper makes the tap; it must be
 * allowed the bridge in /etc/qemu/bridge.conf) and `-device <model>,netdev=…`.
 * No `mac=`: one snippet serves every guest on the bridge, and each needs its
 * own (QEMU gives every guest 52:54:00:12:34:56 otherwise). A device that is
 * no bridge has none: QEMU alone cannot attach to it.
 */
export function bridgeNetdevArgs(at: AttachPoint, model: NicModel): string[] {
  if (at.kind !== "bridge") return [];
  const id = netdevId(at.bridge);
  return ["-netdev", `bridge,id=${id},br=${at.bridge}`, "-device", `${model},netdev=${id}`];
}
