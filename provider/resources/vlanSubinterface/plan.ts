/**
 * VlanSubinterface planning: desired inputs vs the observed host → actions. Pure.
 *
 * Rules worth knowing:
 * - The kernel carries each (parent, VLAN id, protocol) once, whatever the
 *   name: a second sub-interface for the same tag is refused up front.
 * - `addresses` are "at least these", as Bridge's: the listed ones and the
 *   ones listed before are ours; others on the interface are left alone.
 * - A parent that is down carries no frames, so create brings it up and
 *   records that in a holder file (`/run/kvmnet/state/vlan/<name>.up`, its
 *   content the parent's name). A parent brought up by one of our VLANs is
 *   held by every later one of ours too; the last holder out brings it down
 *   again, unless something else (a VLAN made by hand, a bridge) now sits on
 *   it. That decision is made on the host under the lock (render.ts), never
 *   from a snapshot another resource may have changed since.
 */
import { KvmnetError } from "../../errors";
import type { AddressAction, LinkAction } from "../../linkSteps";
import { bridgeToJoin, configuredAddresses, findLink, HostSnapshot, IpLink, LinkBasics, linkBasics, STATE_DIR } from "../../observe";
import { VlanProtocol, VlanSubinterfaceInputs } from "./schema";

export const VLAN_STATE_DIR = `${STATE_DIR}/vlan`;

/** The holder file that says VLAN `name` keeps its parent up. */
export function parentHoldFile(name: string): string {
  return `${VLAN_STATE_DIR}/${name}.up`;
}

export interface VlanObserved extends LinkBasics {
  exists: boolean;
  isVlan: boolean;
  kind?: string;
  parent?: string;
  vlanId?: number;
  protocol?: string;
  addresses: string[];
  /** The parent this VLAN holds up (its holder file), when it has one. */
  holdsParent?: string;
}

/** `ip -j -d link` names a VLAN's parent in `link` (same namespace). */
type VlanLink = IpLink & { link?: string };

function vlanIdentity(l: VlanLink): { parent?: string; vlanId?: number; protocol?: string } | undefined {
  if (l.linkinfo?.info_kind !== "vlan") return undefined;
  const d = l.linkinfo.info_data ?? {};
  return { parent: l.link, vlanId: typeof d.id === "number" ? d.id : undefined, protocol: typeof d.protocol === "string" ? d.protocol : undefined };
}

/** What we care about for VLAN `name` in a host snapshot. */
export function observeVlan(snap: HostSnapshot, name: string): VlanObserved {
  const hold = snap.stateFiles[parentHoldFile(name)]?.trim();
  const holdsParent = hold ? hold : undefined;
  const link = findLink(snap, name);
  if (!link) return { exists: false, isVlan: false, adminUp: false, addresses: [], holdsParent };
  const id = vlanIdentity(link);
  return {
    exists: true,
    isVlan: id !== undefined,
    kind: link.linkinfo?.info_kind ?? link.link_type,
    ...id,
    ...linkBasics(link),
    addresses: configuredAddresses(snap, name),
    holdsParent,
  };
}

export type VlanAction =
  | { op: "create"; name: string; parent: string; vlanId: number; protocol: VlanProtocol }
  | { op: "holdParent"; name: string; parent: string }
  | { op: "releaseParent"; name: string; parent: string }
  | AddressAction
  | LinkAction;

/** Preconditions re-checked on the host under the lock. */
export type VlanGuard =
  | { op: "vlanSupport" }
  | { op: "absent"; name: string }
  | { op: "isVlan"; name: string }
  | { op: "parentExists"; name: string; parent: string }
  | { op: "bridgeExists"; name: string; bridge: string };

export interface VlanPlan {
  guards: VlanGuard[];
  actions: VlanAction[];
}

const describe = (id: { parent?: string; vlanId?: number; protocol?: string }) => `VLAN ${id.vlanId} (${id.protocol}) on ${id.parent}`;

/**
 * Plan the actions that take the host from `snap` to `desired`. `previous`
 * is the prior state (update): its addresses and bridge are ours to release.
 * Throws KvmnetError (NotFound / Conflict / InvalidArgument) when the plan
 * cannot be carried out; nothing has touched the host then.
 */
