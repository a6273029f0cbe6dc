/**
 * Bridge planning: desired inputs vs the observed host → actions. Pure.
 *
 * Ownership rules (why `ports` and `addresses` are "at least these"):
 * hypervisors enslave guest taps (vnet0, …) to bridges and may add addresses
 * of their own, so a Bridge manages the ports and addresses it lists and the
 * ones it listed before (released/removed when dropped from the list), and
 * leaves every other port and address alone.
 */
import { createHash } from "crypto";
import { KvmnetError } from "../../errors";
import { configuredAddresses, findLink, HostSnapshot, portsOf, STATE_DIR } from "../../observe";
import type { AddressAction, LinkAction } from "../../linkSteps";
import { BridgeInputs, BridgeOptions, desiredOptions } from "./schema";
import { LiveRoute, liveRoutes, persistedTakeover } from "./takeover";

export interface BridgeObserved {
  exists: boolean;
  isBridge: boolean;
  kind?: string;
  ifindex?: number;
  mtu?: number;
  macAddress?: string;
  operState?: string;
  adminUp: boolean;
  options: BridgeOptions;
  ports: string[];
  addresses: string[];
  /** Ports this provider brought up when it enslaved them (restored to down on release). */
  portsBroughtUp: string[];
  /** Uplink ports taken over (takeOverUplink): port → the addresses moved from it onto the bridge. */
  takenOver: Record<string, string[]>;
}

/** What the state file keeps between operations. */
export interface BridgeState {
  portsBroughtUp: string[];
  takenOver: Record<string, string[]>;
}

export function stateFilePath(name: string): string {
  return `${STATE_DIR}/bridge/${name}.json`;
}

/** Extract what we care about for bridge `name` from a host snapshot. */
export function observeBridge(snap: HostSnapshot, name: string): BridgeObserved {
  const link = findLink(snap, name);
  let portsBroughtUp: string[] = [];
  const takenOver: Record<string, string[]> = {};
  const state = snap.stateFiles[stateFilePath(name)];
  if (state) {
    try {
      const parsed = JSON.parse(state) as { portsBroughtUp?: unknown; takenOver?: unknown };
      if (Array.isArray(parsed.portsBroughtUp)) portsBroughtUp = parsed.portsBroughtUp.filter((p): p is string => typeof p === "string");
      if (parsed.takenOver && typeof parsed.takenOver === "object") {
        for (const [port, addrs] of Object.entries(parsed.takenOver as Record<string, unknown>)) {
          if (Array.isArray(addrs)) takenOver[port] = addrs.filter((a): a is string => typeof a === "string");
        }
      }
    } catch {
      /* a damaged state file loses the "bring the port down again" and "give addresses back" memory */
    }
  }
  if (!state && link) {
    // After a reboot /run is empty: a persisted takeover's record still says what to give back.
    const ports = portsOf(snap, name);
    for (const [port, u] of Object.entries(persistedTakeover(snap, name) ?? {})) if (ports.includes(port)) takenOver[port] = u.addresses;
  }
  if (!link) return { exists: false, isBridge: false, adminUp: false, options: {}, ports: [], addresses: [], portsBroughtUp, takenOver };
  const info = link.linkinfo?.info_data ?? {};
  const num = (k: string) => (typeof info[k] === "number" ? info[k] : undefined);
  const isBridge = link.linkinfo?.info_kind === "bridge";
  return {
    exists: true,
    isBridge,
    kind: link.linkinfo?.info_kind ?? link.link_type,
    ifindex: link.ifindex,
    mtu: link.mtu,
    macAddress: link.address,
    operState: link.operstate,
    adminUp: link.flags.includes("UP"),
    options: isBridge
      ? {
          stp_state: num("stp_state"),
          forward_delay: num("forward_delay"),
          hello_time: num("hello_time"),
          max_age: num("max_age"),
          priority: num("priority"),
          ageing_time: num("ageing_time"),
          vlan_filtering: num("vlan_filtering"),
        }
      : {},
    ports: portsOf(snap, name),
    addresses: configuredAddresses(snap, name),
    portsBroughtUp,
    takenOver,
  };
}

