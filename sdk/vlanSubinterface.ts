import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, LibvirtRegistration, NicModel, Persistence, PersistenceBackend } from "./types";

/** Tag protocol: "802.1Q" (a VLAN tag, TPID 0x8100) or "802.1ad" (a QinQ service tag, TPID 0x88a8). */
export type VlanProtocol = "802.1Q" | "802.1ad";

/** Arguments of a {@link VlanSubinterface}. */
export interface VlanSubinterfaceArgs {
  /** The host to manage, and how to reach it: see Connection. On change: replace if the host changes (`host`, or `local`), else update. */
  connection: pulumi.Input<Connection>;
  /** The interface that carries the tagged frames (a NIC, a bond, a bridge, or another VLAN for QinQ); must exist, not `lo`. On change: replace. */
  parent: pulumi.Input<string>;
  /** VLAN id, 1–4094. On change: replace. */
  vlanId: pulumi.Input<number>;
  /** Interface name; required when the default is over 15 characters. Default: `<parent>.<vlanId>`. On change: replace. */
  name?: pulumi.Input<string>;
  /** Tag protocol: `"802.1Q"` or `"802.1ad"` (QinQ service tag, TPID 0x88a8). Default: `"802.1Q"`. On change: replace. */
  protocol?: pulumi.Input<VlanProtocol>;
  /**
   * 68–65535 and at most the parent's MTU (checked against the host before anything changes).
   * Unset: left as the host has it. Default: kernel's (the parent's).
   */
  mtu?: pulumi.Input<number>;
  /**
   * CIDR addresses, "at least these", with the same rules as Bridge `addresses`: others on the
   * interface are left alone, one removed from the list is removed. Must be empty when `bridge` is
   * set. Default: `[]`.
   */
  addresses?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Make the VLAN a port of this bridge, which must already exist: pass the Bridge's `name` output
   * (or `dependsOn` it). Removing it detaches the VLAN.
   */
  bridge?: pulumi.Input<string>;
  /**
   * Manage an existing VLAN of this name with the same parent, id and protocol instead of failing
   * with a Conflict: its settings become the declared ones, and delete removes it. Not needed for a
   * VLAN this resource's own interrupted create made. Default: `false`.
   */
  adopt?: pulumi.Input<boolean>;
  /**
   * `"runtime"` (until reboot), `"auto"`, `"networkd"` (needs networkd to manage the parent: a
   * drop-in adds `VLAN=`), `"networkmanager"` (parent managed by NM; 802.1ad from NM 1.42),
   * `"ifupdown"` (`interfaces.d` must be `source`d). What a stack could not bring back at boot is
   * refused before anything changes. Delete removes every file. Default: `"runtime"`.
   */
  persistence?: pulumi.Input<Persistence>;
  /**
   * Register a libvirt network for VMs to attach to by name: of the host-bridge form on `bridge`
   * when the VLAN is in one, else macvtap (`<forward mode='bridge'><interface dev='…'/>`) on the
   * VLAN itself. Needs libvirtd on the host. Default: not registered.
   */
  libvirt?: pulumi.Input<LibvirtRegistration>;
  /**
   * The guest NIC model in `libvirtInterfaceXml` and `qemuNetdevArgs`: `"virtio-net-pci"`,
   * `"e1000"` or `"rtl8139"`. Nothing on the host depends on it. Default: `"virtio-net-pci"`.
   */
  model?: pulumi.Input<NicModel>;
}

/**
 * An 802.1Q (or 802.1ad) VLAN sub-interface on a remote host
 * (`ip link add link <parent> name <name> type vlan id <vlanId>`), optionally
 * a port of a bridge. Loads the 8021q module when the kernel needs it.
 *
 * Type token `pulumi-nodejs:dynamic/kvmnet:VlanSubinterface`; id
 * `<host>/vlanSubinterface/<name>`. Changing `parent`, `vlanId`, `protocol`,
 * `name` or `connection.host` replaces it; `mtu`, `addresses`, `bridge` and
 * `persistence` update in place.
 *
 * `pulumi import` cannot bring it into a stack (the engine's Read for an import
 * carries no state, so the dynamic provider and the connection are missing):
 * declare it with `adopt: true` instead. A create interrupted after the host
 * applied it is taken over by the next `up` with the same inputs, without `adopt`.
 */
export class VlanSubinterface extends KvmnetResource {
  declare public readonly connection: pulumi.Output<Connection>;
  declare public readonly parent: pulumi.Output<string>;
  declare public readonly vlanId: pulumi.Output<number>;
  /** The interface name (the default `<parent>.<vlanId>` when none was given). */
  declare public readonly name: pulumi.Output<string>;
  declare public readonly protocol: pulumi.Output<VlanProtocol>;
  /** The MTU as the host has it, when `mtu` was given. */
  declare public readonly mtu: pulumi.Output<number | undefined>;
  /** The listed addresses that are present. */
  declare public readonly addresses: pulumi.Output<string[]>;
  /** The bridge the VLAN is a port of, when `bridge` was given (undefined when the host shows it detached). */
  declare public readonly bridge: pulumi.Output<string | undefined>;
  declare public readonly adopt: pulumi.Output<boolean>;
  declare public readonly persistence: pulumi.Output<Persistence>;
  /** The stack the VLAN persists through ("runtime": none). */
  declare public readonly persistedBy: pulumi.Output<PersistenceBackend>;
  /** Differences between the persisted files on the host and what the inputs render, found by the last read (empty: in sync). */
  declare public readonly persistenceDrift: pulumi.Output<string[]>;
  /** Kernel interface index. */
  declare public readonly ifindex: pulumi.Output<number>;
  /** The VLAN's MAC address (the parent's, as the kernel gives it). */
  declare public readonly macAddress: pulumi.Output<string>;
  /** Operational state ("UP", "LOWERLAYERDOWN" when the parent has no carrier, …). */
  declare public readonly operState: pulumi.Output<string>;

  /** The registration as the host has it (undefined when it is missing or changed out of band: refresh shows it, the next update repairs it). */
  declare public readonly libvirt: pulumi.Output<LibvirtRegistration | undefined>;
  declare public readonly model: pulumi.Output<NicModel>;
  /** The `<interface>` element a libvirt domain attaches with: `type='network'` when registered, else `type='bridge'` in a bridge, `type='direct'`, with the model. */
  declare public readonly libvirtInterfaceXml: pulumi.Output<string>;
  /** QEMU's `-netdev bridge,id=…,br=…` and `-device <model>,netdev=…` (one argv word each; add `,mac=` per guest; QEMU's bridge helper must allow the bridge); empty when the VLAN is in no bridge (QEMU alone cannot attach to it). */
  declare public readonly qemuNetdevArgs: pulumi.Output<string[]>;
  constructor(name: string, args: VlanSubinterfaceArgs, opts?: pulumi.CustomResourceOptions) {
    super("vlanSubinterface", name, args, ["libvirtInterfaceXml", "qemuNetdevArgs", "ifindex", "macAddress", "operState", "persistedBy", "persistenceDrift"], opts);
  }
}
