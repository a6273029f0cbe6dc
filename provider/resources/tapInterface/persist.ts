/**
 * TapInterface persistence: the files that make the tap again at boot through
 * the host's own network stack (KindSpec.persist). Live changes are the plan's
 * `ip` commands; these files only take effect at boot.
 *
 * - systemd-networkd: `05-kvmnet-tap-<name>.netdev` (Kind=tap, [Tap] User=,
 *   Group=, MultiQueue=, VNetHeader=; systemd.netdev(5)) and
 *   `05-kvmnet-tap-<name>.network` (bridge port, [Link] MTUBytes=, bring-up
 *   without a carrier: a tap has none until a process opens it).
 * - NetworkManager: keyfile `kvmnet-tap-<name>.nmconnection`, type tun, mode 2
 *   (tap), owner/group, multi-queue, vnet-hdr; NetworkManager takes owner and
 *   group as numeric ids only (nm-setting-tun), so names are refused there.
 * - ifupdown: a stanza `/etc/network/interfaces.d/kvmnet-tap-<name>` whose
 *   pre-up runs `ip tuntap add`.
 *
 * The host facts (which stanzas ifupdown brings up, which NetworkManager
 * profiles exist) are the VlanSubinterface's persist section, read once.
 */
import { KvmnetError } from "../../errors";
import { HostSnapshot } from "../../observe";
import type { Backend, PersistFile, PersistSet } from "../../persist";
import { ifupdownReads, profileUuid, VlanPersistFacts, vlanPersistFacts } from "../vlanSubinterface/persist";
import { tuntapAddArgs } from "./render";
import { TapInterfaceInputs } from "./schema";

const NETWORKD_DIR = "/etc/systemd/network";
const NM_DIR = "/etc/NetworkManager/system-connections";
const IFUPDOWN_DIR = "/etc/network/interfaces.d";

/** Our file-name stem: `kvmnet-tap-<name>`. */
export const tapPersistStem = (name: string) => `kvmnet-tap-${name}`;

const header = (name: string) => `# Written by pulumi-kvmnet for tapInterface ${name}. Local edits are reported as drift and overwritten.`;

function unsupported(desired: TapInterfaceInputs, backend: string, why: string, hint: string): KvmnetError {
  const how = desired.persistence === backend ? `persistence "${backend}"` : `persistence "${desired.persistence}" (${backend}, the stack this host runs)`;
  return new KvmnetError({
    kind: "Unsupported",
    message: `tapInterface ${desired.name}: ${how} ${why}`,
    hint: `${hint}; or set persistence: "runtime" (live only, gone after a reboot)`,
  });
}

/** The networkd files of a tap. Pure. */
export function renderTapNetworkd(desired: TapInterfaceInputs): PersistFile[] {
  const { name } = desired;
  const stem = `${NETWORKD_DIR}/05-${tapPersistStem(name)}`;
  const netdev = [
    header(name),
    "[NetDev]",
    `Name=${name}`,
    "Kind=tap",
    "",
    "[Tap]",
    ...(desired.owner !== undefined ? [`User=${desired.owner}`] : []),
    ...(desired.group !== undefined ? [`Group=${desired.group}`] : []),
    `MultiQueue=${desired.multiQueue ? "yes" : "no"}`,
    `VNetHeader=${desired.vnetHdr ? "yes" : "no"}`,
  ];
  const network = [
    header(name),
    "[Match]",
    `Name=${name}`,
    "",
    "[Network]",
    // A tap has no carrier until a process opens it: configure (bridge port, up) regardless, as live.
    "ConfigureWithoutCarrier=yes",
    "LinkLocalAddressing=no",
    ...(desired.bridge !== undefined ? [`Bridge=${desired.bridge}`] : []),
    // In [Link], not the .netdev: networkd makes a tap with the tun ioctls, and a .netdev's
    // MTUBytes= went unapplied (the lab's reboot proof: mtu 1500 after boot).
    ...(desired.mtu !== undefined ? ["", "[Link]", `MTUBytes=${desired.mtu}`] : []),
  ];
  return [
    { path: `${stem}.netdev`, content: netdev.join("\n") + "\n" },
    { path: `${stem}.network`, content: network.join("\n") + "\n" },
  ];
}

