/**
 * TapInterface observing, planning and verifying: the host snapshot vs the
 * desired inputs. Pure.
 *
 * What the kernel says about a tap: `ip -j -d link` gives linkinfo
 * info_kind "tun" with info_data {type, pi, vnet_hdr, multi_queue, persist,
 * user, group}, where user/group are NAMES when the host resolves the id and
 * numbers otherwise (iproute2 6.1). sysfs (`/sys/class/net/<tap>/owner`,
 * `group`, -1 for none) always gives the ids; {@link TAP_OWNER_SECTION}
 * reads them, so an owner given as a number compares with the id and one
 * given as a name with the name.
 *
 * Owner, group and flags cannot change on a tap in place (`ip tuntap` only
 * adds and deletes): a change of them is a replacement, and a tap found with
 * others (by hand, or when adopting) is made anew, then put back in its bridge.
 */
import { KvmnetError } from "../../errors";
import type { LinkAction } from "../../linkSteps";
import { bridgeToJoin, findLink, HostSnapshot, LinkBasics, linkBasics, section } from "../../observe";
import { literal } from "../../shell";
import { TapInterfaceInputs } from "./schema";

export const TAP_OWNER_SECTION = "tapOwners";

/** `<ifname> <owner id> <group id>` per tun/tap device (-1: none), from sysfs. */
export const tapOwnerObserveSection = section(
  TAP_OWNER_SECTION,
  literal('for d in /sys/class/net/*; do [ -r "$d/tun_flags" ] || continue; printf \'%s %s %s\\n\' "${d##*/}" "$(cat "$d/owner")" "$(cat "$d/group")"; done; true'),
);

/** The flags and principals that make a tap what it is. */
export interface TapIdentity {
  owner?: string;
  group?: string;
  multiQueue: boolean;
  vnetHdr: boolean;
}

export interface TapObserved extends LinkBasics {
  exists: boolean;
  isTap: boolean;
  kind?: string;
  /** Owner and group as `ip` prints them (a name when resolvable) and their ids from sysfs ("-1": none). */
  ownerName?: string;
  ownerId?: string;
  groupName?: string;
  groupId?: string;
  multiQueue: boolean;
  vnetHdr: boolean;
  pi: boolean;
}

function sysfsIds(snap: HostSnapshot, name: string): { owner?: string; group?: string } {
  for (const line of (snap.sections.get(TAP_OWNER_SECTION)?.text ?? "").split("\n")) {
    const [ifn, owner, group] = line.trim().split(/\s+/);
    if (ifn === name) return { owner, group };
  }
  return {};
}

/** What we care about for tap `name` in a host snapshot. */
export function observeTap(snap: HostSnapshot, name: string): TapObserved {
  const link = findLink(snap, name);
  if (!link) return { exists: false, isTap: false, multiQueue: false, vnetHdr: false, pi: false, adminUp: false };
  const d = link.linkinfo?.info_data ?? {};
  const isTap = link.linkinfo?.info_kind === "tun" && d.type === "tap";
  const ids = sysfsIds(snap, name);
  const str = (v: unknown) => (typeof v === "string" || typeof v === "number" ? String(v) : undefined);
  return {
    exists: true,
    isTap,
    kind: link.linkinfo?.info_kind === "tun" ? (typeof d.type === "string" ? d.type : "tun") : (link.linkinfo?.info_kind ?? link.link_type),
    ownerName: str(d.user),
    ownerId: ids.owner ?? (typeof d.user === "number" ? String(d.user) : d.user === undefined ? "-1" : undefined),
    groupName: str(d.group),
    groupId: ids.group ?? (typeof d.group === "number" ? String(d.group) : d.group === undefined ? "-1" : undefined),
    multiQueue: d.multi_queue === true,
    vnetHdr: d.vnet_hdr === true,
    pi: d.pi === true,
    ...linkBasics(link),
  };
}

/** Whether the host's principal (name as `ip` prints it, id from sysfs) is the desired one (a name or a numeric id; undefined: none). */
export function samePrincipal(desired: string | undefined, name: string | undefined, id: string | undefined): boolean {
  if (desired === undefined) return id === "-1" || (id === undefined && name === undefined);
  return /^\d+$/.test(desired) ? id === desired || name === desired : name === desired;
}

/** The host's principal in the spelling the user chose when they match, else as the host shows it (a name, else the id). */
export function observedPrincipal(desired: string | undefined, name: string | undefined, id: string | undefined): string | undefined {
  if (samePrincipal(desired, name, id)) return desired;
  return id === "-1" ? undefined : (name ?? id);
}

/** The tap's identity as the host has it, spelled like `desired` where they agree. */
export function observedIdentity(obs: TapObserved, desired: TapIdentity): TapIdentity {
  return {
    owner: observedPrincipal(desired.owner, obs.ownerName, obs.ownerId),
    group: observedPrincipal(desired.group, obs.groupName, obs.groupId),
    multiQueue: obs.multiQueue,
    vnetHdr: obs.vnetHdr,
  };
}

/** Whether the host's tap has the desired owner, group and flags (and no packet-info header, which we never set). */
export function sameIdentity(obs: TapObserved, desired: TapIdentity): boolean {
  return (
    obs.isTap &&
    !obs.pi &&
    samePrincipal(desired.owner, obs.ownerName, obs.ownerId) &&
    samePrincipal(desired.group, obs.groupName, obs.groupId) &&
    obs.multiQueue === desired.multiQueue &&
    obs.vnetHdr === desired.vnetHdr
  );
}

export type TapAction =
  ({ op: "create"; name: string } & TapIdentity) | { op: "recreate"; name: string; want: TapIdentity; was: TapIdentity; bridge?: string; mtu?: number } | LinkAction;

