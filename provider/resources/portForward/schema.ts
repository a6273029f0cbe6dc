/**
 * PortForward inputs: the zod schema (check), port-range arithmetic, and the
 * internal name every forward derives from its identity (protocol, host
 * address, host port). The user gives no `name`: the identity IS the name, so
 * two forwards of the same identity collide on the table name as well as on
 * the port.
 */
import * as ipaddr from "ipaddr.js";
import { z } from "zod";
import { resourceConnection } from "../../host/connection";
import type { ConnectionInput } from "../../host";
import { DEFAULT_PERSISTENCE, Persistence, persistence } from "../../persist";

/** A run of ports, first ≤ last. A single port has first === last. */
export interface PortRange {
  first: number;
  last: number;
}

/**
 * A destination range whose ports differ from the host range is written as
 * an nft map with one element per port; the cap keeps the ruleset small.
 * Identical ranges need no map (the port is kept) and have no cap.
 */
export const MAX_REMAPPED_PORTS = 1024;

/** nft rule comments hold at most 128 bytes (NFTNL_UDATA_COMMENT_MAXLEN). */
export const MAX_DESCRIPTION = 128;

const portNumber = z.number().int("must be a whole number").min(1, "must be 1–65535").max(65535, "must be 1–65535");

/** `8000` or `"8000-8010"` → a normalised value: a number, or "first-last" when the range has more than one port. */
const portSpec = z.union([portNumber, z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(v);
  const first = m ? Number(m[1]) : NaN;
  const last = m ? Number(m[2]) : NaN;
  if (!m || first < 1 || last > 65535 || first > last || m[1].startsWith("0") || m[2].startsWith("0")) {
    ctx.addIssue({ code: "custom", message: 'must be a port 1–65535 or a range "first-last" with first ≤ last (e.g. "8000-8010")' });
    return z.NEVER;
  }
  return first === last ? first : `${first}-${last}`;
});

export type PortSpec = number | string;

export function toRange(p: PortSpec): PortRange {
  if (typeof p === "number") return { first: p, last: p };
  const [a, b] = p.split("-").map(Number);
  return { first: a, last: b };
}

export function fromRange(r: PortRange): PortSpec {
  return r.first === r.last ? r.first : `${r.first}-${r.last}`;
}

export const rangeSize = (r: PortRange) => r.last - r.first + 1;

/** An IPv4 unicast address a forward can target or listen on (dotted quad, no leading zeros). */
const ipv4Unicast = (what: string) =>
  z.string().refine((s) => {
    if (!ipaddr.IPv4.isValidFourPartDecimal(s) || !/^(0|[1-9]\d{0,2})(\.(0|[1-9]\d{0,2})){3}$/.test(s)) return false;
    const range = ipaddr.IPv4.parse(s).range();
    return !["unspecified", "broadcast", "multicast", "loopback"].includes(range);
  }, `must be an IPv4 ${what} address (dotted quad, e.g. 192.168.122.10): not 0.0.0.0, loopback, multicast or broadcast`);

/** An IPv4 network in CIDR form (a bare address means /32). Host bits must be zero. */
const ipv4Cidr = z.string().transform((s, ctx) => {
  const m = /^((?:0|[1-9]\d{0,2})(?:\.(?:0|[1-9]\d{0,2})){3})(?:\/(\d{1,2}))?$/.exec(s);
  if (!m || !ipaddr.IPv4.isValidFourPartDecimal(m[1]) || Number(m[2] ?? 32) > 32) {
    ctx.addIssue({ code: "custom", message: "must be an IPv4 network in CIDR form (10.0.0.0/8) or an IPv4 address" });
    return z.NEVER;
  }
  const prefix = Number(m[2] ?? 32);
  const network = ipaddr.IPv4.networkAddressFromCIDR(`${m[1]}/${prefix}`).toString();
  if (network !== m[1]) {
    ctx.addIssue({ code: "custom", message: `has host bits set (did you mean ${network}/${prefix}?)` });
    return z.NEVER;
  }
  return `${network}/${prefix}`;
});

/**
 * Description, written into an nft comment: printable ASCII without quotes or
 * backslashes (nft strings have no escapes), at most 128 characters.
 */
