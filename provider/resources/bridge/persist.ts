/**
 * A Bridge's boot-time configuration on the host's own network stack.
 *
 * - networkd: `05-kvmnet-bridge-<name>.netdev` (the bridge and its options),
 *   `.network` (its addresses), and one `05-kvmnet-bridge-<name>-port-<port>.network`
 *   per port (`Bridge=`). The 05 prefix sorts before an administrator's usual
 *   10-*.network, because networkd applies only the first file that matches a link.
 * - NetworkManager: keyfiles `kvmnet-bridge-<name>.nmconnection` and one
 *   `kvmnet-bridge-<name>-port-<port>.nmconnection` per port (mode 0600, which
 *   NM requires). Ports must be Ethernet NICs (NM types profiles by device).
 * - ifupdown: `/etc/network/interfaces.d/kvmnet-bridge-<name>` with `ip`
 *   commands in pre-up/up/post-down (no bridge-utils needed).
 *
 * The MAC is always written (the program's, or the one the bridge was created
 * with), so the bridge comes back with the same address after a reboot.
 *
 * A taken-over uplink (takeOverUplink) brings its addresses and routes into the
 * bridge's configuration, and its port profile outranks the uplink's own
 * (takeover.ts); ifupdown cannot do that without editing the administrator's
 * stanza, and is refused.
 */
import { KvmnetError } from "../../errors";
import { findLink, HostSnapshot } from "../../observe";
import type { Backend, PersistFile, PersistSet } from "../../persist";
import { stableUuid } from "../../persist";
import { sh } from "../../shell";
import { carriesUplink, newBridgeMac, observeBridge } from "./plan";
import { BridgeInputs, desiredOptions } from "./schema";
import { isV6, recordAddresses, recordRoutes, takeoverRecord, TakeoverRecord, takeoverRecordPath } from "./takeover";

export const NETWORKD_DIR = "/etc/systemd/network";
export const NM_DIR = "/etc/NetworkManager/system-connections";
export const IFUPDOWN_DIR = "/etc/network/interfaces.d";

const header = (name: string) => `# Written by pulumi-kvmnet for Bridge ${name}. Edits here are reported as drift and replaced.`;

/** The MAC the bridge has (or will be created with). */
function bridgeMac(b: BridgeInputs, snap: HostSnapshot): string {
  return b.macAddress ?? findLink(snap, b.name)?.address?.toLowerCase() ?? newBridgeMac(b, snap);
}

/** What the bridge's taken-over uplinks bring onto it (empty without takeOverUplink). */
function takeover(b: BridgeInputs, snap: HostSnapshot): TakeoverRecord {
  if (!b.takeOverUplink) return {};
  const obs = observeBridge(snap, b.name);
  return takeoverRecord(b.name, b.ports, snap, { takenOverLive: obs.takenOver, isPort: (p) => obs.ports.includes(p), carries: (p) => carriesUplink(snap, p) });
}

/** The bridge's addresses at boot: its own, then those taken over. */
function bootAddresses(b: BridgeInputs, rec: TakeoverRecord): string[] {
  return [...new Set([...b.addresses, ...recordAddresses(rec)])];
}

/** Whole seconds, for stacks that take no fractions (NetworkManager). */
function wholeSeconds(b: BridgeInputs, field: "forwardDelay" | "helloTime" | "maxAge" | "ageingTime", backend: string): number | undefined {
  const v = b[field];
  if (v === undefined) return undefined;
  if (!Number.isInteger(v)) {
    throw new KvmnetError({
      kind: "InvalidArgument",
      message: `bridge ${b.name}: ${field}: ${backend} takes whole seconds, not ${v}`,
      hint: `round ${field}, or use another persistence backend`,
    });
  }
  return v;
}

function networkd(b: BridgeInputs, snap: HostSnapshot, rec: TakeoverRecord): PersistFile[] {
  const o = desiredOptions(b);
  const sec = (cs: number) => `${(cs / 100).toString()}s`;
  const netdev = [
    header(b.name),
    "[NetDev]",
    `Name=${b.name}`,
    "Kind=bridge",
    `MACAddress=${bridgeMac(b, snap)}`,
    ...(b.mtu !== undefined ? [`MTUBytes=${b.mtu}`] : []),
    "",
    "[Bridge]",
    `STP=${b.stp ? "yes" : "no"}`,
    ...(o.forward_delay !== undefined ? [`ForwardDelaySec=${sec(o.forward_delay)}`] : []),
    ...(o.hello_time !== undefined ? [`HelloTimeSec=${sec(o.hello_time)}`] : []),
    ...(o.max_age !== undefined ? [`MaxAgeSec=${sec(o.max_age)}`] : []),
    ...(o.ageing_time !== undefined ? [`AgeingTimeSec=${sec(o.ageing_time)}`] : []),
    ...(o.priority !== undefined ? [`Priority=${o.priority}`] : []),
    ...(o.vlan_filtering !== undefined ? [`VLANFiltering=${o.vlan_filtering ? "yes" : "no"}`] : []),
  ];
  const network = [
    header(b.name),
    "[Match]",
    `Name=${b.name}`,
    "",
    "[Network]",
    // A bridge has no carrier until a port is up; its addresses are configured anyway.
    "ConfigureWithoutCarrier=yes",
    ...bootAddresses(b, rec).map((a) => `Address=${a}`),
    // Routes a taken-over uplink had (its default route above all).
    ...recordRoutes(rec).flatMap((r) => [
      "",
      "[Route]",
      ...(r.dst !== "default" ? [`Destination=${r.dst}`] : []),
      ...(r.gateway ? [`Gateway=${r.gateway}`] : []),
      ...(r.metric !== undefined ? [`Metric=${r.metric}`] : []),
    ]),
  ];
  const base = `${NETWORKD_DIR}/05-kvmnet-bridge-${b.name}`;
  return [
    { path: `${base}.netdev`, content: netdev.join("\n") },
    { path: `${base}.network`, content: network.join("\n") },
    ...b.ports.map((p) => ({
      path: `${base}-port-${p}.network`,
      content: [header(b.name), "[Match]", `Name=${p}`, "", "[Network]", `Bridge=${b.name}`].join("\n"),
    })),
  ];
}

