import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, Persistence, PersistenceBackend } from "./types";

/** How a {@link NatNetwork} reaches the outside (libvirt's forward modes). */
export type NatNetworkMode = "nat" | "route" | "isolated" | "open";

/** A fixed DHCP address for one guest. */
export interface NatNetworkDhcpHost {
  /** The guest NIC's MAC address (unicast, 52:54:00:12:34:56). */
  mac: pulumi.Input<string>;
  /** The address it always gets: inside the subnet, not the gateway. */
  ip: pulumi.Input<string>;
  /** Host name handed to the guest and resolvable through the network's DNS. */
  hostname?: pulumi.Input<string>;
}

/** DHCP served by the network's dnsmasq. */
export interface NatNetworkDhcp {
  /** First address of the dynamic range (inside the subnet). */
  start: pulumi.Input<string>;
  /** Last address of the dynamic range (not before start; the gateway must not be in the range). */
  end: pulumi.Input<string>;
  /** Lease time in seconds (120 – 31536000). Default 3600. */
  leaseTime?: pulumi.Input<number>;
  /** Fixed addresses by MAC. Changing them reloads dnsmasq (SIGHUP): leases are kept. */
  hosts?: pulumi.Input<pulumi.Input<NatNetworkDhcpHost>[]>;
}

/** A static DNS entry. */
export interface NatNetworkDnsHost {
  /** IPv4 address the names resolve to. */
  ip: pulumi.Input<string>;
  /** Names (DNS labels or dotted names); with a domain, short names also resolve as <name>.<domain>. */
  hostnames: pulumi.Input<pulumi.Input<string>[]>;
}

/** DNS served by the network's dnsmasq on the gateway address. */
export interface NatNetworkDns {
  /** Serve DNS on the gateway (port 53). Default true. */
  enabled?: pulumi.Input<boolean>;
  /** Local domain: names in it are answered here and never forwarded. */
  domain?: pulumi.Input<string>;
  /** Static entries. Changing them reloads dnsmasq (SIGHUP). */
  hosts?: pulumi.Input<pulumi.Input<NatNetworkDnsHost>[]>;
}

/** Arguments of a {@link NatNetwork}. */
export interface NatNetworkArgs {
  /** The host to manage. */
  connection: pulumi.Input<Connection>;
  /**
   * Network name: a letter, then letters, digits and '_', at most 15 characters.
   * It names the nft table (`kvmnet_nat_<name>`), the files under
   * /run/kvmnet/nat/<name>/ and the units. Changing it replaces the network.
   */
  name: pulumi.Input<string>;
  /** Bridge interface name (≤15 characters). Default `kvn-<name>` (shortened with a hash when too long). Changing it replaces the network. */
  bridgeName?: pulumi.Input<string>;
  /**
   * "nat" (default): masquerade the subnet out of the uplink; "route": forward
   * without masquerade; "isolated": forward nothing to or from the bridge;
   * "open": add no firewall rules. Changes in place, atomically.
   */
  mode?: pulumi.Input<NatNetworkMode>;
  /** IPv4 network in CIDR form with host bits zero, /8 – /30 (192.168.122.0/24). Changing it replaces the network. */
  subnet: pulumi.Input<string>;
  /** The bridge's address inside the subnet. Default the first usable address. Changing it replaces the network. */
  gateway?: pulumi.Input<string>;
  /** DHCP settings, or false (default) for none. Changes in place. */
  dhcp?: pulumi.Input<NatNetworkDhcp | false>;
  /** DNS settings. Default `{ enabled: true }`. Changes in place. */
  dns?: pulumi.Input<NatNetworkDns>;
  /** Interface the nat/route modes forward through. Default the default route's interface. Changes in place. */
  uplink?: pulumi.Input<string>;
  /** MTU of the bridge (68–65535). Unset leaves the kernel's. Changes in place. */
  mtu?: pulumi.Input<number>;
  /**
   * Whether the network comes back after a reboot (default "runtime": it does not).
   * Any other value (on "auto", any host whose network stack is detected) persists it
   * through systemd units of our own, whichever stack the host runs:
   * `kvmnet-nat-<name>.service` recreates the bridge, its address, the nft table and
   * ip_forward after network.target; `kvmnet-dnsmasq-<name>.service` is enabled; a
   * drop-in re-adds the table whenever nftables.service flushes the ruleset; forwarding
   * modes also write /etc/sysctl.d/90-kvmnet-nat-<name>.conf. Persisted copies live in
   * /etc/kvmnet/nat-<name>.*. Needs systemd. Changes in place, without touching the
   * live network.
   */
  persistence?: pulumi.Input<Persistence>;
  /**
   * Manage what already exists on the host under this network's names — a bridge
   * named `bridgeName` made by hand or by another tool, the table `kvmnet_nat_<name>`
   * and its state — instead of failing with a Conflict: their settings become the
   * declared ones, and delete removes them. What this resource's own interrupted
   * create left is taken over without it. Default false.
   */
  adopt?: pulumi.Input<boolean>;
}

