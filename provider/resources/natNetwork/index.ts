/**
 * The NatNetwork kind: a bridge with a gateway address, its own nft table,
 * ip_forward when the mode needs it, and a dnsmasq for DHCP/DNS — libvirt's
 * `<network>` without libvirt. schema · plan · render · verify · persist
 * (boot units of our own, persist.ts), wired into the lifecycle.
 */
import { inputKeysOf } from "../../fields";
import { sameHost } from "../../identity";
import { makeKindProvider } from "../lifecycle";
import { natObserveSection } from "./observe";
import { natPersist } from "./persist";
import { NAT_KIND, planNat, planNatDelete } from "./plan";
import { renderNatPlan } from "./render";
import { cidrsOverlap, NatNetworkInputs, natNetworkInputsSchema, natNetworkStoredSchema } from "./schema";
import { natOutputs, verifyNat } from "./verify";

export { natNetworkInputsSchema, natNetworkStoredSchema } from "./schema";
export type { NatNetworkInputs } from "./schema";

const INPUT_KEYS = inputKeysOf(natNetworkInputsSchema);

export const natNetworkProvider = makeKindProvider<NatNetworkInputs>({
  kind: NAT_KIND,
  schema: natNetworkInputsSchema,
  storedSchema: natNetworkStoredSchema,
  inputKeys: INPUT_KEYS,
  // The uplink defaults to the default route's interface, resolved on the host at create.
  computedInputs: ["uplink"],
  addedInputs: { adopt: false, model: "virtio-net-pci" },
  replaces(olds, news) {
    const r = (["name", "bridgeName", "subnet", "gateway"] as const).filter((k) => olds[k] !== news[k]);
    return sameHost(olds.connection, news.connection) ? r : [...r, "connection"];
  },
  deleteBeforeReplace(olds, news) {
    // On one host, the new network would collide with the old one on its name
    // (table, files), its bridge, or its subnet (the overlap check refuses it).
    if (!sameHost(olds.connection, news.connection)) return false;
    if (olds.name === news.name || olds.bridgeName === news.bridgeName) return true;
    return typeof olds.subnet === "string" && typeof news.subnet === "string" && cidrsOverlap(olds.subnet, news.subnet);
  },
  plan: (desired, snap, previous) => renderNatPlan(planNat(desired, snap, previous)),
  planDelete: (props, snap) => renderNatPlan(planNatDelete(props, snap)),
  verify: verifyNat,
  attachPoint: (i) => ({ kind: "bridge", bridge: i.bridgeName }),
  // Every dnsmasq running a NatNetwork's config, and who holds ports 53/67 (#14).
  observeExtra: [natObserveSection],
  outputs: natOutputs,
  persist: natPersist,
});
