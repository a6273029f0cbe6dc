/**
 * PortForward planning: desired inputs vs the observed host → the table to
 * write (or a Conflict). Pure.
 */
import * as ipaddr from "ipaddr.js";
import { KvmnetError } from "../../errors";
import { KINDS, resourceId } from "../../identity";
import type { HostSnapshot } from "../../observe";
import { resolveBackend } from "../../persist";
import { ETC_DIR } from "../../persist/files";
import { BootHooks, bootHooksToDisarm, nftablesDropInPath, SYSTEMD_DIR } from "../../persist/systemd";
import { keysOverlap, listForwardTables, observeForward, OWNER_PREFIX } from "./observe";
import { fromRange, PortForwardInputs, PortRange, tableName, toRange } from "./schema";

/** Everything the nft table of one forward says. */
export interface ForwardTable {
  table: string;
  protocol: "tcp" | "udp";
  hostAddress?: string;
  hostRange: PortRange;
  destination: string;
  destRange: PortRange;
  sourceCidrs: string[];
  hairpin: boolean;
  /** The destination's own subnet on the host: its hairpin traffic is masqueraded. */
  masqueradeSubnet?: string;
  description?: string;
  /** Written into the forward rule's comment, so a conflicting forward can name it. */
  owner: string;
}

/** The kind's spelling in ids, the lifecycle and the persistence manifests. */
export const PF_KIND = KINDS.portForward.idKind;

/** A persisted forward's boot unit. */
export const pfBootUnit = (name: string) => `kvmnet-pf-${name}.service`;

/** Where a persisted forward's files go (see persist.ts). */
export function pfPersistPaths(name: string) {
  return {
    table: `${ETC_DIR}/pf-${name}.nft`,
    bootUnit: `${SYSTEMD_DIR}/${pfBootUnit(name)}`,
    nftDropIn: nftablesDropInPath(`pf-${name}`),
  };
}

/** The boot unit and nftables drop-in forward `name` persisted, when it did. */
function hooksToDisarm(name: string, snap: HostSnapshot): BootHooks | undefined {
  const p = pfPersistPaths(name);
  return bootHooksToDisarm(PF_KIND, name, p.bootUnit, p.nftDropIn, snap);
}

export interface ForwardPlan {
  table: string;
  /** The host has the table now (update rewrites it in one transaction). */
  exists: boolean;
  desired: ForwardTable;
  /** What to restore when the apply fails after writing (undefined = remove the table). */
  previous?: ForwardTable;
  /** Persistence coming off ("runtime"): the boot-time hooks to take off first. */
  disarm?: BootHooks;
}

/** `<host>/portforward/<name>`: the resource id, as the lifecycle makes it. */
export function forwardId(i: Pick<PortForwardInputs, "connection" | "name">): string {
  return resourceId(PF_KIND, i.connection, i.name);
}

/**
 * The host subnet (IPv4, not /32) holding `destination`, longest prefix
 * first: traffic from it to the forward comes back in on the same network and
 * needs masquerading so the reply returns through the host.
 */
export function destinationSubnet(snap: HostSnapshot, destination: string): string | undefined {
  const dest = ipaddr.IPv4.parse(destination);
  let best: { cidr: string; prefix: number } | undefined;
  for (const a of snap.addrs) {
    for (const info of a.addr_info) {
      if (info.family !== "inet" || info.prefixlen >= 32 || info.scope === "host") continue;
      const net = ipaddr.IPv4.networkAddressFromCIDR(`${info.local}/${info.prefixlen}`);
      if (dest.match(net, info.prefixlen) && (!best || info.prefixlen > best.prefix)) {
        best = { cidr: `${net.toString()}/${info.prefixlen}`, prefix: info.prefixlen };
      }
    }
  }
  return best?.cidr;
}

/** The table `inputs` asks for on this host. */
export function desiredTable(inputs: PortForwardInputs, snap: HostSnapshot): ForwardTable {
  const id = forwardId(inputs);
  const owner = (OWNER_PREFIX + id).length <= 128 ? id : inputs.name;
  return {
    table: tableName(inputs.name),
    protocol: inputs.protocol,
    hostAddress: inputs.hostAddress,
    hostRange: toRange(inputs.hostPort),
    destination: inputs.destination,
    destRange: toRange(inputs.destinationPort),
    sourceCidrs: inputs.sourceCidrs,
    hairpin: inputs.hairpin,
    masqueradeSubnet: inputs.hairpin ? destinationSubnet(snap, inputs.destination) : undefined,
    description: inputs.description,
    owner,
  };
}

