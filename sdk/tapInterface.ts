import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, NicModel, Persistence, PersistenceBackend } from "./types";

/** The guest NIC model QEMU gets in `qemuNetdevArgs`. */
export type TapModel = NicModel;

/** Arguments of a {@link TapInterface}. */
export interface TapInterfaceArgs {
  /** The host to manage, and how to reach it: see Connection. On change: replace if the host changes (`host`, or `local`), else update. */
  connection: pulumi.Input<Connection>;
  /** Interface name of the tap (what QEMU's `ifname=` names). On change: replace. */
  name: pulumi.Input<string>;
  /**
   * The user allowed to open the tap without CAP_NET_ADMIN (an unprivileged QEMU): a user name or a
   * numeric uid. Unset: root only. On change: replace.
   */
  owner?: pulumi.Input<string | number>;
  /** The group whose members may open the tap: a group name or a numeric gid. Unset: no group. On change: replace. */
  group?: pulumi.Input<string | number>;
  /**
   * Make a multi-queue tap (IFF_MULTI_QUEUE): every opener must ask for it, and QEMU needs
   * `queues=` (see `queues`). Default: `false`. On change: replace.
   */
  multiQueue?: pulumi.Input<boolean>;
  /**
   * Give frames a virtio-net header (IFF_VNET_HDR), what virtio-net with offloads expects; QEMU is
   * told `vnet_hdr=on`. Default: `false`. On change: replace.
   */
  vnetHdr?: pulumi.Input<boolean>;
  /** MTU of the tap, 68–65521. Unset: left as the host has it. Default: kernel's (1500). */
  mtu?: pulumi.Input<number>;
  /**
   * Make the tap a port of this bridge (a Bridge's `name`, or a NatNetwork's `bridgeName`), which
   * must already exist: pass that output (or `dependsOn`). Removing it detaches the tap.
   */
  bridge?: pulumi.Input<string>;
  /**
   * The guest NIC in `qemuNetdevArgs`: `"virtio-net-pci"`, `"e1000"` or `"rtl8139"`. Nothing on the
   * host depends on it. Default: `"virtio-net-pci"`.
   */
  model?: pulumi.Input<TapModel>;
  /** The guest NIC's MAC in `qemuNetdevArgs`. Nothing on the host depends on it. Default: 52:54:00 and three bytes of a hash of the host and name. */
  guestMac?: pulumi.Input<string>;
  /**
   * Queue pairs QEMU opens on a multi-queue tap (`queues=` and `mq=on` in `qemuNetdevArgs`); only
   * with `multiQueue`. Default: 2 when `multiQueue`.
   */
  queues?: pulumi.Input<number>;
  /**
   * Manage an existing tap of this name instead of failing with a Conflict: one whose owner, group
   * or flags differ is made anew with the declared ones, and delete removes it. Default: `false`.
   */
  adopt?: pulumi.Input<boolean>;
  /**
   * `"runtime"` (until reboot), `"auto"`, `"networkd"` (a `.netdev` of Kind=tap),
   * `"networkmanager"` (a connection of type tun), `"ifupdown"` (`interfaces.d` must be `source`d).
   * What a stack could not bring back at boot is refused before anything changes. Delete removes
   * every file. Default: `"runtime"`.
   */
  persistence?: pulumi.Input<Persistence>;
}

/**
 * A persistent tap device on a remote host (`ip tuntap add mode tap`), that
 * an unprivileged QEMU run as `owner` (or a member of `group`) can open,
 * optionally a port of a bridge (a Bridge, or a NatNetwork's bridge).
 * `qemuNetdevArgs` are the `-netdev tap,…` and `-device <model>,…` words
 * that give a guest the tap as its NIC.
 *
 * Type token `pulumi-nodejs:dynamic/kvmnet:TapInterface`; id
 * `<host>/tapInterface/<name>`. Changing `name`, `owner`, `group`,
 * `multiQueue`, `vnetHdr` or `connection.host` replaces it (the old tap is
 * deleted first); `mtu`, `bridge`, `model`, `guestMac`, `queues` and
 * `persistence` update in place.
 *
 * `pulumi import` cannot bring it into a stack (the engine's Read for an import
 * carries no state): declare it with `adopt: true` instead.
 */
export class TapInterface extends KvmnetResource {
  declare public readonly connection: pulumi.Output<Connection>;
  declare public readonly name: pulumi.Output<string>;
  /** The owner as the host has it (the given spelling when it matches). */
  declare public readonly owner: pulumi.Output<string | undefined>;
  /** The group as the host has it (the given spelling when it matches). */
  declare public readonly group: pulumi.Output<string | undefined>;
  declare public readonly multiQueue: pulumi.Output<boolean>;
  declare public readonly vnetHdr: pulumi.Output<boolean>;
  /** The MTU as the host has it, when `mtu` was given. */
  declare public readonly mtu: pulumi.Output<number | undefined>;
  /** The bridge the tap is a port of, when `bridge` was given (undefined when the host shows it detached). */
  declare public readonly bridge: pulumi.Output<string | undefined>;
  declare public readonly model: pulumi.Output<TapModel>;
  /** The guest NIC's MAC in `qemuNetdevArgs` (the given one, or the stable default). */
  declare public readonly guestMac: pulumi.Output<string>;
  declare public readonly queues: pulumi.Output<number | undefined>;
  declare public readonly adopt: pulumi.Output<boolean>;
  declare public readonly persistence: pulumi.Output<Persistence>;
  /** The stack the tap persists through ("runtime": none). */
  declare public readonly persistedBy: pulumi.Output<PersistenceBackend>;
  /** Differences between the persisted files on the host and what the inputs render, found by the last read (empty: in sync). */
  declare public readonly persistenceDrift: pulumi.Output<string[]>;
  /**
   * QEMU's arguments for this tap, one argv word each:
   * `["-netdev", "tap,id=net-<name>,ifname=<name>,script=no,downscript=no,vnet_hdr=off", "-device", "virtio-net-pci,netdev=net-<name>,mac=52:54:00:…"]`.
   */
  declare public readonly qemuNetdevArgs: pulumi.Output<string[]>;
  /** Kernel interface index. */
  declare public readonly ifindex: pulumi.Output<number>;
  /** The host side's MAC address (not the guest's). */
  declare public readonly macAddress: pulumi.Output<string>;
  /** Operational state ("DOWN" until a process opens the tap, then "UP"). */
  declare public readonly operState: pulumi.Output<string>;

  /** The `<interface type='ethernet'>` element that gives a libvirt domain this tap (`<target dev=… managed='no'/>`: libvirt opens the tap as it is), with the model. */
  declare public readonly libvirtInterfaceXml: pulumi.Output<string>;
  constructor(name: string, args: TapInterfaceArgs, opts?: pulumi.CustomResourceOptions) {
    super("tapInterface", name, args, ["libvirtInterfaceXml", "guestMac", "qemuNetdevArgs", "ifindex", "macAddress", "operState", "persistedBy", "persistenceDrift"], opts);
  }
}
