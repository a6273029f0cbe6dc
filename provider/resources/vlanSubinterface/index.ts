/** The VlanSubinterface kind: schema · plan · render · verify, wired into the lifecycle. */
import type { AttachPoint } from "../../attach";
import { inputKeysOf } from "../../fields";
import { KINDS, sameHost } from "../../identity";
import { HostSnapshot } from "../../observe";
import type { KindProvider } from "../kind";
import { makeKindProvider } from "../lifecycle";
import { stackFactsObserveSection } from "../../persist/stackFacts";
import { persistVlan } from "./persist";
import { isOurVlan, observeVlan, planVlan, planVlanDelete } from "./plan";
import { renderVlanPlan } from "./render";
import { VlanSubinterfaceInputs, vlanSubinterfaceInputsSchema, vlanSubinterfaceStoredSchema } from "./schema";
import { verifyVlan } from "./verify";

export { vlanSubinterfaceInputsSchema, vlanSubinterfaceStoredSchema } from "./schema";
export type { VlanSubinterfaceInputs } from "./schema";

const INPUT_KEYS = inputKeysOf(vlanSubinterfaceInputsSchema);

/** The fields that make a VLAN what it is: the kernel cannot change them in place. */
const IDENTITY_KEYS = ["parent", "vlanId", "protocol"] as const;

/**
 * Outputs: the inputs as the host has them (so refresh shows drift in mtu,
 * addresses and bridge), plus ifindex, macAddress and operState. Like
 * Bridge's, an unset mtu is not reported (it is unmanaged), and `bridge` only
 * when one was asked for. A VLAN of this name with another parent, id or
 * protocol is someone else's: the resource counts as gone.
 */
export function vlanOutputs(inputs: VlanSubinterfaceInputs, snap: HostSnapshot): Record<string, unknown> | undefined {
  const obs = observeVlan(snap, inputs.name);
  if (!obs.exists || !isOurVlan(obs, inputs)) return undefined;
  const out: Record<string, unknown> = { ...inputs };
  if (inputs.mtu !== undefined) out.mtu = obs.mtu;
  out.bridge = inputs.bridge !== undefined ? obs.master : undefined;
  out.addresses = inputs.addresses.filter((a) => obs.addresses.includes(a));
  out.ifindex = obs.ifindex;
  out.macAddress = obs.macAddress;
  out.operState = obs.operState;
  return out;
}

/** Where VMs attach: in a bridge, they join the bridge; on its own the VLAN takes them through macvtap. */
export function vlanAttachPoint(i: Pick<VlanSubinterfaceInputs, "bridge" | "name">): AttachPoint {
  return i.bridge !== undefined ? { kind: "bridge", bridge: i.bridge } : { kind: "direct", dev: i.name };
}

/**
 * An unset optional field is normally left as the host has it (mtu), but an
 * unset `bridge` means "in no bridge": removing it from the program is a
 * change, which detaches the VLAN from the bridge it had.
 */
export const vlanSubinterfaceProvider: KindProvider = makeKindProvider<VlanSubinterfaceInputs>({
  kind: KINDS.vlanSubinterface.idKind,
  schema: vlanSubinterfaceInputsSchema,
  storedSchema: vlanSubinterfaceStoredSchema,
  inputKeys: INPUT_KEYS,
  removalIsChange: ["bridge"],
  addedInputs: { model: "virtio-net-pci" },
  attachPoint: vlanAttachPoint,
  replaces(olds, news) {
    const r: string[] = [...IDENTITY_KEYS, "name"].filter((k) => olds[k] !== news[k]);
    if (!sameHost(olds.connection, news.connection)) r.push("connection");
    return r;
  },
  deleteBeforeReplace(olds, news) {
    // The new VLAN would collide with the old one while both exist: by name,
    // or by tag (the kernel carries a parent's VLAN id once per protocol).
    if (!sameHost(olds.connection, news.connection)) return false;
    return olds.name === news.name || IDENTITY_KEYS.every((k) => olds[k] === news[k]);
  },
  plan: (desired, snap, previous) => renderVlanPlan(planVlan(desired, snap, previous)),
  planDelete: (props, snap) => renderVlanPlan(planVlanDelete(props, snap)),
  verify: (desired, snap) => verifyVlan(desired, observeVlan(snap, desired.name)),
  outputs: vlanOutputs,
  observeExtra: [stackFactsObserveSection],
  persist: persistVlan,
});
