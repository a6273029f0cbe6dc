/**
 * Read port forwards back from the host's `nft -j list ruleset`. Pure.
 *
 * Every forward owns one `table ip kvmnet_pf_<name>`; its identity
 * (protocol, address, port range) is in the table name, so conflicts are
 * found from names alone, and the rest (destination, sources, hairpin,
 * description, owner) is parsed from the rules, so hand edits show as drift.
 * (nft 1.0.6 does not put table comments into its JSON, which is why the
 * owner lives in a rule comment.)
 */
import type { HostSnapshot } from "../../observe";
import { fromRange, PortRange, PortSpec } from "./schema";

export const TABLE_PREFIX = "kvmnet_pf_";
const TABLE_RE = /^kvmnet_pf_(tcp|udp)_(any|\d{1,3}_\d{1,3}_\d{1,3}_\d{1,3})_(\d{1,5})(?:_(\d{1,5}))?$/;
/** Prefix of the forward chain rule's comment, followed by the owner's id. */
export const OWNER_PREFIX = "kvmnet portforward ";

/** The identity a table name encodes. */
export interface ForwardKey {
  table: string;
  protocol: "tcp" | "udp";
  /** undefined = every local address. */
  hostAddress?: string;
  hostRange: PortRange;
}

/** A forward as the host has it. Fields the rules no longer show are undefined. */
export interface ObservedForward extends ForwardKey {
  destination?: string;
  destinationPort?: PortSpec;
  /** Normalised "a.b.c.d/n", in the order nft lists them. */
  sourceCidrs: string[];
  description?: string;
  hairpin: boolean;
  /** Source network of the hairpin masquerade rule, when there is one. */
  masqueradeSubnet?: string;
  forwardAccept: boolean;
  owner?: string;
  /** What about the table does not look like something we wrote. */
  anomalies: string[];
}

export function parseTableName(table: string): ForwardKey | undefined {
  const m = TABLE_RE.exec(table);
  if (!m) return undefined;
  const first = Number(m[3]);
  const last = m[4] !== undefined ? Number(m[4]) : first;
  return {
    table,
    protocol: m[1] as "tcp" | "udp",
    hostAddress: m[2] === "any" ? undefined : m[2].replace(/_/g, "."),
    hostRange: { first, last },
  };
}

type Json = Record<string, unknown>;
interface NftRule {
  chain: string;
  comment?: string;
  expr: Json[];
}

/** Tables of family ip whose names are ours, with their rules. */
function ourTables(snap: HostSnapshot): Map<string, NftRule[]> {
  const out = new Map<string, NftRule[]>();
  for (const item of snap.nftables ?? []) {
    const t = item.table as Json | undefined;
    if (t && t.family === "ip" && typeof t.name === "string" && t.name.startsWith(TABLE_PREFIX)) out.set(t.name, []);
  }
  for (const item of snap.nftables ?? []) {
    const r = item.rule as Json | undefined;
    if (!r || r.family !== "ip" || typeof r.table !== "string") continue;
    const rules = out.get(r.table);
    if (rules) rules.push({ chain: String(r.chain), comment: typeof r.comment === "string" ? r.comment : undefined, expr: Array.isArray(r.expr) ? (r.expr as Json[]) : [] });
  }
  return out;
}

/** Every kvmnet port-forward table on the host (identity from the name). */
export function listForwardTables(snap: HostSnapshot): ForwardKey[] {
  return [...ourTables(snap).keys()].map(parseTableName).filter((k): k is ForwardKey => k !== undefined);
}

function payload(e: Json | undefined): { protocol?: string; field?: string } | undefined {
  const p = (e as { payload?: { protocol?: string; field?: string } } | undefined)?.payload;
  return p && typeof p === "object" ? p : undefined;
}

function matches(rule: NftRule): { op: string; left: Json; right: unknown }[] {
  return rule.expr.filter((e) => e.match).map((e) => e.match as { op: string; left: Json; right: unknown });
}

function portOf(right: unknown): PortRange | undefined {
  if (typeof right === "number") return { first: right, last: right };
  const r = (right as { range?: unknown[] } | undefined)?.range;
  if (Array.isArray(r) && typeof r[0] === "number" && typeof r[1] === "number") return { first: r[0], last: r[1] };
  return undefined;
}

function cidrOf(v: unknown): string | undefined {
  if (typeof v === "string") return `${v}/32`;
  const p = (v as { prefix?: { addr?: unknown; len?: unknown } } | undefined)?.prefix;
  if (p && typeof p.addr === "string" && typeof p.len === "number") return `${p.addr}/${p.len}`;
  return undefined;
}