/** Preconditions re-checked on the host under the lock. */
export type TapGuard =
  | { op: "tunSupport" }
  | { op: "absent"; name: string }
  | { op: "isTap"; name: string }
  | { op: "userExists"; name: string; user: string }
  | { op: "groupExists"; name: string; group: string }
  | { op: "bridgeExists"; name: string; bridge: string };

export interface TapPlan {
  guards: TapGuard[];
  actions: TapAction[];
}

const identityOf = (i: TapInterfaceInputs): TapIdentity => ({ owner: i.owner, group: i.group, multiQueue: i.multiQueue, vnetHdr: i.vnetHdr });

/**
 * Plan the actions that take the host from `snap` to `desired`. `previous`
 * is the prior state (update): its bridge is ours to leave. Throws
 * KvmnetError (Conflict / NotFound) when the plan cannot be carried out;
 * nothing has touched the host then.
 */
export function planTap(desired: TapInterfaceInputs, snap: HostSnapshot, previous?: TapInterfaceInputs): TapPlan {
  const { name } = desired;
  const who = `tapInterface ${name}`;
  const obs = observeTap(snap, name);
  const want = identityOf(desired);
  const guards: TapGuard[] = [];
  const actions: TapAction[] = [];

  if (obs.exists && !obs.isTap) {
    throw new KvmnetError({
      kind: "Conflict",
      message: `an interface named ${name} already exists and is not a tap (it is ${obs.kind ?? "unknown"})`,
      hint: "choose another name",
    });
  }
  if (obs.exists && !previous && !desired.adopt) {
    throw new KvmnetError({
      kind: "Conflict",
      message: `tap ${name} already exists on the host`,
      hint: "set adopt: true to manage it (its owner, group and flags become the declared ones), or choose another name",
    });
  }
  if (desired.bridge !== undefined && obs.master !== desired.bridge) {
    bridgeToJoin(snap, who, desired.bridge, "create the Bridge (or NatNetwork) first: pass its name output as bridge (or use dependsOn) so it exists before the tap joins it");
  }
  const needsCreate = !obs.exists || !sameIdentity(obs, want);
  if (needsCreate) {
    if (want.owner !== undefined && !/^\d+$/.test(want.owner)) guards.push({ op: "userExists", name, user: want.owner });
    if (want.group !== undefined && !/^\d+$/.test(want.group)) guards.push({ op: "groupExists", name, group: want.group });
  }
  if (!obs.exists) {
    guards.push({ op: "tunSupport" }, { op: "absent", name });
    actions.push({ op: "create", name, ...want });
  } else {
    guards.push({ op: "isTap", name });
    if (needsCreate) {
      actions.push({
        op: "recreate",
        name,
        want,
        was: { ...observedIdentity(obs, want), owner: obs.ownerId === "-1" ? undefined : obs.ownerId, group: obs.groupId === "-1" ? undefined : obs.groupId },
        bridge: obs.master,
        mtu: obs.mtu,
      });
    }
  }
  // A tap made anew has the kernel's mtu and no bridge: set both as asked.
  const mtuNow = needsCreate ? undefined : obs.mtu;
  const masterNow = needsCreate ? undefined : obs.master;
  if (desired.mtu !== undefined && desired.mtu !== mtuNow) actions.push({ op: "setMtu", name, mtu: desired.mtu, previous: mtuNow });
  if (desired.bridge !== undefined && masterNow !== desired.bridge) {
    guards.push({ op: "bridgeExists", name, bridge: desired.bridge });
    actions.push({ op: "attach", name, bridge: desired.bridge, previous: masterNow });
  } else if (desired.bridge === undefined && previous?.bridge !== undefined && masterNow === previous.bridge) {
    actions.push({ op: "detach", name, bridge: previous.bridge });
  }
  if (!obs.adminUp || needsCreate) actions.push({ op: "up", name });
  return { guards, actions };
}

/** Plan the removal of tap `name` (the kernel drops it from its bridge). A non-tap of that name is not ours. */
export function planTapDelete(props: TapInterfaceInputs, snap: HostSnapshot): TapPlan {
  const obs = observeTap(snap, props.name);
  return { guards: [], actions: obs.isTap ? [{ op: "delete", name: props.name }] : [] };
}

/** Every way the observed tap differs from `desired` (nmstate-style messages); empty when it matches. */
export function verifyTap(desired: TapInterfaceInputs, obs: TapObserved): string[] {
  const name = desired.name;
  if (!obs.exists) return [`tapInterface ${name} does not exist`];
  if (!obs.isTap) return [`${name} is not a tap (it is ${obs.kind})`];
  const problems: string[] = [];
  const have = observedIdentity(obs, identityOf(desired));
  const show = (v: string | boolean | undefined) => (v === undefined ? "(none)" : String(v));
  for (const k of ["owner", "group", "multiQueue", "vnetHdr"] as const) {
    if (have[k] !== identityOf(desired)[k]) problems.push(`tapInterface ${name} ${k} desired ${show(identityOf(desired)[k])}, current ${show(have[k])}`);
  }
  if (desired.mtu !== undefined && desired.mtu !== obs.mtu) problems.push(`tapInterface ${name} mtu desired ${desired.mtu}, current ${obs.mtu}`);
  if (desired.bridge !== undefined && desired.bridge !== obs.master) problems.push(`tapInterface ${name} bridge desired ${desired.bridge}, current ${obs.master ?? "(none)"}`);
  if (!obs.adminUp) problems.push(`tapInterface ${name} state desired up, current down`);
  return problems;
}
