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
 */
import { KvmnetError } from "../../errors";
import { findLink, HostSnapshot } from "../../observe";
import type { Backend, PersistFile, PersistSet } from "../../persist";
import { stableUuid } from "../../persist";
import { sh } from "../../shell";
import { newBridgeMac } from "./plan";
import { BridgeInputs, desiredOptions } from "./schema";

export const NETWORKD_DIR = "/etc/systemd/network";
export const NM_DIR = "/etc/NetworkManager/system-connections";
export const IFUPDOWN_DIR = "/etc/network/interfaces.d";

const header = (name: string) => `# Written by pulumi-kvmnet for Bridge ${name}. Edits here are reported as drift and replaced.`;

/** The MAC the bridge has (or will be created with). */
function bridgeMac(b: BridgeInputs, snap: HostSnapshot): string {
  return b.macAddress ?? findLink(snap, b.name)?.address?.toLowerCase() ?? newBridgeMac(b, snap);
}

function refuseTakeOver(b: BridgeInputs, backend: Backend): void {
  if (b.takeOverUplink) {
    throw new KvmnetError({
      kind: "Unsupported",
      message: `bridge ${b.name}: persistence "${backend}" of a bridge that takes over an uplink (takeOverUplink) is not implemented yet; the uplink's own boot configuration would fight the bridge's`,
      hint: 'set persistence: "runtime" for this bridge (it is then gone after a reboot, and the uplink comes back as it was)',
    });
  }
}

/** Whole seconds, for stacks that take no fractions (NetworkManager). */
function wholeSeconds(b: BridgeInputs, field: "forwardDelay" | "helloTime" | "maxAge" | "ageingTime", backend: string): number | undefined {
  const v = b[field];
  if (v === undefined) return undefined;
  if (!Number.isInteger(v)) {
    throw new KvmnetError({ kind: "InvalidArgument", message: `bridge ${b.name}: ${field}: ${backend} takes whole seconds, not ${v}`, hint: `round ${field}, or use another persistence backend` });
  }
  return v;
}

const cidrsOf = (b: BridgeInputs, fam: 4 | 6) => b.addresses.filter((a) => (fam === 6) === a.includes(":"));

function networkd(b: BridgeInputs, snap: HostSnapshot): PersistFile[] {
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
    ...b.addresses.map((a) => `Address=${a}`),
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

function networkManager(b: BridgeInputs, snap: HostSnapshot): PersistFile[] {
  const id = `kvmnet-bridge-${b.name}`;
  const ip = (fam: 4 | 6) => {
    const cidrs = cidrsOf(b, fam);
    // "ignore" (IPv6): NM leaves the kernel's own link-local addressing alone, as live.
    if (cidrs.length === 0) return [`[ipv${fam}]`, `method=${fam === 4 ? "disabled" : "ignore"}`];
    return [`[ipv${fam}]`, "method=manual", ...cidrs.map((a, i) => `address${i + 1}=${a}`)];
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
    ...([["forward-delay", "forwardDelay"], ["hello-time", "helloTime"], ["max-age", "maxAge"], ["ageing-time", "ageingTime"]] as const).flatMap(([key, field]) => {
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
        hint: "attach a VLAN to the bridge through VlanSubinterface's bridge field, or use persistence: \"runtime\" for this bridge",
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
        // Ahead of any other profile for the same NIC.
        "autoconnect-priority=100",
      ].join("\n"),
    });
  }
  return files;
}

function ifupdown(b: BridgeInputs, snap: HostSnapshot): PersistFile[] {
  const words: (string | number)[] = [];
  for (const [k, v] of Object.entries(desiredOptions(b))) if (v !== undefined) words.push(k, v);
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
  refuseTakeOver(b, backend);
  switch (backend) {
    case "networkd":
      return { files: networkd(b, snap) };
    case "networkmanager":
      return { files: networkManager(b, snap) };
    case "ifupdown":
      return { files: ifupdown(b, snap) };
  }
}
