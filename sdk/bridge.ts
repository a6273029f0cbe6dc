import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, Persistence, PersistenceBackend } from "./types";

/** Arguments of a {@link Bridge}. Unset optional settings are left as the kernel has them. */
export interface BridgeArgs {
  /** The host to manage. */
  connection: pulumi.Input<Connection>;
  /** Interface name: 1–15 characters of [A-Za-z0-9_.-]. Changing it replaces the bridge. */
  name: pulumi.Input<string>;
  /** Spanning Tree Protocol on (kernel STP). Default false. */
  stp?: pulumi.Input<boolean>;
  /** STP forward delay in seconds (0–30; 2–30 with stp on). */
  forwardDelay?: pulumi.Input<number>;
  /** STP hello time in seconds (1–10). */
  helloTime?: pulumi.Input<number>;
  /** STP max message age in seconds (6–40). */
  maxAge?: pulumi.Input<number>;
  /** Bridge priority (0–65535; lower wins the root election). */
  priority?: pulumi.Input<number>;
  /** How long learned MAC addresses are kept, in seconds (0–1000000). */
  ageingTime?: pulumi.Input<number>;
  /** MTU of the bridge device (68–65535). */
  mtu?: pulumi.Input<number>;
  /** Fixed MAC address of the bridge (unicast). Without it the kernel picks one (usually a port's). */
  macAddress?: pulumi.Input<string>;
  /** 802.1Q VLAN filtering on the bridge. */
  vlanFiltering?: pulumi.Input<boolean>;
  /**
   * Interfaces to enslave. They must exist, and — unless `takeOverUplink` —
   * have no addresses and not carry the management or default route. Ports
   * not listed here (guest taps) are left alone; a port removed from the list
   * is released.
   */
  ports?: pulumi.Input<pulumi.Input<string>[]>;
  /** Addresses in CIDR form (IPv4 and IPv6), e.g. "192.168.50.1/24". Others on the bridge are left alone. */
  addresses?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Manage a bridge of this name that already exists (made by hand or by another
   * tool) instead of failing with a Conflict: its settings become the declared ones,
   * and delete removes it. A bridge this resource's own interrupted create made is
   * taken over without it. Default false.
   */
  adopt?: pulumi.Input<boolean>;
  /**
   * Let `ports` include the uplink NIC — even the one this SSH session runs
   * over: its addresses and routes move onto the bridge (which takes its MAC),
   * and go back when it is released or the bridge is deleted. Such changes run
   * under commit-confirm: the host reverts them by itself unless a NEW SSH
   * connection confirms within `confirmTimeoutSec`. Default false.
   */
  takeOverUplink?: pulumi.Input<boolean>;
  /** Seconds (15–3600, default 60) the host waits for the confirming connection before it reverts a change of the management path. */
  confirmTimeoutSec?: pulumi.Input<number>;
  /**
   * Where the boot-time configuration goes (default "runtime": none). networkd:
   * .netdev/.network files; NetworkManager: keyfiles (ports must be Ethernet NICs;
   * bridge times in whole seconds); ifupdown: an interfaces.d stanza. Not yet with
   * takeOverUplink (refused).
   */
  persistence?: pulumi.Input<Persistence>;
}

/**
 * A Linux bridge on a remote host (`ip link add … type bridge`).
 *
 * Type token `pulumi-nodejs:dynamic/kvmnet:Bridge`; id `<host>/bridge/<name>`.
 * Changing `name` or `connection.host` replaces it; everything else updates in place.
 *
 * `pulumi import` cannot bring it into a stack (the engine's Read for an import
 * carries no state, so the dynamic provider and the connection are missing):
 * declare it with `adopt: true` instead. A create interrupted after the host
 * applied it is taken over by the next `up` with the same inputs, without `adopt`.
 */
export class Bridge extends KvmnetResource {
  declare public readonly connection: pulumi.Output<Connection>;
  declare public readonly name: pulumi.Output<string>;
  declare public readonly stp: pulumi.Output<boolean>;
  declare public readonly forwardDelay: pulumi.Output<number | undefined>;
  declare public readonly helloTime: pulumi.Output<number | undefined>;
  declare public readonly maxAge: pulumi.Output<number | undefined>;
  declare public readonly priority: pulumi.Output<number | undefined>;
  declare public readonly ageingTime: pulumi.Output<number | undefined>;
  declare public readonly mtu: pulumi.Output<number | undefined>;
  /** The bridge's MAC address as the host reports it. */
  declare public readonly macAddress: pulumi.Output<string>;
  declare public readonly vlanFiltering: pulumi.Output<boolean | undefined>;
  /** The listed ports that are attached. */
  declare public readonly ports: pulumi.Output<string[]>;
  /** The listed addresses that are present. */
  declare public readonly addresses: pulumi.Output<string[]>;
  declare public readonly adopt: pulumi.Output<boolean>;
  declare public readonly takeOverUplink: pulumi.Output<boolean>;
  declare public readonly confirmTimeoutSec: pulumi.Output<number>;
  /** Uplinks taken over: port → the addresses that moved from it onto the bridge. */
  declare public readonly takenOver: pulumi.Output<Record<string, string[]>>;
  declare public readonly persistence: pulumi.Output<Persistence>;
  /** The backend the boot-time configuration went to ("runtime": none). */
  declare public readonly persistedBy: pulumi.Output<PersistenceBackend>;
  /** Differences between the persisted configuration and the inputs, found by the last read (empty: in sync). */
  declare public readonly persistenceDrift: pulumi.Output<string[]>;
  /** Kernel interface index. */
  declare public readonly ifindex: pulumi.Output<number>;
  /** Operational state ("UP", "DOWN", "NO-CARRIER"…): a bridge with no running port is DOWN. */
  declare public readonly operState: pulumi.Output<string>;
  /** Every interface attached to the bridge, including ones this resource does not manage. */
  declare public readonly attachedInterfaces: pulumi.Output<string[]>;

  constructor(name: string, args: BridgeArgs, opts?: pulumi.CustomResourceOptions) {
    super("bridge", name, args, ["ifindex", "operState", "attachedInterfaces", "takenOver", "persistedBy", "persistenceDrift"], opts);
  }
}
