/**
 * VlanSubinterface persistence: the files that recreate a VLAN at boot
 * through the host's own network stack (KindSpec.persist). Live changes are
 * still the plan's `ip` commands; these files only take effect at boot
 * (NetworkManager re-reads its keyfiles at once, see provider/persist).
 *
 * - systemd-networkd: `05-kvmnet-vlan-<name>.netdev` (the VLAN) and
 *   `05-kvmnet-vlan-<name>.network` (its addresses, bridge, bring-up). A VLAN
 *   netdev is only created when the PARENT's .network names it (`VLAN=`), so
 *   a drop-in `<parent's .network>.d/kvmnet-vlan-<name>.conf` adds that line
 *   to whatever file manages the parent, never overriding the admin's file.
 *   (systemd.network(5): `[Network] VLAN=`; drop-ins: systemd.network(5)
 *   "*.network.d/*.conf".) Prefix 05 sorts ours before an admin's 10-*.
 * - NetworkManager: one keyfile `kvmnet-vlan-<name>.nmconnection` (mode
 *   0600: NM ignores keyfiles others can read), profile id the same.
 * - ifupdown: one stanza `/etc/network/interfaces.d/kvmnet-vlan-<name>`
 *   that makes the VLAN with `ip` (ifupdown's own VLAN support needs the
 *   `vlan` package; nothing here depends on it).
 *
 * Each renderer is a pure function of the inputs and a few stable facts of
 * the host's configuration (which file manages the parent; which stanzas and
 * profiles exist), read by {@link vlanPersistObserveSection}. A configuration
 * the stack would not bring back at boot is refused here (Unsupported, naming
 * `persistence`) instead of being written and silently failing at boot.
 */
import { createHash } from "crypto";
import { KvmnetError } from "../../errors";
import { HostSnapshot, section } from "../../observe";
import type { Backend, PersistFile, PersistSet } from "../../persist";
import { literal } from "../../shell";
import { VlanSubinterfaceInputs } from "./schema";

export const VLAN_PERSIST_SECTION = "vlanPersist";

const NETWORKD_DIR = "/etc/systemd/network";
/** Where systemd-networkd looks for .netdev/.network files (systemd.network(5)), first wins on equal names. */
const NETWORKD_DIRS = [NETWORKD_DIR, "/run/systemd/network", "/usr/local/lib/systemd/network", "/usr/lib/systemd/network"];
const NM_DIR = "/etc/NetworkManager/system-connections";
/**
 * Where NetworkManager reads keyfiles: /etc, its read-only /usr/lib, and /run
 * (in-memory profiles; netplan writes its profiles there at every boot).
 */
const NM_PROFILE_DIRS = [NM_DIR, "/usr/lib/NetworkManager/system-connections", "/run/NetworkManager/system-connections"];
const IFUPDOWN_DIR = "/etc/network/interfaces.d";

/**
 * The host facts the renderers need, in one section of the observe round trip
 * (the script is the same for every VLAN, so it lists everything):
 *   netfile <ifindex> <path>        the .network networkd applied to a link (/run/systemd/netif/links)
 *   netdev <kind> <name> <path>     [NetDev] Kind= and Name= of every .netdev networkd can read
 *   ournetwork <path>               our own 05-kvmnet-*.network files (for links networkd has not loaded yet)
 *   ifsource <rest of line>         `source`/`source-directory` lines of /etc/network/interfaces
 *   ifauto <name>                   `ifquery --list`: the stanzas `ifup -a` brings up, in order
 *   nmversion <version>             `nmcli --version`
 *   nmdev <device> <state>          `nmcli -t -f DEVICE,STATE device` (NetworkManager running only)
 *   nmprofile <type> <ifname|-> <saved|generated> <path>  type= and interface-name= of every
 *                                   keyfile; "generated": NetworkManager's own in-memory profile
 *                                   of a device made outside it ([.nmmeta] nm-generated/external),
 *                                   gone at reboot (seen in /run for VLANs made with ip, NM 1.42)
 */
