import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, LibvirtRegistration, NicModel, Persistence, PersistenceBackend } from "./types";

/** How a {@link NatNetwork} reaches the outside (libvirt's forward modes). */
export type NatNetworkMode = "nat" | "route" | "isolated" | "open";

/** A fixed DHCP address for one guest. */
export interface NatNetworkDhcpHost {
  /** The guest NIC's MAC address (unicast, `52:54:00:12:34:56`). */
  mac: pulumi.Input<string>;
  /** The address it always gets: inside the subnet, not the gateway. */
  ip: pulumi.Input<string>;
  /** Host name handed to the guest and resolvable through the network's DNS (what dnsmasq reads as one: see `dhcp`). */
  hostname?: pulumi.Input<string>;
}

/** DHCP served by the network's dnsmasq. */
export interface NatNetworkDhcp {
  /** First address of the dynamic range, inside the subnet. */
  start: pulumi.Input<string>;
  /** Last address of the dynamic range: inside the subnet, not before `start`; the range must not hold the gateway. */
  end: pulumi.Input<string>;
  /** Lease time in whole seconds, 120–31536000. Default: `3600`. */
  leaseTime?: pulumi.Input<number>;
  /** Fixed addresses by MAC. Changing them reloads dnsmasq (SIGHUP): leases are kept. Default: `[]`. */
  hosts?: pulumi.Input<pulumi.Input<NatNetworkDhcpHost>[]>;
}

/** A static DNS entry. */
export interface NatNetworkDnsHost {
  /** IPv4 address the names resolve to. */
  ip: pulumi.Input<string>;
  /** Names (DNS labels or dotted names), at least one; with a domain, short names also resolve as `<name>.<domain>`. */
  hostnames: pulumi.Input<pulumi.Input<string>[]>;
}

/** DNS served by the network's dnsmasq on the gateway address. */
export interface NatNetworkDns {
  /** Serve DNS on the gateway (port 53). Default: `true`. */
  enabled?: pulumi.Input<boolean>;
  /** Local domain: guests' names resolve as `<name>.<domain>`, and queries for it are answered here, never forwarded. */
  domain?: pulumi.Input<string>;
  /** Static entries. Changing them reloads dnsmasq (SIGHUP). Default: `[]`. */
  hosts?: pulumi.Input<pulumi.Input<NatNetworkDnsHost>[]>;
}

