/** The TapInterface kind: schema · plan · render · verify, wired into the lifecycle, and the QEMU arguments that open the tap. */
import { netdevId } from "../../attach";
import { createHash } from "crypto";
import { inputKeysOf } from "../../fields";
import { hostOf, KINDS, sameHost } from "../../identity";
import { HostSnapshot } from "../../observe";
import type { KindProvider } from "../kind";
import { makeKindProvider } from "../lifecycle";
import { stackFactsObserveSection } from "../../persist/stackFacts";
import { persistTap } from "./persist";
import { observedIdentity, observeTap, planTap, planTapDelete, tapOwnerObserveSection, verifyTap } from "./plan";
import { renderTapPlan } from "./render";
import { TapInterfaceInputs, tapInterfaceInputsSchema, tapInterfaceStoredSchema } from "./schema";

export { tapInterfaceInputsSchema, tapInterfaceStoredSchema } from "./schema";
export type { TapInterfaceInputs } from "./schema";

const INPUT_KEYS = inputKeysOf(tapInterfaceInputsSchema);

/** What a tap is made with: `ip tuntap` cannot change them in place. */
const IDENTITY_KEYS = ["name", "owner", "group", "multiQueue", "vnetHdr"] as const;

/** The guest MAC when none is given: QEMU's 52:54:00 prefix and three bytes of a hash of host and tap, stable across runs. */
export function defaultGuestMac(host: string, name: string): string {
  const h = createHash("sha256").update(`pulumi-kvmnet/tap/${host}/${name}`).digest();
  return ["52", "54", "00", ...[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

/**
 * The arguments that give a QEMU guest this tap as its NIC, one argv word
 * each: `-netdev tap,id=…,ifname=…,script=no,downscript=no,vnet_hdr=on|off[,queues=N]`
 * and `-device <model>,netdev=…,mac=…[,mq=on]`. script=no: the tap exists
 * and is in its bridge already, so QEMU must not run /etc/qemu-ifup.
 * vnet_hdr and queues must match the tap's flags, or TUNSETIFF fails.
 */
export function qemuNetdevArgs(i: Pick<TapInterfaceInputs, "name" | "model" | "guestMac" | "vnetHdr" | "multiQueue" | "queues">, host: string): string[] {
  const id = netdevId(i.name);
  const queues = i.multiQueue ? (i.queues ?? 2) : undefined;
  const netdev = [`tap`, `id=${id}`, `ifname=${i.name}`, "script=no", "downscript=no", `vnet_hdr=${i.vnetHdr ? "on" : "off"}`, ...(queues ? [`queues=${queues}`] : [])];
  // virtio-net needs vectors = 2 * queues + 2 for its multi-queue interrupts.
  const mq = queues && i.model === "virtio-net-pci" ? ["mq=on", `vectors=${2 * queues + 2}`] : [];
  const device = [i.model, `netdev=${id}`, `mac=${i.guestMac ?? defaultGuestMac(host, i.name)}`, ...mq];
  return ["-netdev", netdev.join(","), "-device", device.join(",")];
}

/**
 * Outputs: the inputs as the host has them (owner, group and flags read back,
 * so refresh shows a tap made anew by hand with another owner), plus ifindex,
 * macAddress (the host side's), operState and qemuNetdevArgs. An unset mtu is
 * not reported (unmanaged), and `bridge` only when one was asked for.
 */
export function tapOutputs(inputs: TapInterfaceInputs, snap: HostSnapshot): Record<string, unknown> | undefined {
  const obs = observeTap(snap, inputs.name);
  if (!obs.isTap) return undefined;
  const out: Record<string, unknown> = { ...inputs, ...observedIdentity(obs, inputs) };
  if (inputs.mtu !== undefined) out.mtu = obs.mtu;
  out.bridge = inputs.bridge !== undefined ? obs.master : undefined;
  out.guestMac = inputs.guestMac ?? defaultGuestMac(hostOf(inputs.connection), inputs.name);
  out.qemuNetdevArgs = qemuNetdevArgs(inputs, hostOf(inputs.connection));
  out.ifindex = obs.ifindex;
  out.macAddress = obs.macAddress;
  out.operState = obs.operState;
  return out;
}

/** An unset `bridge` means "in no bridge": removing it detaches the tap. Owner, group and flags replace it (deleted first: same name). */
export const tapInterfaceProvider: KindProvider = makeKindProvider<TapInterfaceInputs>({
  kind: KINDS.tapInterface.idKind,
  schema: tapInterfaceInputsSchema,
  storedSchema: tapInterfaceStoredSchema,
  inputKeys: INPUT_KEYS,
  removalIsChange: ["bridge", "owner", "group"],
  // One guest's NIC: libvirt opens it as `type='ethernet'` (a libvirt network of one tap would be no network).
  attachPoint: (i) => ({ kind: "tap", dev: i.name }),
  replaces(olds, news) {
    const r: string[] = IDENTITY_KEYS.filter((k) => olds[k] !== news[k]);
    if (!sameHost(olds.connection, news.connection)) r.push("connection");
    return r;
  },
  deleteBeforeReplace(olds, news) {
    return sameHost(olds.connection, news.connection) && olds.name === news.name;
  },
  plan: (desired, snap, previous) => renderTapPlan(planTap(desired, snap, previous)),
  planDelete: (props, snap) => renderTapPlan(planTapDelete(props, snap)),
  verify: (desired, snap) => verifyTap(desired, observeTap(snap, desired.name)),
  outputs: tapOutputs,
  observeExtra: [tapOwnerObserveSection, stackFactsObserveSection],
  persist: persistTap,
});
