/**
 * The NetworkManager backend: keyfiles in /etc/NetworkManager/system-connections
 * (mode 0600: NetworkManager ignores keyfiles others can read), each with a
 * profile UUID derived from its id so the file is a function of the inputs,
 * and re-read with `nmcli connection reload` (the core's reloadsFor). And what
 * NetworkManager asks of the lifecycle: it acts on profile changes by itself,
 * after the command that made them returned, so an object with profiles is
 * looked at again until it settles.
 */
import { createHash } from "crypto";
import type { HostSnapshot } from "../observe";
import { literal, Script, sh } from "../shell";
import { bootAddresses, linkHeader, OwnedFile, ownedFiles, PersistedBridge, PersistedLink, PersistFile, PersistSet, StackReload, writtenBy } from "./files";
import type { StackFacts } from "./stackFacts";

export const NM_DIR = "/etc/NetworkManager/system-connections";
/**
 * Where NetworkManager reads keyfiles: /etc, its read-only /usr/lib, and /run
 * (in-memory profiles; netplan writes its profiles there at every boot).
 */
export const NM_PROFILE_DIRS = [NM_DIR, "/usr/lib/NetworkManager/system-connections", "/run/NetworkManager/system-connections"];

/** NetworkManager re-reads its keyfiles (and acts on them by itself: see {@link settled}). */
export const NM_RELOAD: StackReload = { under: "/etc/NetworkManager/", run: literal("if command -v nmcli >/dev/null 2>&1; then nmcli connection reload; fi") };

/**
 * NetworkManager acts on a profile reload by itself, after `nmcli connection
 * reload` returned: a bridge deleted live while its port's profile was still
 * loaded is brought back by that port's autoconnect, and taken down again once
 * the reload dropped the profiles (seen in the lab: back for about half a
 * second). So when an object's files include NetworkManager profiles, a
 * read-back that is not yet what the change wants is looked at again until it
 * is, for up to this long, before it counts as a failure.
 */
export const NM_SETTLE_MS = 10_000;

/** Further delete passes when NetworkManager kept (or brought back) an object after its profiles were removed. */
export const NM_DELETE_PASSES = 2;

/** Does object kind/name persist (or will it) through NetworkManager profiles? */
export function usesNetworkManager(kind: string, name: string, snap: HostSnapshot, set?: PersistSet): boolean {
  const paths = [...ownedFiles(snap, kind, name).map((f) => f.path), ...(set?.files ?? []).map((f) => f.path)];
  return paths.some((p) => p.startsWith("/etc/NetworkManager/"));
}

/**
 * `after`, or once NetworkManager settled, a later snapshot (from `observeAgain`)
 * for which `done` holds: the last one looked at when it never did.
 */