/** Arguments of a {@link NatNetwork}. */
export interface NatNetworkArgs {
  /** The host to manage, and how to reach it: see Connection. On change: replace if the host changes (`host`, or `local`), else update. */
  connection: pulumi.Input<Connection>;
  /**
   * A letter, then letters, digits or `_`; at most 15 characters. It names the nft table
   * (`kvmnet_nat_<name>`), the files under `/run/kvmnet/nat/<name>/` and the units. On change:
   * replace.
   */
  name: pulumi.Input<string>;
  /** The bridge interface. Default: `kvn-<name>` (shortened with a hash when too long). On change: replace. */
  bridgeName?: pulumi.Input<string>;
  /**
   * `nat` masquerades the subnet out of the uplink (not to 224.0.0.0/24 or 255.255.255.255, as
   * libvirt); `route` forwards without masquerade; `isolated` forwards nothing to or from the
   * bridge (guests reach each other and the gateway); `open` adds no rules. In every mode a
   * `PortForward` to a guest works (see Forwards into a network). Default: `"nat"`. On change:
   * update (one atomic nft transaction).
   */
  mode?: pulumi.Input<NatNetworkMode>;
  /** IPv4 network in CIDR form, host bits zero, /8–/30 (`192.168.122.0/24`). Must not overlap an address on the host. On change: replace. */
  subnet: pulumi.Input<string>;
  /** The bridge's address, inside the subnet. Default: first usable address. On change: replace. */
  gateway?: pulumi.Input<string>;
  /**
   * `false` for none, or `{ start, end, leaseTime (3600 s), hosts: [{ mac, ip, hostname }] }`.
   * `leaseTime`: whole seconds, 120–31536000. `hostname`: a DNS name (labels of letters, digits,
   * `-`) that dnsmasq's dhcp-host line reads as a name: not `ignore` or `infinite` (any case), not
   * a lease time (digits with an optional `s`/`m`/`h`/`d`/`w`), not ending in an all-digit label,
   * not address-shaped (`10.66.0.77`, `0x0a.0x01`); a name with a domain part (`web.lab`) only when
   * that part (after the first `.`) is `dns.domain` and DNS is enabled, as dnsmasq drops it
   * otherwise. Default: `false`. On change: update; host entries reload dnsmasq with SIGHUP,
   * keeping leases.
   */
  dhcp?: pulumi.Input<NatNetworkDhcp | false>;
  /**
   * `{ enabled, domain, hosts: [{ ip, hostnames }] }`; names in `domain` are answered locally and
   * never forwarded. `domain` and `hostnames`: DNS names (labels of letters, digits, `-`, ≤ 253
   * characters) not ending in an all-digit label and not address-shaped. Default: `{ enabled: true
   * }`. On change: update (SIGHUP for host entries).
   */
  dns?: pulumi.Input<NatNetworkDns>;
  /** Interface `nat`/`route` forward through. Default: the default route's interface. */
  uplink?: pulumi.Input<string>;
  /** Bridge MTU, 68–65535. Default: kernel's. */
  mtu?: pulumi.Input<number>;
  /**
   * `"runtime"`: until reboot. Any other value (systemd hosts; on `"auto"`, any host whose network
   * stack is detected) persists the network through units of our own, whichever stack the host
   * runs: `kvmnet-nat-<name>.service` recreates the bridge, its address, the table and ip_forward
   * at boot, dnsmasq's unit is enabled, a sysctl.d file (forwarding modes) and an nftables.service
   * drop-in keep ip_forward and the table through that service's flush. Changing it leaves the live
   * network alone. Default: `"runtime"`.
   */
  persistence?: pulumi.Input<Persistence>;
  /**
   * Manage what already exists under this network's names instead of failing with a Conflict: a
   * bridge named `bridgeName` made by hand or by another tool (it gets the gateway address and MTU;
   * its other addresses and ports stay), the table `kvmnet_nat_<name>` and its state. Their
   * settings become the declared ones; delete removes them, bridge included. Not needed for what
   * this resource's own interrupted create made. Default: `false`.
   */
  adopt?: pulumi.Input<boolean>;
  /**
   * Register the network's bridge in libvirt (a network of the host-bridge form, `<forward
   * mode='bridge'/>`), so VMs attach by name. Needs libvirtd on the host. Default: not registered.
   */
  libvirt?: pulumi.Input<LibvirtRegistration>;
  /**
   * The guest NIC model in `libvirtInterfaceXml` and `qemuNetdevArgs`: `"virtio-net-pci"`,
   * `"e1000"` or `"rtl8139"`. Nothing on the host depends on it. Default: `"virtio-net-pci"`.
   */
  model?: pulumi.Input<NicModel>;
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

  /** The registration as the host has it (undefined when it is missing or changed out of band: refresh shows it, the next update repairs it). */
  declare public readonly libvirt: pulumi.Output<LibvirtRegistration | undefined>;
  declare public readonly model: pulumi.Output<NicModel>;
  /** The `<interface>` element a libvirt domain attaches with: `type='network'` when registered, else `type='bridge'`, with the model. */
  declare public readonly libvirtInterfaceXml: pulumi.Output<string>;
  /** QEMU's `-netdev bridge,id=…,br=…` and `-device <model>,netdev=…` (one argv word each; add `,mac=` per guest; QEMU's bridge helper must allow the bridge). */
  declare public readonly qemuNetdevArgs: pulumi.Output<string[]>;
  constructor(name: string, args: NatNetworkArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      "natNetwork",
      name,
      args,
      ["libvirtInterfaceXml", "qemuNetdevArgs", "warnings", "ifindex", "macAddress", "dnsmasqPid", "dnsmasqUnit", "tablePresent", "ipForward", "persistedBy", "persistenceDrift"],
      opts,
    );
  }
}