export function planVlan(desired: VlanSubinterfaceInputs, snap: HostSnapshot, previous?: VlanSubinterfaceInputs): VlanPlan {
  const { name, parent, vlanId, protocol } = desired;
  const who = `vlanSubinterface ${name}`;
  const obs = observeVlan(snap, name);
  const parentLink = findLink(snap, parent);
  const guards: VlanGuard[] = [];
  const actions: VlanAction[] = [];

  if (!parentLink) {
    throw new KvmnetError({
      kind: "NotFound",
      message: `${who}: parent ${parent} does not exist on the host`,
      hint: "give an existing interface (`ip link`) as parent, or create it first",
    });
  }
  if (obs.exists) {
    if (!obs.isVlan) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `an interface named ${name} already exists and is not a VLAN (it is ${obs.kind ?? "unknown"})`,
        hint: "choose another name",
      });
    }
    if (!isOurVlan(obs, desired)) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `an interface named ${name} already exists and is ${describe(obs)}, not ${describe(desired)}`,
        hint: "choose another name, or delete that interface first",
      });
    }
    if (!previous && !desired.adopt) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `VLAN sub-interface ${name} (${describe(desired)}) already exists on the host`,
        hint: "set adopt: true to manage it (its settings become the declared ones), or choose another name",
      });
    }
  } else {
    const twin = snap.links.find((l) => {
      const id = vlanIdentity(l);
      return id?.parent === parent && id.vlanId === vlanId && id.protocol === protocol;
    });
    if (twin) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `${who}: ${parent} already carries ${describe(desired)} as ${twin.ifname}; the kernel allows one interface per tag`,
        hint: `manage that interface instead (name: "${twin.ifname}", adopt: true), or delete it first`,
      });
    }
  }
  if (desired.mtu !== undefined && desired.mtu > parentLink.mtu) {
    throw new KvmnetError({
      kind: "InvalidArgument",
      message: `${who}: mtu ${desired.mtu} is larger than the mtu of its parent ${parent} (${parentLink.mtu})`,
      hint: `raise ${parent}'s mtu first, or set mtu to ${parentLink.mtu} or less`,
    });
  }
  if (desired.bridge !== undefined && obs.master !== desired.bridge) {
    bridgeToJoin(snap, who, desired.bridge, "create the Bridge first: pass its `name` output as bridge (or use dependsOn) so it exists before the VLAN joins it");
  }

  if (!obs.exists) {
    guards.push({ op: "vlanSupport" }, { op: "parentExists", name, parent }, { op: "absent", name });
    actions.push({ op: "create", name, parent, vlanId, protocol }, { op: "holdParent", name, parent });
  } else {
    guards.push({ op: "isVlan", name });
    // The parent went down since (by hand): bring it up again, as create would.
    if (!parentLink.flags.includes("UP")) actions.push({ op: "holdParent", name, parent });
  }
  if (desired.mtu !== undefined && desired.mtu !== obs.mtu) actions.push({ op: "setMtu", name, mtu: desired.mtu, previous: obs.mtu });

  if (desired.bridge !== undefined && obs.master !== desired.bridge) {
    guards.push({ op: "bridgeExists", name, bridge: desired.bridge });
    actions.push({ op: "attach", name, bridge: desired.bridge, previous: obs.master });
  } else if (desired.bridge === undefined && previous?.bridge !== undefined && obs.master === previous.bridge) {
    actions.push({ op: "detach", name, bridge: previous.bridge });
  }

  // Removals first: deleting an IPv4 primary address also deletes the
  // secondaries of its subnet (unless promote_secondaries is on), so a new
  // address in the old one's subnet would vanish with it.
  for (const cidr of previous?.addresses ?? []) {
    if (!desired.addresses.includes(cidr) && obs.addresses.includes(cidr)) actions.push({ op: "removeAddress", name, cidr });
  }
  for (const cidr of desired.addresses) {
    if (!obs.addresses.includes(cidr)) actions.push({ op: "addAddress", name, cidr });
  }
  if (!obs.adminUp) actions.push({ op: "up", name });
  return { guards, actions };
}

/**
 * Whether the host's `name` is the VLAN `desired` describes. A VLAN's parent,
 * id and protocol cannot change in place, so one that differs was made anew
 * by someone else: it is not ours, and counts as gone.
 */
export function isOurVlan(obs: VlanObserved, desired: VlanSubinterfaceInputs): boolean {
  return obs.isVlan && obs.parent === desired.parent && obs.vlanId === desired.vlanId && obs.protocol === desired.protocol;
}

/** Plan the removal of VLAN `name` (the kernel drops it from its bridge), then release its parent. */
export function planVlanDelete(props: VlanSubinterfaceInputs, snap: HostSnapshot): VlanPlan {
  const obs = observeVlan(snap, props.name);
  const actions: VlanAction[] = [];
  if (isOurVlan(obs, props)) actions.push({ op: "delete", name: props.name });
  if (obs.holdsParent !== undefined) actions.push({ op: "releaseParent", name: props.name, parent: obs.holdsParent });
  return { guards: [], actions };
}
