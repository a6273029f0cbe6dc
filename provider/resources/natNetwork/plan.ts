/**
 * NatNetwork planning: desired inputs vs the observed host → actions. Pure.
 *
 * The planner compares against the HOST (not the previous inputs), so an
 * update after drift (table deleted, dnsmasq killed, address removed by hand)
 * repairs whatever is missing.
 */
import { KvmnetError } from "../../errors";
import { KINDS } from "../../identity";
import { configuredAddresses, findLink, HostSnapshot } from "../../observe";
import type { AddressAction, LinkAction } from "../../linkSteps";
import { resolveBackend } from "../../persist";
import { BootHooks, bootHooksToDisarm } from "../../persist/systemd";
import {
  bridgeMac,
  DnsmasqFiles,
  forwardHolder,
  gatewayCidr,
  NatState,
  natState,
  needsDnsmasq,
  NftRule,
  pidFile,
  resolveUplink,
  stateFile,
  sysctlFile,
  tableName,
  tableRules,
} from "./files";
import { holdersOf, natDaemons } from "./observe";
import { natPersistPaths, owns, persistentDnsmasqUnitFile } from "./persist";
import { cidrsOverlap, modeForwards, NatNetworkInputs } from "./schema";

export { bridgeMac, resolveUplink } from "./files";
export type { NatState } from "./files";

/** The kind's spelling in ids, the lifecycle and the persistence manifests. */
export const NAT_KIND = KINDS.natNetwork.idKind;

export interface NatObserved {
  bridge?: { ifindex: number; isBridge: boolean; kind?: string; mtu: number; up: boolean; macAddress?: string };
  gatewayPresent: boolean;
  /** Rules of our table as `chain:comment`, undefined when the table is absent. */
  tableRules?: string[];
  dnsmasq?: { pid?: number; running: boolean };
  /** Every live dnsmasq started with this network's config: the pid file's, and any it lost track of. */
  daemonPids: number[];
  state?: NatState;
  forwardHeld: boolean;
  ipForward: string;
  /** sysctl files that set ip_forward=0, as the last apply found them. */
  sysctlFilesDisablingForward: string[];
}

interface NftRuleJson {
  family?: string;
  table?: string;
  chain?: string;
  comment?: string;
}

/** Extract what we care about for network `n` from a host snapshot. */
export function observeNat(snap: HostSnapshot, n: Pick<NatNetworkInputs, "name" | "bridgeName" | "gateway" | "subnet">): NatObserved {
  const link = findLink(snap, n.bridgeName);
  const table = tableName(n.name);
  let tableRulesSeen: string[] | undefined;
  for (const o of snap.nftables ?? []) {
    const t = o.table as { family?: string; name?: string } | undefined;
    if (t && t.family === "inet" && t.name === table) tableRulesSeen = tableRulesSeen ?? [];
    const r = o.rule as NftRuleJson | undefined;
    if (r && r.family === "inet" && r.table === table) {
      (tableRulesSeen = tableRulesSeen ?? []).push(`${r.chain}:${(r.comment ?? "").replace(/^kvmnet:/, "")}`);
    }
  }
  let state: NatState | undefined;
  const stateText = snap.stateFiles[stateFile(n.name)];
  if (stateText) {
    try {
      state = JSON.parse(stateText) as NatState;
    } catch {
      state = undefined; // a damaged state file only costs a restart instead of a reload
    }
  }
  const pf = snap.pidFiles[pidFile(n.name)];
  return {
    bridge: link
      ? {
          ifindex: link.ifindex,
          isBridge: link.linkinfo?.info_kind === "bridge",
          kind: link.linkinfo?.info_kind ?? link.link_type,
          mtu: link.mtu,
          up: link.flags.includes("UP"),
          macAddress: link.address,
        }
      : undefined,
    gatewayPresent: link ? configuredAddresses(snap, n.bridgeName).includes(gatewayCidr(n as NatNetworkInputs)) : false,
    tableRules: tableRulesSeen,
    dnsmasq: pf ? { pid: pf.pid, running: pf.comm === "dnsmasq" } : undefined,
    daemonPids: natDaemons(snap)
      .daemons.filter((d) => d.network === n.name)
      .map((d) => d.pid),
    state,
    forwardHeld: snap.stateFiles[forwardHolder(n.name)] !== undefined,
    ipForward: snap.sysctls["ipv4/ip_forward"] ?? "",
    sysctlFilesDisablingForward: (snap.stateFiles[sysctlFile(n.name)] ?? "")
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean),
  };
}

