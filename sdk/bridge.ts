import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, LibvirtRegistration, NicModel, Persistence, PersistenceBackend } from "./types";

/** Arguments of a {@link Bridge}. Unset optional settings are left as the kernel has them. */
export interface BridgeArgs {
  /** The host to manage, and how to reach it: see Connection. On change: replace if the host changes (`host`, or `local`), else update. */
  connection: pulumi.Input<Connection>;
  /**
   * Interface name: 1–15 characters of `[A-Za-z0-9_.-]`, not starting with `-` or `.`, not `all`,
   * `default` or `bonding_masters`; a Bridge name must not contain `-port-` (its persisted files
   * would be another bridge's port files). The same rule holds for every interface-name input
   * (`ports`, NatNetwork `bridgeName`/`uplink`, VlanSubinterface `parent`/`name`/`bridge`). On
   * change: replace (deleted first when it has ports, which would collide).
   */
  name: pulumi.Input<string>;
  /** Spanning Tree Protocol (kernel STP). Default: `false`. */
  stp?: pulumi.Input<boolean>;
  /** STP forward delay, seconds, 0–30 (2–30 with STP on), 0.01 s steps. Default: kernel's (15 s). */
  forwardDelay?: pulumi.Input<number>;
  /** STP hello time, seconds, 1–10, 0.01 s steps. Default: kernel's (2 s). */
  helloTime?: pulumi.Input<number>;
  /** STP max message age, seconds, 6–40, 0.01 s steps. Default: kernel's (20 s). */
  maxAge?: pulumi.Input<number>;
  /** Bridge priority, 0–65535 (lower wins the root election). Default: kernel's (32768). */
  priority?: pulumi.Input<number>;
  /** How long learned MAC addresses are kept, seconds, 0–1000000, 0.01 s steps. Default: kernel's (300 s). */
  ageingTime?: pulumi.Input<number>;
  /** MTU of the bridge device, 68–65535. Default: kernel's. */
  mtu?: pulumi.Input<number>;
  /** Fixed unicast MAC address (`52:54:00:12:34:56`). Without it the kernel picks one (usually a port's). Default: kernel's. */
  macAddress?: pulumi.Input<string>;
  /**
   * 802.1Q VLAN filtering (needs a kernel with `CONFIG_BRIDGE_VLAN_FILTERING`; otherwise the update
   * fails as Unsupported and changes nothing). Default: kernel's.
   */
  vlanFiltering?: pulumi.Input<boolean>;
  /**
   * Interfaces to enslave. Each must exist and not be in another bridge; unless `takeOverUplink`,
   * it must also have no addresses and not carry the SSH management route or the default route. A
   * port that was down is brought up, and down again when released. Interfaces not listed (guest
   * taps) are left alone; a port removed from the list is released. Default: `[]`.
   */
  ports?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * CIDR addresses (IPv4 and IPv6), e.g. `192.168.50.1/24`. Unicast only; IPv6 link-local
   * (`fe80::/10`, which the kernel makes on every link and this provider does not manage), loopback
   * and unspecified addresses are refused at check. Other addresses on the bridge are left alone;
   * one removed from the list is removed. Default: `[]`.
   */
  addresses?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Manage a bridge of this name that already exists — made by hand or by another tool — (its
   * settings become the declared ones, and delete removes it) instead of failing with a Conflict
   * error. Not needed for a bridge this resource's own interrupted create made (see Interrupted
   * creates, adoption and `pulumi import`). Default: `false`.
   */
  adopt?: pulumi.Input<boolean>;
  /**
   * Allow ports that carry addresses or routes (the uplink NIC, even the SSH session's): their
   * addresses and non-kernel routes move onto the bridge, which takes the NIC's MAC; they move back
   * when the port is released or the bridge deleted. Such changes run under commit-confirm: the
   * host reverts them by itself unless a new SSH connection confirms them within
   * `confirmTimeoutSec`. Default: `false`.
   */
  takeOverUplink?: pulumi.Input<boolean>;
  /**
   * Seconds, 15–3600: how long the host waits for a new SSH connection to confirm a change of the
   * management path before it reverts it. Default: `60`.
   */
  confirmTimeoutSec?: pulumi.Input<number>;
  /**
   * Where the boot-time configuration goes: `"auto"` (the stack the host runs), `"networkd"`,
   * `"networkmanager"` (ports must be Ethernet NICs, bridge times whole seconds), `"ifupdown"`, or
   * `"runtime"` (nothing: the bridge lasts until the host reboots, and a `refresh` afterwards shows
   * it gone). See Persistence. With `takeOverUplink`: networkd and NetworkManager (the uplink's
   * addresses and routes go into the bridge's configuration); ifupdown and DHCP-configured uplinks
   * are refused. Default: `"runtime"`.
   */
  persistence?: pulumi.Input<Persistence>;
  /**
   * Register the bridge in libvirt (a network of the host-bridge form, `<forward mode='bridge'/>`),
   * so VMs attach by name. Needs libvirtd on the host. Default: not registered.
   */
  libvirt?: pulumi.Input<LibvirtRegistration>;
  /**
   * The guest NIC model in `libvirtInterfaceXml` and `qemuNetdevArgs`: `"virtio-net-pci"`,
   * `"e1000"` or `"rtl8139"`. Nothing on the host depends on it. Default: `"virtio-net-pci"`.
   */
  model?: pulumi.Input<NicModel>;
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

  /** The registration as the host has it (undefined when it is missing or changed out of band: refresh shows it, the next update repairs it). */
  declare public readonly libvirt: pulumi.Output<LibvirtRegistration | undefined>;
  declare public readonly model: pulumi.Output<NicModel>;
  /** The `<interface>` element a libvirt domain attaches with: `type='network'` when registered, else `type='bridge'`, with the model. */
  declare public readonly libvirtInterfaceXml: pulumi.Output<string>;
  /** QEMU's `-netdev bridge,id=…,br=…` and `-device <model>,netdev=…` (one argv word each; add `,mac=` per guest; QEMU's bridge helper must allow the bridge). */
  declare public readonly qemuNetdevArgs: pulumi.Output<string[]>;
  constructor(name: string, args: BridgeArgs, opts?: pulumi.CustomResourceOptions) {
    super("bridge", name, args, ["libvirtInterfaceXml", "qemuNetdevArgs", "ifindex", "operState", "attachedInterfaces", "takenOver", "persistedBy", "persistenceDrift"], opts);
  }
}