export type BridgeAction =
  | { op: "create"; name: string; options: BridgeOptions; mac?: string }
  | { op: "setOptions"; name: string; options: BridgeOptions; previous: BridgeOptions }
  | { op: "setMac"; name: string; mac: string; previous?: string }
  | { op: "attachPort"; name: string; port: string; bringUp: boolean }
  | { op: "detachPort"; name: string; port: string; bringDown: boolean }
  /** Enslave an uplink and move its addresses and (non-kernel) routes onto the bridge. */
  | { op: "takeOver"; name: string; port: string; addresses: string[]; routes: LiveRoute[]; bringUp: boolean }
  /** The reverse: addresses and routes back onto the port, which leaves the bridge. */
  | { op: "giveBack"; name: string; port: string; addresses: string[]; routes: LiveRoute[]; bringDown: boolean }
  | { op: "writeState"; name: string; state: BridgeState; previous: BridgeState }
  | { op: "removeState"; name: string }
  /** setMtu, up, delete, addresses: rendered as every kind that owns a link renders them. */
  | Exclude<LinkAction, { op: "attach" | "detach" }>
  | AddressAction;

/** Preconditions re-checked on the host under the lock. */
export type BridgeGuard = { op: "absent"; name: string } | { op: "isBridge"; name: string } | { op: "portAvailable"; name: string; port: string };

export interface BridgePlan {
  guards: BridgeGuard[];
  actions: BridgeAction[];
  /** Set when the plan changes the management path: it runs under commit-confirm. */
  confirm?: { timeoutSec: number; reason: string };
}

/**
 * The MAC a new bridge gets when the program sets none: the first taken-over
 * uplink's (DHCP reservations, ARP caches and switch port security still
 * match), else a locally administered address derived from the bridge's name
 * and the host's NICs — like libvirt, which fixes virbr0's MAC. A fixed MAC
 * keeps the bridge's address from changing as ports come and go (the kernel
 * otherwise takes the lowest port MAC), and is what the persisted config
 * recreates at boot.
 */