const description = z
  .string()
  .min(1, "must not be empty (leave it out instead)")
  .max(MAX_DESCRIPTION, `must be at most ${MAX_DESCRIPTION} characters (nft comment limit)`)
  .regex(/^[\x20-\x7e]+$/, "must be printable ASCII on one line")
  .refine((s) => !/["'\\`]/.test(s), "must not contain quotes or backslashes (it is written into an nft comment)");

const portForwardObject = z
  .object({
    connection: resourceConnection,
    protocol: z
      .enum(["tcp", "udp"], { error: () => ({ message: 'must be "tcp" or "udp"' }) })
      .describe('`"tcp"` or `"udp"`.')
      .meta({ onChange: "replace" }),
    hostPort: portSpec.describe('Host port (1–65535) or range (`"8000-8010"`) to forward.').meta({ onChange: "replace" }),
    destination: ipv4Unicast("unicast").describe("IPv4 address to forward to, usually a guest's (`192.168.122.10`)."),
    destinationPort: portSpec
      .optional()
      .describe('Port on the destination; with a `hostPort` range, a range of the same size (`"9000-9010"`) or its first port (`9000`).')
      .meta({ docDefault: "`hostPort`" }),
    hostAddress: ipv4Unicast("host").optional().describe("Forward only traffic to this host address.").meta({ docDefault: "every host address", onChange: "replace" }),
    sourceCidrs: z
      .array(ipv4Cidr)
      .max(256, "at most 256 entries")
      .default([])
      .describe(
        "Only clients from these IPv4 networks (`10.0.0.0/8`, or an address; at most 256) are forwarded; others reach the host's own port. Does not restrict the host itself.",
      )
      .meta({ docDefault: "`[]` (everyone)" }),
    hairpin: z
      .boolean()
      .default(true)
      .describe(
        "Also forward connections from the host itself, and from guests of the destination's own network that use the host address " +
          "(their source is masqueraded so replies return through the host).",
      ),
    description: description.optional().describe("Written into the nft rule's comment: printable ASCII without quotes or backslashes, ≤ 128 characters."),
    persistence: persistence
      .default(DEFAULT_PERSISTENCE)
      .describe(
        '`"runtime"`: until reboot. Any other value (systemd hosts; on `"auto"`, any host whose network stack is detected) persists the forward ' +
          "through a unit of our own, whichever stack the host runs: `kvmnet-pf-<name>.service` loads `/etc/kvmnet/pf-<name>.nft` after network.target, " +
          "and an nftables.service drop-in loads it again whenever that service flushes the ruleset.",
      ),
    // A table this provider wrote for this very resource (its forward rule's comment names this resource's id)
    // is taken over either way: that is what an interrupted create leaves.
    adopt: z
      .boolean()
      .default(false)
      .describe(
        "Manage the table of this forward's identity (`table ip kvmnet_pf_…`) that is already on the host but was not created by this resource — " +
          "made by hand, left by another stack, or by an interrupted create whose inputs changed since — instead of failing with a Conflict: " +
          "it is rewritten to the declared rules in one transaction (when that fails, put back as it was if its rules were readable as a forward, " +
          "else removed). Never takes another forward's overlapping table. Not needed for what this resource's own interrupted create made.",
      ),
  })
  .strict();

/** Inputs after check: destinationPort filled (same size as hostPort), sourceCidrs normalised. */
export interface PortForwardInputs {
  connection: ConnectionInput;
  protocol: "tcp" | "udp";
  hostPort: PortSpec;
  destination: string;
  destinationPort: PortSpec;
  hostAddress?: string;
  sourceCidrs: string[];
  hairpin: boolean;
  description?: string;
  /** Where the forward's boot-time configuration goes (any backend but "runtime": a unit of our own). */
  persistence: Persistence;
  /** Manage a table of this identity already on the host that this resource did not write. */
  adopt: boolean;
  /** Derived, never given by the user: see {@link deriveName}. */
  name: string;
}

/** The public inputs (what check returns and state keeps): everything but the derived name. */
export type PortForwardArgs = Omit<PortForwardInputs, "name">;

/**
 * `<protocol>_<address with '_' for '.', or "any">_<first>[_<last>]`, e.g.
 * `tcp_any_8080`, `udp_198_19_0_11_5000_5010`. Unique per identity, valid as
 * an nft identifier suffix and in ids.
 */
export function deriveName(i: { protocol: string; hostAddress?: string; hostPort: PortSpec }): string {
  const r = toRange(i.hostPort);
  const addr = i.hostAddress ? i.hostAddress.replace(/\./g, "_") : "any";
  return `${i.protocol}_${addr}_${r.first}${r.last !== r.first ? `_${r.last}` : ""}`;
}

/** The nft table (family ip) a forward owns. */
export function tableName(name: string): string {
  return `kvmnet_pf_${name}`;
}

function refine(v: z.output<typeof portForwardObject>, ctx: z.RefinementCtx): void {
  const host = toRange(v.hostPort);
  if (v.destinationPort !== undefined) {
    const dest = toRange(v.destinationPort);
    if (typeof v.destinationPort === "string" && rangeSize(dest) !== rangeSize(host)) {
      ctx.addIssue({ code: "custom", path: ["destinationPort"], message: `must be a range of the same size as hostPort (${rangeSize(host)} ports)` });
    } else if (typeof v.destinationPort === "number" && dest.first + rangeSize(host) - 1 > 65535) {
      ctx.addIssue({ code: "custom", path: ["destinationPort"], message: `the range it starts would pass port 65535 (hostPort has ${rangeSize(host)} ports)` });
    } else if (dest.first !== host.first && rangeSize(host) > MAX_REMAPPED_PORTS) {
      ctx.addIssue({ code: "custom", path: ["destinationPort"], message: `a range mapped to different ports may have at most ${MAX_REMAPPED_PORTS} ports` });
    }
  }
  const seen = new Set<string>();
  v.sourceCidrs.forEach((c, i) => {
    if (seen.has(c)) ctx.addIssue({ code: "custom", path: ["sourceCidrs", i], message: `lists ${c} twice` });
    seen.add(c);
  });
}

/** What check returns and state stores: normalised inputs without the derived name. */
export const portForwardArgsSchema = portForwardObject.superRefine(refine).transform((v): PortForwardArgs => {
  const host = toRange(v.hostPort);
  const destFirst = v.destinationPort === undefined ? host.first : toRange(v.destinationPort).first;
  const out: PortForwardArgs = {
    ...v,
    destinationPort: fromRange({ first: destFirst, last: destFirst + rangeSize(host) - 1 }),
  };
  return out;
});

/** The lifecycle's schema: the args plus the derived internal name. */
export const portForwardInputsSchema = portForwardArgsSchema.transform((v): PortForwardInputs => ({ ...v, name: deriveName(v) }));