export const vlanPersistObserveSection = section(
  VLAN_PERSIST_SECTION,
  literal(
    [
      'for f in /run/systemd/netif/links/*; do [ -f "$f" ] || continue; n=$(sed -n "s/^NETWORK_FILE=//p" "$f"); [ -z "$n" ] || printf "netfile %s %s\\n" "${f##*/}" "$n"; done',
      `for f in ${NETWORKD_DIRS.map((d) => `${d}/*.netdev`).join(" ")}; do [ -f "$f" ] || continue;` +
        ` awk -v f="$f" '/^[[:space:]]*\\[/ { s = $0; gsub(/[[:space:]]/, "", s) } s == "[NetDev]" && /^[[:space:]]*(Name|Kind)[[:space:]]*=/ { k = $0; sub(/[[:space:]]*=.*/, "", k); gsub(/[[:space:]]/, "", k); v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]*$/, "", v); a[k] = v } END { printf "netdev %s %s %s\\n", (a["Kind"] == "" ? "-" : a["Kind"]), (a["Name"] == "" ? "-" : a["Name"]), f }' "$f"; done`,
      `for f in ${NETWORKD_DIR}/05-kvmnet-*.network; do [ -f "$f" ] && printf "ournetwork %s\\n" "$f"; done`,
      "if [ -f /etc/network/interfaces ]; then sed -n 's/^[[:space:]]*\\(source\\(-directory\\)\\{0,1\\}[[:space:]].*\\)$/ifsource \\1/p' /etc/network/interfaces; fi",
      "if command -v ifquery >/dev/null 2>&1 && [ -f /etc/network/interfaces ]; then ifquery --list 2>/dev/null | sed 's/^/ifauto /'; fi",
      "if command -v nmcli >/dev/null 2>&1; then printf 'nmversion %s\\n' \"$(nmcli --version 2>/dev/null | sed -n 's/.*version \\([0-9][0-9.]*\\).*/\\1/p')\"; " +
        "if [ -d /run/systemd/system ] && systemctl is-active -q NetworkManager 2>/dev/null; then nmcli -t -f DEVICE,STATE device 2>/dev/null | sed 's/^\\([^:]*\\):/nmdev \\1 /'; fi; fi",
      `for f in ${NM_PROFILE_DIRS.map((d) => `${d}/*`).join(" ")}; do [ -f "$f" ] || continue;` +
        ` awk -v f="$f" '/^[[:space:]]*\\[/ { s = $0; gsub(/[[:space:]]/, "", s) } s == "[connection]" && /^(type|interface-name)=/ { k = $0; sub(/=.*/, "", k); v = $0; sub(/^[^=]*=/, "", v); a[k] = v } s == "[.nmmeta]" && /^(nm-generated|external)=true/ { g = "generated" } END { printf "nmprofile %s %s %s %s\\n", (a["type"] == "" ? "-" : a["type"]), (a["interface-name"] == "" ? "-" : a["interface-name"]), (g == "" ? "saved" : g), f }' "$f"; done`,
      "true",
    ].join("\n"),
  ),
);

/** What the section says about the host's network configuration. */
export interface VlanPersistFacts {
  /** Interface name → the .network file systemd-networkd applied to it. */
  networkFiles: Map<string, string>;
  /** Our own 05-kvmnet-*.network files on disk. */
  ourNetworkFiles: string[];
  netdevs: { kind: string; name: string; path: string }[];
  /** `source …` / `source-directory …` lines of /etc/network/interfaces. */
  ifupdownSources: string[];
  /** Interfaces `ifup -a` brings up. */
  ifupdownAuto: string[];
  nmVersion?: string;
  /** Device → NetworkManager state ("connected", "disconnected", "unmanaged", …). */
  nmDevices: Map<string, string>;
  /** Keyfiles that create something at boot (NetworkManager's generated in-memory profiles left out). */
  nmProfiles: { type: string; interfaceName?: string; path: string }[];
}