function describeKey(k: { protocol: string; hostAddress?: string; hostRange: PortRange }): string {
  return `${k.protocol} port ${fromRange(k.hostRange)} on ${k.hostAddress ?? "every address"}`;
}

/**
 * The table as the host has it, in the form the renderer writes, when every
 * field of it could be read back (what an undo restores); undefined otherwise.
 */
export function observedTable(snap: HostSnapshot, table: string): ForwardTable | undefined {
  const o = observeForward(snap, table);
  if (!o || o.anomalies.length > 0 || o.destination === undefined || o.destinationPort === undefined || o.owner === undefined) return undefined;
  return {
    table,
    protocol: o.protocol,
    hostAddress: o.hostAddress,
    hostRange: o.hostRange,
    destination: o.destination,
    destRange: toRange(o.destinationPort),
    sourceCidrs: o.sourceCidrs,
    hairpin: o.hairpin,
    masqueradeSubnet: o.masqueradeSubnet,
    description: o.description,
    owner: o.owner,
  };
}

/**
 * Plan writing the forward. `previous` is the old inputs on update (the table
 * is then ours; the lifecycle also passes the inputs themselves when a create
 * finds the table its own lost create made). A table of this identity that is
 * not ours is a Conflict unless `adopt` is set. Throws Unsupported without
 * nft, Conflict when another forward takes any of the same packets.
 */
export function planPortForward(desired: PortForwardInputs, snap: HostSnapshot, previous?: PortForwardInputs): ForwardPlan {
  if (snap.nftables === undefined) {
    throw new KvmnetError({ kind: "Unsupported", message: "the host has no nft command", hint: "install nftables (Debian/Ubuntu: apt-get install nftables)" });
  }
  const want = desiredTable(desired, snap);
  const key = { protocol: want.protocol, hostAddress: want.hostAddress, hostRange: want.hostRange };
  const own = observeForward(snap, want.table);
  for (const other of listForwardTables(snap)) {
    const mine = other.table === want.table;
    if (mine && (previous || desired.adopt)) continue;
    if (!keysOverlap(key, other)) continue;
    const o = mine ? own : observeForward(snap, other.table);
    const ownerText = o?.owner ? `PortForward ${o.owner}` : `table ip ${other.table}`;
    const target = o?.destination ? ` → ${o.destination}:${o.destinationPort ?? "?"}` : "";
    const desc = o?.description ? ` ("${o.description}")` : "";
    throw new KvmnetError({
      kind: "Conflict",
      message: `${describeKey(key)} is already forwarded by ${ownerText} (${describeKey(other)}${target}${desc}, table ip ${other.table})`,
      hint: mine
        ? `that table has this forward's identity: set adopt: true to manage it as this forward (its rules become the declared ones; e.g. a table made by hand, or left by an interrupted create whose inputs changed since), or remove the other forward first`
        : "choose another host port or host address, or remove the other forward first",
    });
  }
  const persisting = resolveBackend(desired.persistence, snap, `${PF_KIND} ${desired.name}`) !== "runtime";
  const disarm = persisting ? undefined : hooksToDisarm(desired.name, snap);
  // What a failed rewrite restores: the old inputs' table on update; on a take-over, the table as it was.
  const restore = own ? (previous ? desiredTable(previous, snap) : observedTable(snap, want.table)) : undefined;
  return {
    table: want.table,
    exists: own !== undefined,
    desired: want,
    previous: restore,
    ...(disarm ? { disarm } : {}),
  };
}

export interface ForwardDeletePlan {
  table: string;
  exists: boolean;
  /** The boot-time hooks the forward persisted through, taken off before the table goes. */
  disarm?: BootHooks;
}

/** Remove the table when the host has it (and the boot-time hooks when there are); nothing to do otherwise. */
export function planPortForwardDelete(inputs: PortForwardInputs, snap: HostSnapshot): ForwardDeletePlan {
  const table = tableName(inputs.name);
  const disarm = hooksToDisarm(inputs.name, snap);
  return { table, exists: observeForward(snap, table) !== undefined, ...(disarm ? { disarm } : {}) };
}
