import * as pulumi from "@pulumi/pulumi";
import { KvmnetResource } from "./provider";
import { Connection, Persistence, PersistenceBackend } from "./types";

/** Arguments of a {@link PortForward}. */
export interface PortForwardArgs {
  /** The host to manage, and how to reach it: see Connection. On change: replace if the host changes (`host`, or `local`), else update. */
  connection: pulumi.Input<Connection>;
  /** `"tcp"` or `"udp"`. On change: replace. */
  protocol: pulumi.Input<"tcp" | "udp">;
  /** Host port (1–65535) or range (`"8000-8010"`) to forward. On change: replace. */
  hostPort: pulumi.Input<number | string>;
  /** IPv4 address to forward to, usually a guest's (`192.168.122.10`). */
  destination: pulumi.Input<string>;
  /** Port on the destination; with a `hostPort` range, a range of the same size (`"9000-9010"`) or its first port (`9000`). Default: `hostPort`. */
  destinationPort?: pulumi.Input<number | string>;
  /** Forward only traffic to this host address. Default: every host address. On change: replace. */
  hostAddress?: pulumi.Input<string>;
  /**
   * Only clients from these IPv4 networks (`10.0.0.0/8`, or an address; at most 256) are forwarded;
   * others reach the host's own port. Does not restrict the host itself. Default: `[]` (everyone).
   */
  sourceCidrs?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Also forward connections from the host itself, and from guests of the destination's own network
   * that use the host address (their source is masqueraded so replies return through the host).
   * Default: `true`.
   */
  hairpin?: pulumi.Input<boolean>;
  /** Written into the nft rule's comment: printable ASCII without quotes or backslashes, ≤ 128 characters. */
  description?: pulumi.Input<string>;
  /**
   * `"runtime"`: until reboot. Any other value (systemd hosts; on `"auto"`, any host whose network
   * stack is detected) persists the forward through a unit of our own, whichever stack the host
   * runs: `kvmnet-pf-<name>.service` loads `/etc/kvmnet/pf-<name>.nft` after network.target, and an
   * nftables.service drop-in loads it again whenever that service flushes the ruleset. Default:
   * `"runtime"`.
   */
  persistence?: pulumi.Input<Persistence>;
  /**
   * Manage the table of this forward's identity (`table ip kvmnet_pf_…`) that is already on the
   * host but was not created by this resource — made by hand, left by another stack, or by an
   * interrupted create whose inputs changed since — instead of failing with a Conflict: it is
   * rewritten to the declared rules in one transaction (when that fails, put back as it was if its
   * rules were readable as a forward, else removed). Never takes another forward's overlapping
   * table. Not needed for what this resource's own interrupted create made. Default: `false`.
   */
  adopt?: pulumi.Input<boolean>;
}

/**
 * A port forward (DNAT) on a remote host: one nftables table
 * `table ip kvmnet_pf_<protocol>_<address|any>_<port>` per forward.
 *
 * Type token `pulumi-nodejs:dynamic/kvmnet:PortForward`; id
 * `<host>/portforward/<protocol>_<address|any>_<port>[_<last>]`. Changing
 * `protocol`, `hostPort`, `hostAddress` or `connection.host` replaces it;
 * everything else updates in place. A second forward taking the same packets
 * (same protocol, overlapping ports, same or any address) fails with Conflict.
 * The forward does not turn on `net.ipv4.ip_forward`: `warnings` says when it is off.
 *
 * `pulumi import` cannot bring it into a stack (the engine's Read for an import
 * carries no state, so the dynamic provider and the connection are missing):
 * declare it with `adopt: true` instead. A create interrupted after the host
 * applied it is taken over by the next `up` with the same inputs, without `adopt`.
 */
export class PortForward extends KvmnetResource {
  /** The host connection (secret in state). */
  declare public readonly connection: pulumi.Output<Connection>;
  /** "tcp" or "udp". */
  declare public readonly protocol: pulumi.Output<"tcp" | "udp">;
  /** The forwarded host port (a number) or range ("8000-8010"). */
  declare public readonly hostPort: pulumi.Output<number | string>;
  /** The destination address as the host's DNAT rule has it. */
  declare public readonly destination: pulumi.Output<string>;
  /** The destination port or range as applied (defaulted to hostPort). */
  declare public readonly destinationPort: pulumi.Output<number | string>;
  /** The host address the forward listens on; undefined means every address. */
  declare public readonly hostAddress: pulumi.Output<string | undefined>;
  /** The allowed source networks as the host has them (empty: everyone). */
  declare public readonly sourceCidrs: pulumi.Output<string[]>;
  /** Whether the host itself and the destination's own network reach the forward. */
  declare public readonly hairpin: pulumi.Output<boolean>;
  /** The rule comment as the host has it. */
  declare public readonly description: pulumi.Output<string | undefined>;
  /** The nft table (family ip) holding the forward. */
  declare public readonly table: pulumi.Output<string>;
  /** Why the forward may not carry traffic though it is applied (e.g. ip_forward is 0). */
  declare public readonly warnings: pulumi.Output<string[]>;
  /** Differences between the host's table and what this resource wrote (empty when none). */
  declare public readonly drift: pulumi.Output<string[]>;
  /** Where the boot-time configuration goes; "runtime" after a refresh that found it out of date (persistenceDrift). */
  declare public readonly persistence: pulumi.Output<Persistence>;
  /** The backend the boot-time configuration went to ("runtime": none). */
  declare public readonly persistedBy: pulumi.Output<PersistenceBackend>;
  /** Differences between the persisted files and the inputs, found by the last read (empty: in sync). */
  declare public readonly persistenceDrift: pulumi.Output<string[]>;
  declare public readonly adopt: pulumi.Output<boolean>;

  constructor(name: string, args: PortForwardArgs, opts?: pulumi.CustomResourceOptions) {
    super("portForward", name, args, ["table", "warnings", "drift", "persistedBy", "persistenceDrift"], opts);
  }
}