export function vlanPersistFacts(snap: HostSnapshot): VlanPersistFacts {
  const facts: VlanPersistFacts = { networkFiles: new Map(), ourNetworkFiles: [], netdevs: [], ifupdownSources: [], ifupdownAuto: [], nmDevices: new Map(), nmProfiles: [] };
  const byIndex = new Map(snap.links.map((l) => [String(l.ifindex), l.ifname]));
  for (const line of (snap.sections.get(VLAN_PERSIST_SECTION)?.text ?? "").split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^netfile (\d+) (.+)$/.exec(line))) {
      const ifname = byIndex.get(m[1]);
      if (ifname) facts.networkFiles.set(ifname, m[2]);
    } else if ((m = /^netdev (\S+) (\S+) (.+)$/.exec(line))) facts.netdevs.push({ kind: m[1], name: m[2], path: m[3] });
    else if ((m = /^ournetwork (.+)$/.exec(line))) facts.ourNetworkFiles.push(m[1]);
    else if ((m = /^ifsource (.+)$/.exec(line))) facts.ifupdownSources.push(m[1].trim());
    else if ((m = /^ifauto (\S+)$/.exec(line))) facts.ifupdownAuto.push(m[1]);
    else if ((m = /^nmversion (\d[\d.]*)$/.exec(line))) facts.nmVersion = m[1];
    else if ((m = /^nmdev (\S+) (.+)$/.exec(line))) facts.nmDevices.set(m[1], m[2]);
    else if ((m = /^nmprofile (\S+) (\S+) saved (.+)$/.exec(line))) facts.nmProfiles.push({ type: m[1], interfaceName: m[2] === "-" ? undefined : m[2], path: m[3] });
  }
  return facts;
}

/** Our file-name stem: `kvmnet-vlan-<name>`. */
export const persistStem = (name: string) => `kvmnet-vlan-${name}`;

const header = (name: string) => `# Written by pulumi-kvmnet for vlanSubinterface ${name}. Local edits are reported as drift and overwritten.`;