export type NatAction =
  | { op: "createBridge"; bridge: string; mac: string }
  /** On the bridge (`name`), rendered as every kind that owns a link renders them. */
  | Extract<LinkAction, { op: "setMtu" | "up" }>
  | Extract<AddressAction, { op: "addAddress" }>
  | { op: "applyTable"; name: string; script: string; previous?: string }
  | { op: "deleteTable"; name: string }
  | { op: "acquireForward"; name: string }
  | { op: "releaseForward"; name: string }
  | { op: "dnsmasq"; name: string; how: "start" | "reload" | "restart"; files: DnsmasqFiles; previous?: DnsmasqFiles; systemd: boolean }
  /** `systemd`: how to start it again should a later step fail (undo). */
  | { op: "stopDnsmasq"; name: string; systemd: boolean }
  | { op: "writeState"; name: string; state: NatState; previous?: NatState }
  | { op: "recordSysctl"; name: string }
  | { op: "forgetSysctl"; name: string }
  | { op: "deleteBridge"; bridge: string }
  | { op: "removeFiles"; name: string }
  /** Persistence is coming off: stop the boot unit, remove the nftables.service drop-in (see persist.ts). */
  | { op: "disarmBootHooks"; hooks: BootHooks }
  /**
   * dnsmasq keeps running when persistence is set to "runtime": its unit's
   * file in /run/systemd/system takes over from the persisted one in /etc
   * (which shadowed it), which the core removes after this plan's steps.
   */
  | { op: "writeRuntimeUnit"; name: string };

export type NatGuard = { op: "absent"; ifname: string } | { op: "isBridge"; ifname: string };

export interface NatPlan {
  guards: NatGuard[];
  actions: NatAction[];
}

/** The `ip filter FORWARD` chain with policy drop that Docker (iptables-nft) installs. */
export function forwardDropChain(snap: HostSnapshot): string | undefined {
  for (const o of snap.nftables ?? []) {
    const c = o.chain as { family?: string; table?: string; name?: string; policy?: string; hook?: string } | undefined;
    if (c && c.hook === "forward" && c.policy === "drop" && !c.table?.startsWith("kvmnet_")) return `${c.family} ${c.table} ${c.name}`;
  }
  return undefined;
}

/** UDP :53 sockets on every address (another DNS server would hold the bridge's port too). */
export function wildcardDnsListeners(snap: HostSnapshot): string[] {
  return snap.dns53Listeners.filter((l) => /^(0\.0\.0\.0|\*|\[::\]|::|\[::ffff:0\.0\.0\.0\]):53$/.test(l));
}

/** The rules the table must have (as `chain:comment`), sorted. */
export function expectedRuleKeys(rules: NftRule[]): string[] {
  return rules.map((r) => `${r.chain}:${r.comment}`).sort();
}

function conflict(message: string, hint?: string): KvmnetError {
  return new KvmnetError({ kind: "Conflict", message, hint });
}

/** How to stop a process that may ignore SIGTERM (#14: a dnsmasq busy with a big hosts list does). */
const stopHint = (pid: number) => `stop it: \`kill ${pid}\`, and \`kill -9 ${pid}\` if it is still there after 10 s`;

/**
 * A dnsmasq about to start would fail with "Address already in use": name what
 * is in its way instead (#14). That is a dnsmasq of this network's name that
 * runs without the network (an earlier delete did not wait for it), or any
 * process with a socket on port 53 or 67 of the gateway address, such as a
 * dnsmasq that outlived another network on that address. A kvmnet dnsmasq of
 * another network elsewhere is left alone: it may be one another resource is
 * starting at this moment, its state not yet written.
 */
function dnsmasqBlocker(desired: NatNetworkInputs, snap: HostSnapshot, obs: NatObserved): KvmnetError | undefined {
  const who = `natNetwork ${desired.name}`;
  const daemons = natDaemons(snap);
  const kvmnetDaemon = (pid: number) => daemons.daemons.find((d) => d.pid === pid);
  const own = obs.daemonPids.find((pid) => pid !== obs.dnsmasq?.pid);
  if (own !== undefined) {
    const why = obs.state ? "runs, but not as the pid file says" : "runs without its network (an earlier delete did not stop it)";
    return conflict(`${who}: a dnsmasq of NatNetwork ${desired.name} (pid ${own}) ${why}`, stopHint(own));
  }
  const [held] = holdersOf(daemons, desired.gateway);
  if (!held) return undefined;
  const [u] = held.users;
  if (!u) return conflict(`${who}: a socket on ${held.local} is in the way of this network's dnsmasq`, "find its owner with `ss -lntup`");
  const d = kvmnetDaemon(u.pid);
  const what = d ? `the dnsmasq of NatNetwork ${d.network}${snap.stateFiles[stateFile(d.network)] === undefined ? ", which outlived its network" : ""}` : u.comm;
  return conflict(`${who}: pid ${u.pid} (${what}) holds ${held.local}, which this network's dnsmasq needs`, stopHint(u.pid));
}

