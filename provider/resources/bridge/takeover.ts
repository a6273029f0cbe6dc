/**
 * What a taken-over uplink brings onto the bridge, and how that survives a reboot.
 *
 * Live, `takeOverUplink` moves the uplink's addresses and its non-kernel
 * routes onto the bridge (render.ts, under commit-confirm). For the bridge to
 * come back the same way at boot, its persisted configuration must carry
 * those addresses and routes, and the uplink must come up as a port (the
 * stack's own profile for it is outranked: a networkd file that sorts first,
 * a NetworkManager profile with a higher autoconnect-priority).
 *
 * The moved configuration is recorded in a file of ours,
 * `/etc/kvmnet/bridge-<name>.takeover.json`, written with the bridge's other
 * persisted files. It is the one source the renderers use before the change
 * (from the uplink), after it and after a reboot (when /run, where the live
 * state file lives, is empty), so the rendered files do not change once
 * written, and delete still knows what to give back after a reboot.
 *
 * Not carried over: an uplink configured by DHCP (refused: a copied lease is
 * not a lease), and whatever else the uplink's own profile sets (DNS servers,
 * search domains); the documentation says so.
 */
import { KvmnetError } from "../../errors";
import { KINDS } from "../../identity";
import { configuredAddresses, HostSnapshot, section } from "../../observe";
import { ownedFiles } from "../../persist";
import { literal } from "../../shell";

export const ROUTES_SECTION = "bridge-routes";

/** IPv4 and IPv6 routes of the main table, one JSON array per line (v4 first). */
export const routesSection = section(ROUTES_SECTION, literal("ip -j -4 route show table main; echo; ip -j -6 route show table main"));

export interface UplinkRoute {
  /** "default" or a CIDR. */
  dst: string;
  gateway?: string;
  metric?: number;
}

export interface TakenOverUplink {
  addresses: string[];
  routes: UplinkRoute[];
}

/** port → what moved from it onto the bridge. */
export type TakeoverRecord = Record<string, TakenOverUplink>;

export function takeoverRecordPath(name: string): string {
  return `/etc/kvmnet/bridge-${name}.takeover.json`;
}

interface RawRoute {
  dst?: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  metric?: number;
  type?: string;
  scope?: string;
  prefsrc?: string;
  flags?: string[];
  pref?: string;
}

/** A route as `ip -j route` gives it, with what `ip route replace` needs to make it again on another device. */
export interface LiveRoute {
  family: "-4" | "-6";
  dst: string;
  gateway?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
  metric?: number;
  onlink?: boolean;
  pref?: string;
}

/** The routes of the section, each with its family (the section prints the IPv4 array, then the IPv6 one). */
function rawRoutes(snap: HostSnapshot): (RawRoute & { family: "-4" | "-6" })[] {
  const out: (RawRoute & { family: "-4" | "-6" })[] = [];
  let family: "-4" | "-6" = "-4";
  for (const line of (snap.sections.get(ROUTES_SECTION)?.text ?? "").split("\n")) {
    if (!line.trim().startsWith("[")) continue;
    try {
      out.push(...(JSON.parse(line) as RawRoute[]).map((r) => ({ ...r, family })));
    } catch {
      /* a line that is not JSON carries no routes */
    }
    family = "-6";
  }
  return out;
}

/** The routes that move with `dev`: neither kernel nor router-advertisement routes, no link-local or multicast ones. */
function movable(snap: HostSnapshot, dev: string) {
  return rawRoutes(snap)
    .filter((r) => r.dev === dev && r.protocol !== "kernel" && r.protocol !== "ra" && (r.type === undefined || r.type === "unicast"))
    .filter((r): r is typeof r & { dst: string } => r.dst !== undefined && !/^(fe80:|ff00:)/.test(r.dst));
}

/** The routes render.ts moves live from `dev` to the bridge or back, with every attribute `ip route replace` takes back. */
export function liveRoutes(snap: HostSnapshot, dev: string): LiveRoute[] {
  return movable(snap, dev).map((r) => ({
    family: r.family,
    dst: r.dst,
    ...(r.gateway ? { gateway: r.gateway } : {}),
    ...(r.protocol ? { protocol: r.protocol } : {}),
    ...(r.scope && r.scope !== "global" ? { scope: r.scope } : {}),
    ...(r.prefsrc ? { prefsrc: r.prefsrc } : {}),
    ...(r.metric !== undefined ? { metric: r.metric } : {}),
    ...(r.flags?.includes("onlink") ? { onlink: true } : {}),
    ...(r.pref ? { pref: r.pref } : {}),
  }));
}