function networkManager(b: BridgeInputs, snap: HostSnapshot, rec: TakeoverRecord): PersistFile[] {
  const id = `kvmnet-bridge-${b.name}`;
  const ip = (fam: 4 | 6) => {
    const cidrs = bootAddresses(b, rec).filter((a) => (fam === 6) === isV6(a));
    // "ignore" (IPv6): NM leaves the kernel's own link-local addressing alone, as live.
    if (cidrs.length === 0) return [`[ipv${fam}]`, `method=${fam === 4 ? "disabled" : "ignore"}`];
    const routes = recordRoutes(rec).filter((r) => (fam === 6) === (isV6(r.dst) || isV6(r.gateway ?? "")));
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
    header(b.name),
    "[connection]",
    `id=${id}`,
    `uuid=${stableUuid(id)}`,
    "type=bridge",
    `interface-name=${b.name}`,
    "autoconnect=true",
    "",
    "[ethernet]",
    `cloned-mac-address=${bridgeMac(b, snap)}`,
    ...(b.mtu !== undefined ? [`mtu=${b.mtu}`] : []),
    "",
    "[bridge]",
    `stp=${b.stp}`,
    ...(
      [
        ["forward-delay", "forwardDelay"],
        ["hello-time", "helloTime"],
        ["max-age", "maxAge"],
        ["ageing-time", "ageingTime"],
      ] as const
    ).flatMap(([key, field]) => {
      const v = wholeSeconds(b, field, "NetworkManager");
      return v === undefined ? [] : [`${key}=${v}`];
    }),
    ...(b.priority !== undefined ? [`priority=${b.priority}`] : []),
    ...(b.vlanFiltering !== undefined ? [`vlan-filtering=${b.vlanFiltering}`] : []),
    "",
    ...ip(4),
    "",
    ...ip(6),
  ];
  const files: PersistFile[] = [{ path: `${NM_DIR}/${id}.nmconnection`, content: bridge.join("\n"), mode: "0600" }];
  for (const p of b.ports) {
    const link = findLink(snap, p);
    if (link && (link.linkinfo?.info_kind || link.link_type !== "ether")) {
      throw new KvmnetError({
        kind: "Unsupported",
        message: `bridge ${b.name}: port ${p} is a ${link.linkinfo?.info_kind ?? link.link_type} interface; NetworkManager persistence of bridge ports covers Ethernet NICs`,
        hint: 'attach a VLAN to the bridge through VlanSubinterface\'s bridge field, or use persistence: "runtime" for this bridge',
      });
    }
    const pid = `${id}-port-${p}`;
    files.push({
      path: `${NM_DIR}/${pid}.nmconnection`,
      mode: "0600",
      content: [
        header(b.name),
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
        `autoconnect-priority=${rec[p] ? 999 : 100}`,
      ].join("\n"),
    });
  }
  return files;
}

function ifupdown(b: BridgeInputs, snap: HostSnapshot, rec: TakeoverRecord): PersistFile[] {
  const uplinks = Object.keys(rec);
  if (uplinks.length > 0) {
    // /etc/network/interfaces still configures the uplink itself, and kvmnet does not edit the administrator's stanzas.
    throw new KvmnetError({
      kind: "Unsupported",
      message: `bridge ${b.name}: persistence "ifupdown" of a taken-over uplink (${uplinks.join(", ")}) is not supported: the uplink's own stanza in /etc/network/interfaces would configure it again at boot, and kvmnet does not edit that file`,
      hint: `change the stanza to \`iface ${uplinks[0]} inet manual\` and list the addresses in the bridge's addresses yourself, or set persistence: "runtime" (the bridge is then gone after a reboot and ${uplinks[0]} comes back as it was)`,
    });
  }
  const words: (string | number)[] = [];
  for (const [k, v] of Object.entries(desiredOptions(b)) as [string, number | undefined][]) if (v !== undefined) words.push(k, v);
  const lines = [
    header(b.name),
    `auto ${b.name}`,
    `iface ${b.name} inet manual`,
    `\tpre-up ${sh`ip link add name ${b.name} address ${bridgeMac(b, snap)} type bridge ${words}`.text}`,
    ...(b.mtu !== undefined ? [`\tpre-up ${sh`ip link set dev ${b.name} mtu ${b.mtu}`.text}`] : []),
    ...b.ports.map((p) => `\tpre-up ${sh`ip link set dev ${p} master ${b.name}`.text} && ${sh`ip link set dev ${p} up`.text}`),
    ...b.addresses.map((a) => `\tup ${sh`ip addr add ${a} dev ${b.name}`.text}`),
    `\tpost-down ${sh`ip link del dev ${b.name}`.text}`,
  ];
  return [{ path: `${IFUPDOWN_DIR}/kvmnet-bridge-${b.name}`, content: lines.join("\n") }];
}

export function bridgePersist(b: BridgeInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  const rec = takeover(b, snap);
  const files = backend === "networkd" ? networkd(b, snap, rec) : backend === "networkmanager" ? networkManager(b, snap, rec) : ifupdown(b, snap, rec);
  // The record of what moved: the same rendering after the change and after a reboot, and what delete gives back.
  if (Object.keys(rec).length > 0) files.push({ path: takeoverRecordPath(b.name), content: JSON.stringify(rec, null, 2) });
  return { files };
}