const basename = (p: string) => p.replace(/^.*\//, "");

/** Which backend the user's setting resolved to, for messages. */
function how(desired: VlanSubinterfaceInputs, backend: string): string {
  return desired.persistence === backend ? `persistence "${backend}"` : `persistence "${desired.persistence}" (${backend}, the stack this host runs)`;
}

function unsupported(desired: VlanSubinterfaceInputs, backend: string, why: string, hint: string): KvmnetError {
  return new KvmnetError({
    kind: "Unsupported",
    message: `vlanSubinterface ${desired.name}: ${how(desired, backend)} ${why}`,
    hint: `${hint}; or set persistence: "runtime" (live only, gone after a reboot)`,
  });
}

// ---------------------------------------------------------------------------
// systemd-networkd

/**
 * The .network file systemd-networkd will apply to `parent` at boot: the one
 * it applies now (/run/systemd/netif/links), or our own file for a parent
 * that is a kvmnet Bridge or VLAN persisted through networkd (written, but
 * not loaded until boot). networkd applies the first matching file in the
 * lexical order of file names, so of the two the one that sorts first.
 */
export function networkdParentFile(parent: string, facts: VlanPersistFacts): string | undefined {
  const ours = facts.ourNetworkFiles.filter((p) => [`05-kvmnet-bridge-${parent}.network`, `05-kvmnet-vlan-${parent}.network`].includes(basename(p)));
  const candidates = [facts.networkFiles.get(parent), ...ours].filter((p): p is string => p !== undefined);
  return candidates.sort((a, b) => (basename(a) < basename(b) ? -1 : basename(a) > basename(b) ? 1 : 0))[0];
}

/** The networkd files of a VLAN whose parent is managed by `parentNetworkFile`. Pure. */
export function renderNetworkd(desired: VlanSubinterfaceInputs, parentNetworkFile: string): PersistFile[] {
  const { name } = desired;
  const stem = `${NETWORKD_DIR}/05-${persistStem(name)}`;
  const netdev = [
    header(name),
    "[NetDev]",
    `Name=${name}`,
    "Kind=vlan",
    ...(desired.mtu !== undefined ? [`MTUBytes=${desired.mtu}`] : []),
    "",
    "[VLAN]",
    `Id=${desired.vlanId}`,
    // systemd ≥ 248; the kernel's default is 802.1Q.
    ...(desired.protocol === "802.1ad" ? ["Protocol=802.1ad"] : []),
  ];
  const network = [
    header(name),
    "[Match]",
    `Name=${name}`,
    "",
    "[Network]",
    // As live: addresses (and the bridge port) whether or not the parent has a carrier.
    "ConfigureWithoutCarrier=yes",
    ...desired.addresses.map((a) => `Address=${a}`),
    ...(desired.bridge !== undefined ? [`Bridge=${desired.bridge}`] : []),
  ];
  const dropIn = [header(name), "[Network]", `VLAN=${name}`];
  return [
    { path: `${stem}.netdev`, content: netdev.join("\n") + "\n" },
    { path: `${stem}.network`, content: network.join("\n") + "\n" },
    { path: `${NETWORKD_DIR}/${basename(parentNetworkFile)}.d/${persistStem(name)}.conf`, content: dropIn.join("\n") + "\n" },
  ];
}

function networkdSet(desired: VlanSubinterfaceInputs, facts: VlanPersistFacts): PersistFile[] {
  const parentFile = networkdParentFile(desired.parent, facts);
  if (!parentFile) {
    throw unsupported(
      desired,
      "networkd",
      `needs systemd-networkd to manage the parent ${desired.parent}: networkd creates a VLAN at boot only from the parent's .network file (VLAN=${desired.name}), and no .network file manages ${desired.parent}`,
      `write a .network file that matches ${desired.parent} (e.g. ${NETWORKD_DIR}/10-${desired.parent}.network with "[Match]" Name=${desired.parent}) and run \`networkctl reload\`; this VLAN then adds itself to it with a drop-in`,
    );
  }
  if (desired.bridge !== undefined && !facts.netdevs.some((n) => n.name === desired.bridge && n.kind === "bridge")) {
    throw unsupported(
      desired,
      "networkd",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: no .netdev file defines ${desired.bridge}, and networkd ignores Bridge= for a bridge it does not create`,
      `persist the bridge through networkd too (a kvmnet Bridge with persistence "auto" or "networkd"), or define it in a .netdev (Kind=bridge) under ${NETWORKD_DIR}`,
    );
  }
  return renderNetworkd(desired, parentFile);
}

// ---------------------------------------------------------------------------
// NetworkManager

/** NetworkManager learned `vlan.protocol` (802.1ad) in 1.42. */
const NM_VLAN_PROTOCOL_SINCE = [1, 42];

function versionAtLeast(v: string, min: number[]): boolean {
  const parts = v.split(".").map(Number);
  for (let i = 0; i < min.length; i++) {
    const p = parts[i] ?? 0;
    if (p !== min[i]) return p > min[i];
  }
  return true;
}

/** A stable profile UUID (RFC 4122 version 5 layout) from the profile id, so the file is a function of the inputs. */
export function profileUuid(id: string): string {
  const h = createHash("sha1").update(`pulumi-kvmnet/${id}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** The NetworkManager keyfile of a VLAN. Pure. */
export function renderNetworkManager(desired: VlanSubinterfaceInputs): PersistFile[] {
  const { name } = desired;
  const id = persistStem(name);
  const v4 = desired.addresses.filter((a) => !a.includes(":"));
  const v6 = desired.addresses.filter((a) => a.includes(":"));
  const lines = [
    header(name),
    "[connection]",
    `id=${id}`,
    `uuid=${profileUuid(id)}`,
    "type=vlan",
    `interface-name=${name}`,
    "autoconnect=true",
    // A bridge port has no IP configuration of its own (NM drops it from ports).
    ...(desired.bridge !== undefined ? [`master=${desired.bridge}`, "slave-type=bridge"] : []),
    "",
    ...(desired.mtu !== undefined ? ["[ethernet]", `mtu=${desired.mtu}`, ""] : []),
    "[vlan]",
    `id=${desired.vlanId}`,
    `parent=${desired.parent}`,
    ...(desired.protocol === "802.1ad" ? ["protocol=802.1ad"] : []),
    ...(desired.bridge !== undefined
      ? []
      : [
          "",
          "[ipv4]",
          ...(v4.length ? ["method=manual", ...v4.map((a, i) => `address${i + 1}=${a}`)] : ["method=disabled"]),
          "",
          "[ipv6]",
          // "ignore" leaves IPv6 to the kernel, as a VLAN made with `ip` has it (its own link-local, RAs).
          ...(v6.length ? ["method=manual", "addr-gen-mode=eui64", ...v6.map((a, i) => `address${i + 1}=${a}`)] : ["method=ignore"]),
        ]),
  ];
  return [{ path: `${NM_DIR}/${id}.nmconnection`, content: lines.join("\n") + "\n", mode: "0600" }];
}

function networkManagerSet(desired: VlanSubinterfaceInputs, facts: VlanPersistFacts): PersistFile[] {
  if (desired.protocol === "802.1ad" && (facts.nmVersion === undefined || !versionAtLeast(facts.nmVersion, NM_VLAN_PROTOCOL_SINCE))) {
    throw unsupported(
      desired,
      "networkmanager",
      `cannot bring back an 802.1ad VLAN: NetworkManager ${facts.nmVersion ?? "(version unknown)"} has no vlan.protocol (added in ${NM_VLAN_PROTOCOL_SINCE.join(".")}) and would make it 802.1Q`,
      "upgrade NetworkManager, or use protocol 802.1Q",
    );
  }
  if (facts.nmDevices.get(desired.parent) === "unmanaged") {
    throw unsupported(
      desired,
      "networkmanager",
      `needs NetworkManager to manage the parent ${desired.parent}, which it leaves unmanaged (\`nmcli device\`): NetworkManager activates no VLAN on an unmanaged parent`,
      `let NetworkManager manage ${desired.parent} (for a NIC listed in /etc/network/interfaces: remove it there, or set [ifupdown] managed=true)`,
    );
  }
  if (desired.bridge !== undefined && !facts.nmProfiles.some((p) => p.type === "bridge" && p.interfaceName === desired.bridge)) {
    throw unsupported(
      desired,
      "networkmanager",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: no NetworkManager profile creates ${desired.bridge}, so the port would wait for it forever`,
      `persist the bridge through NetworkManager too (a kvmnet Bridge with persistence "auto" or "networkmanager"), or add a bridge profile for it (\`nmcli connection add type bridge ifname ${desired.bridge}\`)`,
    );
  }
  return renderNetworkManager(desired);
}

// ---------------------------------------------------------------------------
// ifupdown

/**
 * The ifupdown stanza of a VLAN. Pure.
 *
 * `ifup -a` takes stanzas in file order and interfaces.d comes in by a glob,
 * so the parent (or the bridge) may be a stanza that has not run yet (a
 * kvmnet Bridge's `kvmnet-bridge-*` sorts before us; an admin's stanza after
 * the `source` line does not): the pre-up brings such an interface up first
 * (nested `ifup` is what bridge-utils' own hooks do). The parent is brought
 * up as create does live, else the VLAN carries nothing.
 *
 * ifupdown 0.8 has VLAN support of its own for `<raw device>.<id>` names: before
 * any pre-up it runs `ip link add link <raw> name <name> type vlan id <id>`
 * from the name alone (always 802.1Q; the id and raw device read from the
 * name, which need not be this VLAN's). So an interface of this name is made
 * anew from the inputs rather than trusted (seen on Debian 12, ifupdown 0.8.41).
 */
export function renderIfupdown(desired: VlanSubinterfaceInputs): PersistFile[] {
  const { name, parent } = desired;
  const lines = [
    header(name),
    `auto ${name}`,
    `iface ${name} inet manual`,
    `\tpre-up [ -e /sys/class/net/${parent} ] || ifup ${parent}`,
    `\tpre-up ip link set dev ${parent} up`,
    `\tpre-up [ ! -e /sys/class/net/${name} ] || ip link del dev ${name}`,
    `\tpre-up ip link add link ${parent} name ${name} type vlan id ${desired.vlanId} protocol ${desired.protocol}`,
    ...(desired.mtu !== undefined ? [`\tpre-up ip link set dev ${name} mtu ${desired.mtu}`] : []),
    ...(desired.bridge !== undefined ? [`\tpre-up [ -e /sys/class/net/${desired.bridge} ] || ifup ${desired.bridge}`] : []),
    `\tup ip link set dev ${name} up`,
    ...desired.addresses.map((a) => `\tup ip addr add ${a} dev ${name}`),
    ...(desired.bridge !== undefined ? [`\tup ip link set dev ${name} master ${desired.bridge}`] : []),
    `\tpost-down [ ! -e /sys/class/net/${name} ] || ip link del dev ${name}`,
  ];
  return [{ path: `${IFUPDOWN_DIR}/${persistStem(name)}`, content: lines.join("\n") + "\n" }];
}

/** Whether `source`/`source-directory` lines make ifupdown read interfaces.d/<file>. */
export function ifupdownReads(file: string, sources: readonly string[]): boolean {
  return sources.some((line) => {
    const [verb, ...rest] = line.split(/\s+/);
    const arg = rest.join(" ");
    if (verb === "source") return /^(\/etc\/network\/)?interfaces\.d\/\*$/.test(arg);
    // source-directory takes run-parts names only: letters, digits, _ and -.
    return verb === "source-directory" && /^(\/etc\/network\/)?interfaces\.d\/?$/.test(arg) && /^[A-Za-z0-9_-]+$/.test(file);
  });
}

function ifupdownSet(desired: VlanSubinterfaceInputs, facts: VlanPersistFacts): PersistFile[] {
  const file = persistStem(desired.name);
  if (!ifupdownReads(file, facts.ifupdownSources)) {
    const dirOnly = facts.ifupdownSources.some((l) => /^source-directory\s/.test(l));
    throw unsupported(
      desired,
      "ifupdown",
      dirOnly
        ? `cannot be read at boot: /etc/network/interfaces takes ${IFUPDOWN_DIR} with source-directory, which skips file names with a dot (${file})`
        : `cannot be read at boot: /etc/network/interfaces does not source ${IFUPDOWN_DIR}/*`,
      dirOnly ? `give the VLAN a name without a dot, or change that line to "source ${IFUPDOWN_DIR}/*"` : `add the line "source ${IFUPDOWN_DIR}/*" to /etc/network/interfaces`,
    );
  }
  if (desired.bridge !== undefined && !facts.ifupdownAuto.includes(desired.bridge)) {
    throw unsupported(
      desired,
      "ifupdown",
      `cannot put ${desired.name} into bridge ${desired.bridge} at boot: ifupdown does not bring ${desired.bridge} up (\`ifquery --list\`), so it will not exist`,
      `persist the bridge through ifupdown too (a kvmnet Bridge with persistence "auto" or "ifupdown"), or add an "auto ${desired.bridge}" stanza that creates it`,
    );
  }
  return renderIfupdown(desired);
}

// ---------------------------------------------------------------------------

/** KindSpec.persist: what VLAN `desired` persists through `backend` on this host. Throws Unsupported when the stack could not bring it back. */
export function persistVlan(desired: VlanSubinterfaceInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  const facts = vlanPersistFacts(snap);
  switch (backend) {
    case "networkd":
      return { files: networkdSet(desired, facts) };
    case "networkmanager":
      return { files: networkManagerSet(desired, facts) };
    case "ifupdown":
      return { files: ifupdownSet(desired, facts) };
  }
}