export async function settled(observeAgain: () => Promise<HostSnapshot>, after: HostSnapshot, nm: boolean, done: (s: HostSnapshot) => boolean): Promise<HostSnapshot> {
  if (!nm || done(after)) return after;
  const deadline = Date.now() + NM_SETTLE_MS;
  let snap = after;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    snap = await observeAgain();
    if (done(snap)) break;
  }
  return snap;
}
/** RFC 4122 version 5 layout over the SHA-1 of `input`. */
function uuidOf(input: string): string {
  const h = createHash("sha1").update(input).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/*
 * Two seeds, because hosts already have profiles with both: a Bridge's
 * profiles were first written with stableUuid, a VLAN's and a tap's with
 * profileUuid. A profile's UUID never changes (NetworkManager keys its
 * active connections by it), so neither derivation may.
 */

/** A Bridge's profile UUID, derived from `seed` (its profile id). */
export const stableUuid = (seed: string): string => uuidOf(`pulumi-kvmnet\0${seed}`);

/** A link's profile UUID (VlanSubinterface, TapInterface), derived from its profile id. */
export const profileUuid = (id: string): string => uuidOf(`pulumi-kvmnet/${id}`);

/** NetworkManager learned `vlan.protocol` (802.1ad) in 1.42. */
export const NM_VLAN_PROTOCOL_SINCE = [1, 42];

export function versionAtLeast(v: string, min: number[]): boolean {
  const parts = v.split(".").map(Number);
  for (let i = 0; i < min.length; i++) {
    const p = parts[i] ?? 0;
    if (p !== min[i]) return p > min[i];
  }
  return true;
}

/** Does a saved profile create bridge `name` at boot? */
export const nmCreatesBridge = (facts: StackFacts, name: string) => facts.nmProfiles.some((p) => p.type === "bridge" && p.interfaceName === name);

/** The keyfile of a link. Pure. */
export function nmLinkKeyfile(l: PersistedLink): PersistFile {
  const { name, vlan, tap } = l;
  const id = l.stem;
  const v4 = l.addresses.filter((a) => !a.includes(":"));
  const v6 = l.addresses.filter((a) => a.includes(":"));
  const lines = [
    linkHeader(l.owner),
    "[connection]",
    `id=${id}`,
    `uuid=${profileUuid(id)}`,
    `type=${vlan ? "vlan" : "tun"}`,
    `interface-name=${name}`,
    "autoconnect=true",
    // A bridge port has no IP configuration of its own (NM drops it from ports).
    ...(l.bridge !== undefined ? [`master=${l.bridge}`, "slave-type=bridge"] : []),
    "",
    ...(l.mtu !== undefined ? ["[ethernet]", `mtu=${l.mtu}`, ""] : []),
    ...(vlan ? ["[vlan]", `id=${vlan.id}`, `parent=${vlan.parent}`, ...(vlan.protocol === "802.1ad" ? ["protocol=802.1ad"] : [])] : []),
    ...(tap
      ? [
          "[tun]",
          // NM_SETTING_TUN_MODE_TAP
          "mode=2",
          ...(tap.owner !== undefined ? [`owner=${tap.owner}`] : []),
          ...(tap.group !== undefined ? [`group=${tap.group}`] : []),
          `multi-queue=${tap.multiQueue}`,
          `vnet-hdr=${tap.vnetHdr}`,
          "pi=false",
        ]
      : []),
    ...(l.bridge !== undefined
      ? []
      : [
          "",
          "[ipv4]",
          ...(v4.length ? ["method=manual", ...v4.map((a, i) => `address${i + 1}=${a}`)] : ["method=disabled"]),
          "",
          "[ipv6]",
          // "ignore" leaves IPv6 to the kernel, as a link made with `ip` has it (its own link-local, RAs).
          ...(v6.length ? ["method=manual", "addr-gen-mode=eui64", ...v6.map((a, i) => `address${i + 1}=${a}`)] : ["method=ignore"]),
        ]),
  ];
  return { path: `${NM_DIR}/${id}.nmconnection`, content: lines.join("\n") + "\n", mode: "0600" };
}

/**
 * The keyfiles of a bridge: its profile, and one per port (ports are Ethernet
 * NICs: NetworkManager types profiles by device). Times are whole seconds
 * (NetworkManager takes no fractions; the kind refuses others). Pure.
 */
export function nmBridgeKeyfiles(b: PersistedBridge): PersistFile[] {
  const id = b.stem;
  const o = b.options;
  const isV6 = (s: string) => s.includes(":");
  const ip = (fam: 4 | 6) => {
    const cidrs = bootAddresses(b).filter((a) => (fam === 6) === isV6(a));
    // "ignore" (IPv6): NM leaves the kernel's own link-local addressing alone, as live.
    if (cidrs.length === 0) return [`[ipv${fam}]`, `method=${fam === 4 ? "disabled" : "ignore"}`];
    const routes = b.takenOver.routes.filter((r) => (fam === 6) === (isV6(r.dst) || isV6(r.gateway ?? "")));
    const gw = routes.find((r) => r.dst === "default" && r.gateway);
    const others = routes.filter((r) => r !== gw);
    return [
      `[ipv${fam}]`,
      "method=manual",
      ...cidrs.map((a, i) => `address${i + 1}=${a}`),
      ...(gw ? [`gateway=${gw.gateway}`, ...(gw.metric !== undefined ? [`route-metric=${gw.metric}`] : [])] : []),
      // routeN=destination[,gateway[,metric]]; NM's default-route spelling is the gateway key above.
      ...others.map(
        (r, i) =>
          `route${i + 1}=${[r.dst === "default" ? (fam === 6 ? "::/0" : "0.0.0.0/0") : r.dst, r.gateway ?? (fam === 6 ? "::" : "0.0.0.0"), ...(r.metric !== undefined ? [r.metric] : [])].join(",")}`,
      ),
    ];
  };
  const bridge = [
    writtenBy(b.owner),
    "[connection]",
    `id=${id}`,
    `uuid=${stableUuid(id)}`,
    "type=bridge",
    `interface-name=${b.name}`,
    "autoconnect=true",
    "",
    "[ethernet]",
    `cloned-mac-address=${b.mac}`,
    ...(b.mtu !== undefined ? [`mtu=${b.mtu}`] : []),
    "",
    "[bridge]",
    `stp=${b.stp}`,
    ...(
      [
        ["forward-delay", o.forward_delay],
        ["hello-time", o.hello_time],
        ["max-age", o.max_age],
        ["ageing-time", o.ageing_time],
      ] as const
    ).flatMap(([key, cs]) => (cs === undefined ? [] : [`${key}=${cs / 100}`])),
    ...(o.priority !== undefined ? [`priority=${o.priority}`] : []),
    ...(o.vlan_filtering !== undefined ? [`vlan-filtering=${o.vlan_filtering === 1}`] : []),
    "",
    ...ip(4),
    "",
    ...ip(6),
  ];
  const files: PersistFile[] = [{ path: `${NM_DIR}/${id}.nmconnection`, content: bridge.join("\n"), mode: "0600" }];
  for (const { name: p, takenOver } of b.ports) {
    const pid = `${id}-port-${p}`;
    files.push({
      path: `${NM_DIR}/${pid}.nmconnection`,
      mode: "0600",
      content: [
        writtenBy(b.owner),
        "[connection]",
        `id=${pid}`,
        `uuid=${stableUuid(pid)}`,
        "type=ethernet",
        `interface-name=${p}`,
        `master=${b.name}`,
        "slave-type=bridge",
        "autoconnect=true",
        // Ahead of the NIC's other profiles; a taken-over uplink's own profile
        // (often 100 already) must lose to this one: NM's highest.
        `autoconnect-priority=${takenOver ? 999 : 100}`,
      ].join("\n"),
    });
  }
  return files;
}

/** A bridge port NetworkManager holds through one of our profiles. */
export interface NmPort {
  /** The profile's id (connection.id). */
  id: string;
  port: string;
  bridge: string;
}

const keyfileValue = (content: string, key: string): string | undefined => new RegExp(`^${key}=(.*)$`, "m").exec(content)?.[1];

/** Bridge port profiles among `removed` whose bridge keeps a profile in `want`. Pure. */
export function nmPortsLetGo(removed: readonly OwnedFile[], want: PersistSet): NmPort[] {
  const inNmDir = (path: string) => path.startsWith(`${NM_DIR}/`);
  const keptBridges = new Set(
    want.files.filter((f) => inNmDir(f.path) && keyfileValue(f.content ?? "", "type") === "bridge").map((f) => keyfileValue(f.content ?? "", "interface-name")),
  );
  const out: NmPort[] = [];
  for (const f of removed) {
    if (!inNmDir(f.path) || f.content === undefined || keyfileValue(f.content, "slave-type") !== "bridge") continue;
    const id = keyfileValue(f.content, "id");
    const port = keyfileValue(f.content, "interface-name");
    const bridge = keyfileValue(f.content, "master");
    if (id && port && bridge && keptBridges.has(bridge)) out.push({ id, port, bridge });
  }
  return out;
}

/**
 * Waits (up to 15 s) while `port` is still enslaved and NetworkManager still has profile `id`
 * on it: after `nmcli connection reload` dropped the profile, NetworkManager releases the port
 * by itself, asynchronously (withPersistFiles in persist/index.ts).
 */
export function nmReleaseWait(p: NmPort): Script {
  const master = `/sys/class/net/${p.port}/master`;
  return sh`kvmnet_i=0; while [ -e ${master} ] && [ "$kvmnet_i" -lt 75 ] && [ "$(nmcli -g GENERAL.CONNECTION device show ${p.port} 2>/dev/null)" = ${p.id} ]; do sleep 0.2; kvmnet_i=$((kvmnet_i + 1)); done; true`;
}