export function newBridgeMac(desired: BridgeInputs, snap: HostSnapshot): string {
  if (desired.macAddress !== undefined) return desired.macAddress;
  if (desired.takeOverUplink) {
    const uplink = desired.ports.find((p) => findLink(snap, p) && carriesUplink(snap, p));
    const mac = uplink ? findLink(snap, uplink)?.address : undefined;
    if (mac) return mac.toLowerCase();
  }
  const nics = snap.links
    .filter((l) => !l.linkinfo?.info_kind && l.link_type === "ether" && l.address)
    .map((l) => l.address as string)
    .sort();
  const h = createHash("sha256")
    .update(`kvmnet-bridge\0${desired.name}\0${nics.join(",")}`)
    .digest();
  // 0x02: locally administered, unicast.
  return [0x02, h[0], h[1], h[2], h[3], h[4]].map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** Whether joining the bridge would take addresses or routes from `port` (it carries the uplink). */
export function carriesUplink(snap: HostSnapshot, port: string): boolean {
  return port === snap.managementInterface || port === snap.defaultRouteInterface || configuredAddresses(snap, port).length > 0;
}

/** Why a port cannot join bridge `name`, or undefined when it can. */
function portProblem(snap: HostSnapshot, name: string, port: string, takeOverUplink: boolean): KvmnetError | undefined {
  const link = findLink(snap, port);
  if (!link) {
    return new KvmnetError({
      kind: "NotFound",
      message: `bridge ${name}: port ${port} does not exist on the host`,
      hint: "create the interface first (a VlanSubinterface, a NIC name from `ip link`) or remove it from ports",
    });
  }
  if (link.master && link.master !== name) {
    return new KvmnetError({
      kind: "Conflict",
      message: `bridge ${name}: port ${port} is already a port of ${link.master}`,
      hint: `release it first (ip link set dev ${port} nomaster) or remove it from ports`,
    });
  }
  if (link.linkinfo?.info_kind === "bridge") {
    return new KvmnetError({ kind: "Conflict", message: `bridge ${name}: port ${port} is itself a bridge; Linux does not nest bridges` });
  }
  if (takeOverUplink) return undefined;
  if (port === snap.managementInterface || port === snap.defaultRouteInterface) {
    return new KvmnetError({
      kind: "Conflict",
      message: `bridge ${name}: port ${port} carries the ${port === snap.managementInterface ? "SSH management" : "default"} route; enslaving it would cut the host off`,
      hint: "set takeOverUplink: true to move its addresses and routes onto the bridge under commit-confirm (the host reverts by itself unless a new SSH connection confirms the change)",
    });
  }
  const addrs = configuredAddresses(snap, port);
  if (addrs.length > 0) {
    return new KvmnetError({
      kind: "Conflict",
      message: `bridge ${name}: port ${port} has addresses ${addrs.join(", ")}; a bridge port's own addresses stop working`,
      hint: `set takeOverUplink: true to move them onto the bridge, or move them yourself (addresses: [...]) and remove them from ${port} first`,
    });
  }
  return undefined;
}

/**
 * Plan the actions that take the host from `snap` to `desired`.
 * `previous` is the prior state (update) — its ports/addresses are ours to release.
 * Throws KvmnetError (Conflict / NotFound) when the plan cannot be carried out.
 */
export function planBridge(desired: BridgeInputs, snap: HostSnapshot, previous?: BridgeInputs): BridgePlan {
  const name = desired.name;
  const obs = observeBridge(snap, name);
  const guards: BridgeGuard[] = [];
  const actions: BridgeAction[] = [];
  const want = desiredOptions(desired);

  if (obs.exists && !obs.isBridge) {
    throw new KvmnetError({
      kind: "Conflict",
      message: `an interface named ${name} already exists and is not a bridge (it is ${obs.kind ?? "unknown"})`,
      hint: "choose another name",
    });
  }
  if (obs.exists && !previous && !desired.adopt) {
    throw new KvmnetError({
      kind: "Conflict",
      message: `bridge ${name} already exists on the host`,
      hint: "set adopt: true to manage the existing bridge (its settings become the declared ones), or choose another name",
    });
  }

  // Uplinks to take over: listed, not yet ports, carrying addresses or routes.
  const takeOvers = desired.takeOverUplink ? desired.ports.filter((p) => !obs.ports.includes(p) && findLink(snap, p) && carriesUplink(snap, p)) : [];

  if (!obs.exists) {
    guards.push({ op: "absent", name });
    actions.push({ op: "create", name, options: want, mac: newBridgeMac(desired, snap) });
  } else {
    guards.push({ op: "isBridge", name });
    const changed: BridgeOptions = {};
    const prev: BridgeOptions = {};
    for (const k of Object.keys(want) as (keyof BridgeOptions)[]) {
      if (want[k] !== obs.options[k]) {
        changed[k] = want[k];
        prev[k] = obs.options[k];
      }
    }
    if (Object.keys(changed).length > 0) actions.push({ op: "setOptions", name, options: changed, previous: prev });
  }
  if (desired.mtu !== undefined && desired.mtu !== obs.mtu) actions.push({ op: "setMtu", name, mtu: desired.mtu, previous: obs.mtu });
  if (obs.exists && desired.macAddress !== undefined && desired.macAddress !== obs.macAddress?.toLowerCase()) {
    actions.push({ op: "setMac", name, mac: desired.macAddress, previous: obs.macAddress });
  }

  // Up before any port or address action, so its undo (bring the bridge down, which
  // flushes the bridge's routes) runs after a taken-over uplink's routes were given back.
  if (!obs.adminUp) actions.push({ op: "up", name });

  // Ports: attach the missing ones, release those dropped from the list.
  let broughtUp = obs.portsBroughtUp.filter((p) => obs.ports.includes(p));
  const takenOver: Record<string, string[]> = {};
  for (const [p, a] of Object.entries(obs.takenOver)) if (obs.ports.includes(p)) takenOver[p] = a;
  const problems: KvmnetError[] = [];
  for (const port of desired.ports) {
    if (obs.ports.includes(port)) continue;
    const problem = portProblem(snap, name, port, desired.takeOverUplink);
    if (problem) {
      problems.push(problem);
      continue;
    }
    const link = findLink(snap, port);
    const bringUp = !link?.flags.includes("UP");
    guards.push({ op: "portAvailable", name, port });
    if (takeOvers.includes(port)) {
      // IPv6 addresses the kernel configured from router advertisements (SLAAC) stay: the
      // bridge, wearing the same MAC, configures the same ones itself.
      const slaac = new Set((snap.addrs.find((a) => a.ifname === port)?.addr_info ?? []).filter((a) => a.family === "inet6" && a.dynamic).map((a) => `${a.local}/${a.prefixlen}`));
      const addresses = configuredAddresses(snap, port).filter((a) => !slaac.has(a));
      actions.push({ op: "takeOver", name, port, addresses, routes: liveRoutes(snap, port), bringUp });
      takenOver[port] = addresses;
    } else {
      actions.push({ op: "attachPort", name, port, bringUp });
    }
    if (bringUp) broughtUp.push(port);
  }
  if (problems.length === 1) throw problems[0];
  if (problems.length > 1) {
    throw new KvmnetError({ kind: problems[0].kind, message: problems.map((p) => p.shortMessage).join("; "), hint: problems[0].hint });
  }
  for (const port of previous?.ports ?? []) {
    if (desired.ports.includes(port) || !obs.ports.includes(port)) continue;
    const bringDown = broughtUp.includes(port);
    if (takenOver[port]) {
      actions.push({ op: "giveBack", name, port, addresses: takenOver[port].filter((a) => obs.addresses.includes(a)), routes: liveRoutes(snap, name), bringDown });
      delete takenOver[port];
    } else {
      actions.push({ op: "detachPort", name, port, bringDown });
    }
    broughtUp = broughtUp.filter((p) => p !== port);
  }

  // Addresses: remove those dropped from the list, then add the missing ones. In
  // that order: deleting an IPv4 primary address deletes the secondaries of its
  // subnet, so a new address added first would vanish with the old one.
  for (const cidr of previous?.addresses ?? []) {
    if (!desired.addresses.includes(cidr) && obs.addresses.includes(cidr)) actions.push({ op: "removeAddress", name, cidr });
  }
  for (const cidr of desired.addresses) {
    if (!obs.addresses.includes(cidr)) actions.push({ op: "addAddress", name, cidr });
  }

  const state: BridgeState = { portsBroughtUp: [...new Set(broughtUp)].sort(), takenOver };
  const before: BridgeState = { portsBroughtUp: [...obs.portsBroughtUp].sort(), takenOver: obs.takenOver };
  const empty = state.portsBroughtUp.length === 0 && Object.keys(takenOver).length === 0;
  if (JSON.stringify(state) !== JSON.stringify(before) || (!obs.exists && !empty)) {
    actions.push({ op: "writeState", name, state, previous: before });
  }
  return { guards, actions, confirm: confirmFor(name, snap, actions, desired.confirmTimeoutSec) };
}

/**
 * Commit-confirm when the plan moves an uplink's addresses, or changes a
 * bridge that itself carries the management or default route.
 */
function confirmFor(name: string, snap: HostSnapshot, actions: BridgeAction[], timeoutSec: number): BridgePlan["confirm"] {
  const moved = actions.filter((a): a is Extract<BridgeAction, { op: "takeOver" | "giveBack" }> => a.op === "takeOver" || a.op === "giveBack");
  const mgmt = (ifname: string) => (ifname === snap.managementInterface ? "the SSH session's route" : ifname === snap.defaultRouteInterface ? "the default route" : undefined);
  for (const a of moved) {
    const carries = mgmt(a.port) ?? mgmt(name);
    const what = a.op === "takeOver" ? `moves ${a.port}'s addresses and routes onto bridge ${name}` : `moves bridge ${name}'s addresses and routes back to ${a.port}`;
    return { timeoutSec, reason: `it ${what}${carries ? ` and carries ${carries}` : ""}` };
  }
  const changes = actions.filter((a) => a.op !== "writeState" && a.op !== "removeState");
  const carries = mgmt(name);
  if (carries && changes.length > 0) return { timeoutSec, reason: `bridge ${name} carries ${carries}` };
  return undefined;
}

/**
 * Plan the removal of bridge `name`: the kernel releases every port; we bring
 * down those we brought up and give taken-over uplinks their addresses and
 * routes back (under commit-confirm).
 */
export function planBridgeDelete(name: string, snap: HostSnapshot, confirmTimeoutSec = 60): BridgePlan {
  const obs = observeBridge(snap, name);
  const actions: BridgeAction[] = [];
  if (obs.exists && obs.isBridge) {
    for (const port of obs.ports) {
      const bringDown = obs.portsBroughtUp.includes(port);
      const moved = obs.takenOver[port];
      actions.push(
        moved
          ? { op: "giveBack", name, port, addresses: moved.filter((a) => obs.addresses.includes(a)), routes: liveRoutes(snap, name), bringDown }
          : { op: "detachPort", name, port, bringDown },
      );
    }
    actions.push({ op: "delete", name });
  }
  if (snap.stateFiles[stateFilePath(name)] !== undefined) actions.push({ op: "removeState", name });
  return { guards: [], actions, confirm: confirmFor(name, snap, actions, confirmTimeoutSec) };
}