/**
 * Plan the actions that take the host from `snap` to `desired`; `previous` is
 * set on update (and is `desired` itself when a create takes over what its own
 * lost create made). Throws KvmnetError when the network cannot work on this host.
 */
export function planNat(desired: NatNetworkInputs, snap: HostSnapshot, previous?: NatNetworkInputs): NatPlan {
  const { name, bridgeName: br } = desired;
  const obs = observeNat(snap, desired);
  const guards: NatGuard[] = [];
  const actions: NatAction[] = [];

  if (obs.bridge && !obs.bridge.isBridge) {
    throw conflict(`natNetwork ${name}: an interface named ${br} already exists and is not a bridge (it is ${obs.bridge.kind ?? "unknown"})`, "choose another bridgeName");
  }
  // On create (no previous), what is there already is not this resource's (the
  // lifecycle passes the inputs as previous when its creation record says it is):
  // only adopt takes it over.
  if (!previous && !desired.adopt && obs.bridge) {
    throw conflict(
      `natNetwork ${name}: bridge ${br} already exists on the host`,
      "set adopt: true to make it this network's bridge (its gateway address, MTU, table and dnsmasq become the declared ones, and delete removes it), or choose another bridgeName",
    );
  }
  if (!previous && !desired.adopt && (obs.tableRules !== undefined || obs.state)) {
    throw conflict(
      `natNetwork ${name}: nft table inet ${tableName(name)} or its state already exists on the host`,
      "a network of this name exists that this resource did not create (made by hand, left by a stack that lost it, or by an interrupted create whose inputs changed since): set adopt: true to manage it as this one (its settings become the declared ones), or choose another name",
    );
  }
  // Overlap: the subnet would shadow (or be shadowed by) a route the host already has.
  for (const entry of snap.addrs) {
    if (entry.ifname === br) continue;
    for (const a of entry.addr_info) {
      if (a.family !== "inet") continue;
      const cidr = `${a.local}/${a.prefixlen}`;
      if (cidrsOverlap(cidr, desired.subnet)) {
        throw conflict(`natNetwork ${name}: subnet ${desired.subnet} overlaps ${cidr} on interface ${entry.ifname}`, "choose a subnet no interface of the host uses");
      }
    }
  }
  const forwards = modeForwards(desired.mode);
  const uplink = resolveUplink(desired, snap);
  // Throws when a forwarding mode has no uplink.
  const state = natState(desired, snap);
  if (forwards && uplink) {
    if (!findLink(snap, uplink)) {
      throw new KvmnetError({ kind: "NotFound", message: `natNetwork ${name}: uplink ${uplink} does not exist on the host` });
    }
    if (uplink === br) throw conflict(`natNetwork ${name}: the uplink ${uplink} is the network's own bridge`, "set uplink");
    const drop = forwardDropChain(snap);
    if (drop) {
      throw conflict(
        `natNetwork ${name}: chain ${drop} has policy drop (Docker installs it), so mode ${desired.mode} could forward nothing`,
        "allow the bridge in that chain (for Docker: rules in DOCKER-USER, e.g. `iptables -I DOCKER-USER -i <bridge> -j ACCEPT` and the reverse), or use mode isolated",
      );
    }
  }
  const ownDnsmasqRunning = obs.dnsmasq?.running === true;
  if (needsDnsmasq(desired) && !ownDnsmasqRunning) {
    const blocker = dnsmasqBlocker(desired, snap, obs);
    if (blocker) throw blocker;
  }
  if (desired.dns.enabled && !ownDnsmasqRunning) {
    const wild = wildcardDnsListeners(snap);
    if (wild.length > 0) {
      throw conflict(
        `natNetwork ${name}: another DNS server listens on ${wild.join(", ")}, so the network's dnsmasq cannot bind ${desired.gateway}:53`,
        "make that server bind specific addresses (dnsmasq: bind-interfaces; named: listen-on), or set dns.enabled: false",
      );
    }
  }

  // The bridge and its gateway address.
  if (!obs.bridge) {
    guards.push({ op: "absent", ifname: br });
    actions.push({ op: "createBridge", bridge: br, mac: bridgeMac(name) });
  } else {
    guards.push({ op: "isBridge", ifname: br });
  }
  if (desired.mtu !== undefined && desired.mtu !== obs.bridge?.mtu) actions.push({ op: "setMtu", name: br, mtu: desired.mtu, previous: obs.bridge?.mtu });
  if (!obs.gatewayPresent) actions.push({ op: "addAddress", name: br, cidr: gatewayCidr(desired) });
  if (!obs.bridge?.up) actions.push({ op: "up", name: br });

  // The firewall table: re-applied (atomically) whenever its text or its rules differ.
  const rules = tableRules(desired.mode, br, desired.subnet, forwards ? uplink : undefined);
  const script = state.table;
  const rulesMatch = obs.tableRules !== undefined && obs.tableRules.slice().sort().join() === expectedRuleKeys(rules).join();
  if (!rulesMatch || obs.state?.table !== script) {
    actions.push({ op: "applyTable", name, script, previous: obs.tableRules !== undefined ? obs.state?.table : undefined });
  }

  // ip_forward: held while a forwarding mode needs it (the decision on the host, under the lock).
  if (forwards && (!obs.forwardHeld || obs.ipForward !== "1")) actions.push({ op: "acquireForward", name });
  if (!forwards && obs.forwardHeld) actions.push({ op: "releaseForward", name });

  // dnsmasq: start, reload (hosts files only: SIGHUP keeps leases and pid) or restart (config).
  const files = state.files;
  const had = obs.state?.files;
  const systemd = snap.systemd;
  if (files) {
    if (!ownDnsmasqRunning) actions.push({ op: "dnsmasq", name, how: "start", files, previous: had, systemd });
    else if (!had || had.conf !== files.conf) actions.push({ op: "dnsmasq", name, how: "restart", files, previous: had, systemd });
    else if (had.dhcpHosts !== files.dhcpHosts || had.dnsHosts !== files.dnsHosts) actions.push({ op: "dnsmasq", name, how: "reload", files, previous: had, systemd });
  } else if (ownDnsmasqRunning || obs.state?.dnsmasqUnit) {
    actions.push({ op: "stopDnsmasq", name, systemd: obs.state?.dnsmasqUnit !== undefined });
  }

  // Persistence coming off (set to "runtime"; on "auto", a host that runs no stack):
  // the boot-time hooks come off before the core removes the files, and a running
  // dnsmasq unit gets its runtime file back, which takes over when the /etc one goes.
  if (resolveBackend(desired.persistence, snap, `${NAT_KIND} ${name}`) === "runtime") {
    const hooks = natHooksToDisarm(name, snap);
    if (hooks) actions.push({ op: "disarmBootHooks", hooks });
    const dnsmasqAction = actions.some((a) => a.op === "dnsmasq" && a.how !== "reload");
    if (state.dnsmasqUnit && ownDnsmasqRunning && !dnsmasqAction && owns(snap, NAT_KIND, name, persistentDnsmasqUnitFile(name))) {
      actions.push({ op: "writeRuntimeUnit", name });
    }
  }

  if (JSON.stringify(state) !== JSON.stringify(obs.state)) actions.push({ op: "writeState", name, state, previous: obs.state });
  actions.push(forwards ? { op: "recordSysctl", name } : { op: "forgetSysctl", name });
  return { guards, actions };
}