/** The routes that move with `dev`, as the takeover record keeps them for the persisted configuration. */
export function movableRoutes(snap: HostSnapshot, dev: string): (UplinkRoute & { protocol?: string })[] {
  return movable(snap, dev).map((r) => ({
    dst: r.dst,
    ...(r.gateway ? { gateway: r.gateway } : {}),
    ...(r.metric !== undefined ? { metric: r.metric } : {}),
    protocol: r.protocol,
  }));
}

/** The record as the host has it among the bridge's persisted files (undefined when none). */
export function persistedTakeover(snap: HostSnapshot, name: string): TakeoverRecord | undefined {
  const path = takeoverRecordPath(name);
  const f = ownedFiles(snap, KINDS.bridge.idKind, name).find((o) => o.path === path && o.state === "file");
  if (!f?.content) return undefined;
  try {
    const parsed = JSON.parse(f.content) as Record<string, unknown>;
    const out: TakeoverRecord = {};
    for (const [port, v] of Object.entries(parsed)) {
      const u = v as { addresses?: unknown; routes?: unknown };
      if (!Array.isArray(u?.addresses) || !Array.isArray(u?.routes)) continue;
      out[port] = {
        addresses: u.addresses.filter((a): a is string => typeof a === "string"),
        routes: (u.routes as UplinkRoute[]).filter((r) => typeof r?.dst === "string"),
      };
    }
    return out;
  } catch {
    return undefined;
  }
}

function refuse(name: string, port: string, why: string): never {
  throw new KvmnetError({
    kind: "Unsupported",
    message: `bridge ${name}: cannot persist the takeover of ${port}: ${why}`,
    hint: `give ${port} a static configuration first, or set persistence: "runtime" for this bridge (it is then gone after a reboot, and ${port} comes back as its own configuration says)`,
  });
}

/** What `port` would bring onto the bridge if it were taken over now (from the snapshot). */
function fromUplink(name: string, snap: HostSnapshot, port: string): TakenOverUplink {
  const info = snap.addrs.find((a) => a.ifname === port)?.addr_info ?? [];
  const slaac = new Set(info.filter((a) => a.family === "inet6" && a.dynamic).map((a) => `${a.local}/${a.prefixlen}`));
  const leased = info.filter((a) => a.family === "inet" && a.dynamic).map((a) => `${a.local}/${a.prefixlen}`);
  if (leased.length > 0) refuse(name, port, `its address ${leased.join(", ")} is a DHCP lease (a copied lease would not be renewed)`);
  const routes = movableRoutes(snap, port);
  const dhcp = routes.filter((r) => r.protocol === "dhcp");
  if (dhcp.length > 0) refuse(name, port, `its route ${dhcp[0].dst} came from DHCP`);
  return { addresses: configuredAddresses(snap, port).filter((a) => !slaac.has(a)), routes: routes.map(({ protocol: _p, ...r }) => r) };
}

/**
 * What the bridge's persisted configuration must carry for its taken-over
 * uplinks: recorded before, taken over live without a record (persistence
 * turned on later), or about to be taken over by this very plan.
 * `takenOverLive` is the live state file's port → addresses; `isPort`/`carries`
 * come from the snapshot.
 */
export function takeoverRecord(
  name: string,
  ports: readonly string[],
  snap: HostSnapshot,
  live: { takenOverLive: Record<string, string[]>; isPort: (p: string) => boolean; carries: (p: string) => boolean },
): TakeoverRecord {
  const recorded = persistedTakeover(snap, name) ?? {};
  const out: TakeoverRecord = {};
  for (const p of ports) {
    if (live.isPort(p)) {
      if (recorded[p]) out[p] = recorded[p];
      else if (live.takenOverLive[p]) {
        // Taken over while persistence was "runtime": its routes are on the bridge now.
        out[p] = { addresses: live.takenOverLive[p], routes: movableRoutes(snap, name).map(({ protocol: _p, ...r }) => r) };
      }
    } else if (live.carries(p)) {
      out[p] = fromUplink(name, snap, p);
    }
  }
  return out;
}

/** Addresses and routes of a record, in port order, without repeats. */
export function recordAddresses(r: TakeoverRecord): string[] {
  return [...new Set(Object.values(r).flatMap((u) => u.addresses))];
}

export function recordRoutes(r: TakeoverRecord): UplinkRoute[] {
  const seen = new Set<string>();
  const out: UplinkRoute[] = [];
  for (const route of Object.values(r).flatMap((u) => u.routes)) {
    const key = JSON.stringify(route);
    if (!seen.has(key)) {
      seen.add(key);
      out.push(route);
    }
  }
  return out;
}

export const isV6 = (s: string) => s.includes(":");