/**
 * A libvirt-style virtual network on a remote host: a bridge with the gateway
 * address, an nft table of its own (`table inet kvmnet_nat_<name>`),
 * net.ipv4.ip_forward while a nat/route network needs it, and a dnsmasq bound
 * to the bridge for DHCP and DNS.
 *
 * Type token `pulumi-nodejs:dynamic/kvmnet:NatNetwork`; id `<host>/natNetwork/<name>`.
 * `name`, `bridgeName`, `subnet`, `gateway` and `connection.host` replace it;
 * `mode`, `dhcp`, `dns`, `uplink` and `mtu` update in place.
 *
 * `pulumi import` cannot bring it into a stack (the engine's Read for an import
 * carries no state, so the dynamic provider and the connection are missing):
 * declare it with `adopt: true` instead. A create interrupted after the host
 * applied it is taken over by the next `up` with the same inputs, without `adopt`.
 */
export class NatNetwork extends KvmnetResource {
  /** The host (credentials are secret in state). */
  declare public readonly connection: pulumi.Output<Connection>;
  /** Network name. */
  declare public readonly name: pulumi.Output<string>;
  /** Bridge interface name as applied (the default filled in). */
  declare public readonly bridgeName: pulumi.Output<string>;
  /** Mode as applied; missing after a refresh that found the table or its rules gone. */
  declare public readonly mode: pulumi.Output<NatNetworkMode | undefined>;
  /** IPv4 subnet. */
  declare public readonly subnet: pulumi.Output<string>;
  /** Gateway address; missing after a refresh that found it gone from the bridge. */
  declare public readonly gateway: pulumi.Output<string | undefined>;
  /** DHCP settings as applied; missing after a refresh that found dnsmasq dead. */
  declare public readonly dhcp: pulumi.Output<NatNetworkDhcp | false | undefined>;
  /** DNS settings as applied; missing after a refresh that found dnsmasq dead. */
  declare public readonly dns: pulumi.Output<NatNetworkDns | undefined>;
  /** The uplink in use by nat/route (resolved from the default route when not given). */
  declare public readonly uplink: pulumi.Output<string | undefined>;
  /** The bridge's actual MTU when mtu is managed. */
  declare public readonly mtu: pulumi.Output<number | undefined>;
  /** Where the boot-time configuration goes; "runtime" after a refresh that found it out of date (persistenceDrift). */
  declare public readonly persistence: pulumi.Output<Persistence>;
  /** The backend the boot-time configuration went to ("runtime": none). */
  declare public readonly persistedBy: pulumi.Output<PersistenceBackend>;
  /** Differences between the persisted files and the inputs, found by the last read (empty: in sync). */
  declare public readonly persistenceDrift: pulumi.Output<string[]>;
  declare public readonly adopt: pulumi.Output<boolean>;
  /** Conditions on the host that may hurt the network without stopping it (br_netfilter, sysctl files turning ip_forward off, Docker's FORWARD drop in isolated/open mode). */
  declare public readonly warnings: pulumi.Output<string[]>;
  /** Kernel interface index of the bridge (null when it is gone). */
  declare public readonly ifindex: pulumi.Output<number | null>;
  /** The bridge's MAC address. */
  declare public readonly macAddress: pulumi.Output<string | null>;
  /** Pid of the network's dnsmasq (null when none runs). Unchanged by a reload. */
  declare public readonly dnsmasqPid: pulumi.Output<number | null>;
  /** The systemd unit running the network's dnsmasq (`kvmnet-dnsmasq-<name>.service`); null on a host without systemd or when none runs. */
  declare public readonly dnsmasqUnit: pulumi.Output<string | null>;
  /** The network's nft table exists. */
  declare public readonly tablePresent: pulumi.Output<boolean>;
  /** net.ipv4.ip_forward is on. */
  declare public readonly ipForward: pulumi.Output<boolean>;

  constructor(name: string, args: NatNetworkArgs, opts?: pulumi.CustomResourceOptions) {
    super("natNetwork", name, args, ["warnings", "ifindex", "macAddress", "dnsmasqPid", "dnsmasqUnit", "tablePresent", "ipForward", "persistedBy", "persistenceDrift"], opts);
  }
}