/** The boot unit and nftables drop-in network `name` persisted, when it did. */
function natHooksToDisarm(name: string, snap: HostSnapshot): BootHooks | undefined {
  const p = natPersistPaths(name);
  return bootHooksToDisarm(NAT_KIND, name, p.bootUnit, p.nftDropIn, snap);
}

/**
 * Plan the removal of network `n`: dnsmasq, boot-time hooks, table, ip_forward
 * hold, bridge, files (the persisted files are the core's, after these).
 */
export function planNatDelete(n: NatNetworkInputs, snap: HostSnapshot): NatPlan {
  const obs = observeNat(snap, n);
  const actions: NatAction[] = [];
  if (obs.dnsmasq || obs.daemonPids.length > 0 || obs.state?.dnsmasqUnit) actions.push({ op: "stopDnsmasq", name: n.name, systemd: obs.state?.dnsmasqUnit !== undefined });
  const hooks = natHooksToDisarm(n.name, snap);
  if (hooks) actions.push({ op: "disarmBootHooks", hooks });
  if (obs.tableRules !== undefined) actions.push({ op: "deleteTable", name: n.name });
  if (obs.forwardHeld) actions.push({ op: "releaseForward", name: n.name });
  if (obs.bridge?.isBridge) actions.push({ op: "deleteBridge", bridge: n.bridgeName });
  const ours = snap.stateFiles[stateFile(n.name)] !== undefined || snap.stateFiles[sysctlFile(n.name)] !== undefined;
  if (actions.length > 0 || ours) actions.push({ op: "removeFiles", name: n.name });
  return { guards: [], actions };
}