/** The NetworkManager keyfile of a tap. Pure. */
export function renderTapNetworkManager(desired: TapInterfaceInputs): PersistFile[] {
  const { name } = desired;
  const id = tapPersistStem(name);
  const lines = [
    header(name),
    "[connection]",
    `id=${id}`,
    `uuid=${profileUuid(id)}`,
    "type=tun",
    `interface-name=${name}`,
    "autoconnect=true",
    ...(desired.bridge !== undefined ? [`master=${desired.bridge}`, "slave-type=bridge"] : []),
    "",
    ...(desired.mtu !== undefined ? ["[ethernet]", `mtu=${desired.mtu}`, ""] : []),
    "[tun]",
    // NM_SETTING_TUN_MODE_TAP
    "mode=2",
    ...(desired.owner !== undefined ? [`owner=${desired.owner}`] : []),
    ...(desired.group !== undefined ? [`group=${desired.group}`] : []),
    `multi-queue=${desired.multiQueue}`,
    `vnet-hdr=${desired.vnetHdr}`,
    "pi=false",
    ...(desired.bridge !== undefined ? [] : ["", "[ipv4]", "method=disabled", "", "[ipv6]", "method=ignore"]),
  ];
  return [{ path: `${NM_DIR}/${id}.nmconnection`, content: lines.join("\n") + "\n", mode: "0600" }];
}

/** The ifupdown stanza of a tap. Pure. A bridge that is a stanza not yet run is brought up first (as VlanSubinterface's). */
export function renderTapIfupdown(desired: TapInterfaceInputs): PersistFile[] {
  const { name } = desired;
  const add = tuntapAddArgs(name, desired).join(" ");
  const lines = [
    header(name),
    `auto ${name}`,
    `iface ${name} inet manual`,
    `\tpre-up [ ! -e /sys/class/net/${name} ] || ip link del dev ${name}`,
    `\tpre-up ip tuntap add ${add}`,
    ...(desired.mtu !== undefined ? [`\tpre-up ip link set dev ${name} mtu ${desired.mtu}`] : []),
    ...(desired.bridge !== undefined ? [`\tpre-up [ -e /sys/class/net/${desired.bridge} ] || ifup ${desired.bridge}`] : []),
    `\tup ip link set dev ${name} up`,
    ...(desired.bridge !== undefined ? [`\tup ip link set dev ${name} master ${desired.bridge}`] : []),
    `\tpost-down [ ! -e /sys/class/net/${name} ] || ip link del dev ${name}`,
  ];
  return [{ path: `${IFUPDOWN_DIR}/${tapPersistStem(name)}`, content: lines.join("\n") + "\n" }];
}

function networkManagerSet(desired: TapInterfaceInputs, facts: VlanPersistFacts): PersistFile[] {
  for (const [field, v] of [
    ["owner", desired.owner],
    ["group", desired.group],
  ] as const) {
    if (v !== undefined && !/^\d+$/.test(v)) {
      throw unsupported(
        desired,
        "networkmanager",
        `takes ${field} as a numeric id only (NetworkManager's tun.${field}), not the name ${v}`,
        `give ${field} as a number (\`id -u\` / \`getent group\` on the host)`,
      );
    }
  }
  if (desired.bridge !== undefined && !facts.nmProfiles.some((p) => p.type === "bridge" && p.interfaceName === desired.bridge)) {
    throw unsupported(
      desired,
      "networkmanager",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: no NetworkManager profile creates ${desired.bridge}`,
      `persist the bridge through NetworkManager too (a kvmnet Bridge with persistence "auto" or "networkmanager")`,
    );
  }
  return renderTapNetworkManager(desired);
}

function ifupdownSet(desired: TapInterfaceInputs, facts: VlanPersistFacts): PersistFile[] {
  const file = tapPersistStem(desired.name);
  if (!ifupdownReads(file, facts.ifupdownSources)) {
    throw unsupported(
      desired,
      "ifupdown",
      `cannot be read at boot: /etc/network/interfaces does not source ${IFUPDOWN_DIR}/* (or a tap name with a dot under source-directory)`,
      `add the line "source ${IFUPDOWN_DIR}/*" to /etc/network/interfaces`,
    );
  }
  if (desired.bridge !== undefined && !facts.ifupdownAuto.includes(desired.bridge)) {
    throw unsupported(
      desired,
      "ifupdown",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: ifupdown does not bring ${desired.bridge} up (\`ifquery --list\`)`,
      `persist the bridge through ifupdown too (a kvmnet Bridge with persistence "auto" or "ifupdown")`,
    );
  }
  return renderTapIfupdown(desired);
}

/** KindSpec.persist: what tap `desired` persists through `backend` on this host. Throws Unsupported when the stack could not bring it back. */
export function persistTap(desired: TapInterfaceInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  const facts = vlanPersistFacts(snap);
  switch (backend) {
    case "networkd":
      return { files: renderTapNetworkd(desired) };
    case "networkmanager":
      return { files: networkManagerSet(desired, facts) };
    case "ifupdown":
      return { files: ifupdownSet(desired, facts) };
  }
}
