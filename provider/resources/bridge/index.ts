/** The Bridge kind: schema · plan · render · verify, wired into the lifecycle. */
import { inputKeysOf } from "../../fields";
import { KINDS, sameHost } from "../../identity";
import { HostSnapshot } from "../../observe";
import { makeKindProvider } from "../lifecycle";
import { bridgePersist } from "./persist";
import { observeBridge, planBridge, planBridgeDelete } from "./plan";
import { renderBridgePlan } from "./render";
import { routesSection } from "./takeover";
import { BridgeInputs, bridgeInputsSchema, BridgeOptions, bridgeStoredSchema, desiredOptions, OPTION_FIELDS } from "./schema";
import { optionToInput, verifyBridge } from "./verify";

export { bridgeInputsSchema, bridgeStoredSchema } from "./schema";
export type { BridgeInputs } from "./schema";

const INPUT_KEYS = inputKeysOf(bridgeInputsSchema);

/**
 * Outputs: the inputs as the host has them (so refresh shows drift in every
 * managed field), plus ifindex, the actual macAddress, operState and every
 * interface attached to the bridge (ours and others', e.g. guest taps).
 */
export function bridgeOutputs(inputs: BridgeInputs, snap: HostSnapshot): Record<string, unknown> | undefined {
  const obs = observeBridge(snap, inputs.name);
  if (!obs.exists || !obs.isBridge) return undefined;
  const out: Record<string, unknown> = { ...inputs };
  for (const k of Object.keys(desiredOptions(inputs)) as (keyof BridgeOptions)[]) {
    out[OPTION_FIELDS[k]] = optionToInput(k, obs.options[k] === 2 && k === "stp_state" ? 1 : obs.options[k]);
  }
  if (inputs.mtu !== undefined) out.mtu = obs.mtu;
  out.ports = inputs.ports.filter((p) => obs.ports.includes(p));
  out.addresses = inputs.addresses.filter((a) => obs.addresses.includes(a));
  out.macAddress = obs.macAddress;
  out.ifindex = obs.ifindex;
  out.operState = obs.operState;
  // Sorted: the kernel lists ports in ifindex order, which is the order they were made in, and
  // that differs from boot to boot (ifupdown's stanzas, networkd, NM): as listed, a reboot was drift.
  out.attachedInterfaces = [...obs.ports].sort();
  // Uplinks taken over (takeOverUplink): port → the addresses that moved onto the bridge.
  out.takenOver = obs.takenOver;
  return out;
}

export const bridgeProvider = makeKindProvider<BridgeInputs>({
  kind: KINDS.bridge.idKind,
  schema: bridgeInputsSchema,
  storedSchema: bridgeStoredSchema,
  inputKeys: INPUT_KEYS,
  computedInputs: ["macAddress"],
  addedInputs: { model: "virtio-net-pci" },
  replaces(olds, news) {
    const r: string[] = [];
    if (olds.name !== news.name) r.push("name");
    if (!sameHost(olds.connection, news.connection)) r.push("connection");
    return r;
  },
  deleteBeforeReplace(olds, news) {
    // A renamed bridge on the same host would fight the old one for its ports.
    return sameHost(olds.connection, news.connection) && Array.isArray(news.ports) && news.ports.length > 0;
  },
  plan: (desired, snap, previous) => renderBridgePlan(planBridge(desired, snap, previous)),
  planDelete: (props, snap) => renderBridgePlan(planBridgeDelete(props.name, snap, props.confirmTimeoutSec)),
  verify: (desired, snap) => verifyBridge(desired, observeBridge(snap, desired.name)),
  outputs: bridgeOutputs,
  // The routes a taken-over uplink brings onto the bridge, for its persisted configuration.
  observeExtra: [routesSection],
  persist: bridgePersist,
  attachPoint: (i) => ({ kind: "bridge", bridge: i.name }),
});