/** The dnat target: address and the destination port range for `host` (undefined when unreadable). */
function dnatOf(rule: NftRule, host: PortRange): { addr?: string; port?: PortRange; ok: boolean } {
  const d = rule.expr.find((e) => e.dnat)?.dnat as { addr?: unknown; port?: unknown } | undefined;
  if (!d) return { ok: false };
  const addr = typeof d.addr === "string" ? d.addr : undefined;
  if (d.port === undefined) return { addr, port: host, ok: true };
  if (typeof d.port === "number") return { addr, port: { first: d.port, last: d.port }, ok: true };
  const set = (d.port as { map?: { data?: { set?: unknown } } }).map?.data?.set;
  if (Array.isArray(set) && set.length > 0) {
    // A port map written by us: host port k → k + offset for every port of the range.
    const pairs = set.filter((p): p is [number, number] => Array.isArray(p) && typeof p[0] === "number" && typeof p[1] === "number");
    const offset = pairs[0] ? pairs[0][1] - pairs[0][0] : 0;
    const contiguous =
      pairs.length === set.length &&
      pairs.every((p) => p[1] - p[0] === offset) &&
      pairs.length === host.last - host.first + 1 &&
      pairs.every((p) => p[0] >= host.first && p[0] <= host.last);
    if (contiguous) return { addr, port: { first: host.first + offset, last: host.last + offset }, ok: true };
  }
  return { addr, ok: false };
}

/** The forward in table `table`, or undefined when the table does not exist. */
export function observeForward(snap: HostSnapshot, table: string): ObservedForward | undefined {
  const rules = ourTables(snap).get(table);
  const key = parseTableName(table);
  if (!rules || !key) return undefined;
  const obs: ObservedForward = { ...key, sourceCidrs: [], hairpin: false, forwardAccept: false, anomalies: [] };

  const dnatRules = rules.filter((r) => r.chain === "prerouting" && r.expr.some((e) => e.dnat));
  if (dnatRules.length !== 1) obs.anomalies.push(`prerouting has ${dnatRules.length} DNAT rules, expected 1`);
  const pre = dnatRules[0];
  if (pre) {
    obs.description = pre.comment;
    let port: PortRange | undefined;
    for (const m of matches(pre)) {
      const p = payload(m.left);
      if (p?.protocol === "ip" && p.field === "saddr" && m.op === "==") {
        const set = (m.right as { set?: unknown[] } | undefined)?.set;
        for (const v of Array.isArray(set) ? set : [m.right]) {
          const c = cidrOf(v);
          if (c) obs.sourceCidrs.push(c);
          else obs.anomalies.push("unreadable source address match");
        }
      } else if (p?.protocol === "ip" && p.field === "daddr" && m.op === "==") {
        if (typeof m.right === "string" && m.right !== key.hostAddress)
          obs.anomalies.push(`prerouting matches destination address ${m.right}, table name says ${key.hostAddress ?? "any"}`);
      } else if (p?.field === "dport") {
        port = portOf(m.right);
        if (p.protocol !== key.protocol) obs.anomalies.push(`prerouting matches protocol ${p.protocol}, table name says ${key.protocol}`);
      }
    }
    if (!port || port.first !== key.hostRange.first || port.last !== key.hostRange.last) {
      obs.anomalies.push(`prerouting matches port ${port ? fromRange(port) : "(none)"}, table name says ${fromRange(key.hostRange)}`);
    }
    const d = dnatOf(pre, key.hostRange);
    obs.destination = d.addr;
    if (d.port) obs.destinationPort = fromRange(d.port);
    if (!d.ok) obs.anomalies.push("the DNAT target is not one this provider writes");
  }
  obs.hairpin = rules.some((r) => r.chain === "output" && r.expr.some((e) => e.dnat));
  const fwd = rules.find((r) => r.chain === "forward" && r.expr.some((e) => "accept" in e));
  obs.forwardAccept = fwd !== undefined;
  if (fwd?.comment?.startsWith(OWNER_PREFIX)) obs.owner = fwd.comment.slice(OWNER_PREFIX.length);
  const masq = rules.find((r) => r.chain === "postrouting" && r.expr.some((e) => "masquerade" in e));
  if (masq) {
    for (const m of matches(masq)) {
      const p = payload(m.left);
      if (p?.protocol === "ip" && p.field === "saddr") obs.masqueradeSubnet = cidrOf(m.right);
    }
  }
  return obs;
}

/** Ranges overlap (inclusive). */
export function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.first <= b.last && b.first <= a.last;
}

/**
 * Whether two forward identities would take the same packets: same protocol,
 * overlapping ports, and the same address (a forward without an address takes
 * every address, so it overlaps every other).
 */
export function keysOverlap(a: Omit<ForwardKey, "table">, b: Omit<ForwardKey, "table">): boolean {
  return a.protocol === b.protocol && rangesOverlap(a.hostRange, b.hostRange) && (!a.hostAddress || !b.hostAddress || a.hostAddress === b.hostAddress);
}
