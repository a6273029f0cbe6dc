import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, Persistence, PersistenceBackend } from "./types";

/** Tag protocol: "802.1Q" (a VLAN tag, TPID 0x8100) or "802.1ad" (a QinQ service tag, TPID 0x88a8). */
export type VlanProtocol = "802.1Q" | "802.1ad";

/** Arguments of a {@link VlanSubinterface}. */
export interface VlanSubinterfaceArgs {
  /** The host to manage. */
  connection: pulumi.Input<Connection>;
  /** The interface that carries the tagged frames (a NIC, a bond, a bridge, or another VLAN for QinQ). Must exist. Changing it replaces the VLAN. */
  parent: pulumi.Input<string>;
  /** VLAN id, 1–4094. Changing it replaces the VLAN. */
  vlanId: pulumi.Input<number>;
  /** Interface name, 1–15 characters of [A-Za-z0-9_.-]. Default `<parent>.<vlanId>`; required when that is over 15 characters. Changing it replaces the VLAN. */
  name?: pulumi.Input<string>;
  /** Tag protocol. Default "802.1Q". Changing it replaces the VLAN. */
  protocol?: pulumi.Input<VlanProtocol>;
  /** MTU (68–65535, at most the parent's). Unset: the kernel's (the parent's at creation), left as the host has it. */
  mtu?: pulumi.Input<number>;
  /** Addresses in CIDR form (IPv4 and IPv6). Others on the interface are left alone; one removed from the list is removed. Not with `bridge`. */
  addresses?: pulumi.Input<pulumi.Input<string>[]>;
  /** Make the VLAN a port of this bridge (which must exist: pass a Bridge's `name` output). Removing it detaches the VLAN. */
  bridge?: pulumi.Input<string>;
  /**
   * Manage an existing VLAN of this name (same parent, id and protocol) instead of
   * failing with a Conflict: its settings become the declared ones, and delete
   * removes it. A VLAN this resource's own interrupted create made is taken over
   * without it. Default false.
   */
  adopt?: pulumi.Input<boolean>;
  /**
   * Whether the VLAN survives a reboot (default "runtime": until the host
   * reboots). "auto" persists through the network stack the host runs;
   * "networkmanager", "networkd" or "ifupdown" name it (refused when the host
   * does not run it). The files: networkd `05-kvmnet-vlan-<name>.netdev` and
   * `.network` plus a drop-in that adds `VLAN=<name>` to the .network file
   * managing the parent (networkd must manage the parent); a NetworkManager
   * keyfile `kvmnet-vlan-<name>.nmconnection`; an ifupdown stanza
   * `/etc/network/interfaces.d/kvmnet-vlan-<name>`. A setup the stack could not
   * bring back at boot (a bridge it does not create, an unmanaged parent,
   * 802.1ad on NetworkManager before 1.42) is refused before anything changes.
   * Delete removes every file.
   */
  persistence?: pulumi.Input<Persistence>;
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

  constructor(name: string, args: VlanSubinterfaceArgs, opts?: pulumi.CustomResourceOptions) {
    super("vlanSubinterface", name, args, ["ifindex", "macAddress", "operState", "persistedBy", "persistenceDrift"], opts);
  }
}
