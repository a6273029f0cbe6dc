/**
 * What the network-stack backends need to know of the host's own
 * configuration, read in one section of the observe round trip: which
 * .network networkd applied to each link and which .netdev files exist,
 * which files ifupdown reads and which stanzas it brings up, NetworkManager's
 * version, devices and profiles. Kinds that persist links through the host's
 * stack (VlanSubinterface, TapInterface) add the section to their observe
 * script and refuse, from these facts, what the stack would not bring back.
 * The section keeps its first name, "vlanPersist", on the wire.
 */
import { HostSnapshot, section } from "../observe";
import { literal, shq } from "../shell";
import { NETWORKD_DIR, NETWORKD_DIRS } from "./networkd";
import { NM_PROFILE_DIRS } from "./networkManager";

export const STACK_FACTS_SECTION = "vlanPersist";

/** Where the section looks; the host's real paths unless a test points it at a tree of its own. */
export interface StackFactsPaths {
  /** networkd's per-link state files (NETWORK_FILE=). */
  netifLinks: string;
  /** Directories networkd reads .netdev files from, first wins. */
  networkdDirs: readonly string[];
  /** Where our own .network files go. */
  networkdDir: string;
  interfaces: string;
  nmProfileDirs: readonly string[];
}

export const HOST_STACK_PATHS: StackFactsPaths = {
  netifLinks: "/run/systemd/netif/links",
  networkdDirs: NETWORKD_DIRS,
  networkdDir: NETWORKD_DIR,
  interfaces: "/etc/network/interfaces",
  nmProfileDirs: NM_PROFILE_DIRS,
};

/**
 * INI reader for a .netdev: the last `Name=` and `Kind=` of its [NetDev]
 * section (blanks around keys, `=` and values ignored, as networkd reads
 * them), printed as `netdev <kind|-> <name|-> <path>`. Variable f is the path.
 */
export const NETDEV_AWK =
  '/^[[:space:]]*\\[/ { s = $0; gsub(/[[:space:]]/, "", s) } ' +
  's == "[NetDev]" && /^[[:space:]]*(Name|Kind)[[:space:]]*=/ { k = $0; sub(/[[:space:]]*=.*/, "", k); gsub(/[[:space:]]/, "", k); v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]*$/, "", v); a[k] = v } ' +
  'END { printf "netdev %s %s %s\\n", (a["Kind"] == "" ? "-" : a["Kind"]), (a["Name"] == "" ? "-" : a["Name"]), f }';

/**
 * INI reader for a NetworkManager keyfile: `type=` and `interface-name=` of
 * [connection], and whether [.nmmeta] marks it NetworkManager's own
 * in-memory profile, printed as `nmprofile <type|-> <ifname|-> <saved|generated> <path>`.
 */
export const NM_PROFILE_AWK =
  '/^[[:space:]]*\\[/ { s = $0; gsub(/[[:space:]]/, "", s) } ' +
  's == "[connection]" && /^(type|interface-name)=/ { k = $0; sub(/=.*/, "", k); v = $0; sub(/^[^=]*=/, "", v); a[k] = v } ' +
  's == "[.nmmeta]" && /^(nm-generated|external)=true/ { g = "generated" } ' +
  'END { printf "nmprofile %s %s %s %s\\n", (a["type"] == "" ? "-" : a["type"]), (a["interface-name"] == "" ? "-" : a["interface-name"]), (g == "" ? "saved" : g), f }';

/** The section's script over `p` (see {@link stackFactsObserveSection} for its lines). */
export function stackFactsScript(p: StackFactsPaths = HOST_STACK_PATHS): string {
  const q = shq;
  return [
    `for f in ${q(p.netifLinks)}/*; do [ -f "$f" ] || continue; n=$(sed -n "s/^NETWORK_FILE=//p" "$f"); [ -z "$n" ] || printf "netfile %s %s\\n" "\${f##*/}" "$n"; done`,
    `for f in ${p.networkdDirs.map((d) => `${q(d)}/*.netdev`).join(" ")}; do [ -f "$f" ] || continue; awk -v f="$f" ${q(NETDEV_AWK)} "$f"; done`,
    `for f in ${q(p.networkdDir)}/05-kvmnet-*.network; do [ -f "$f" ] && printf "ournetwork %s\\n" "$f"; done`,
    `if [ -f ${q(p.interfaces)} ]; then sed -n 's/^[[:space:]]*\\(source\\(-directory\\)\\{0,1\\}[[:space:]].*\\)$/ifsource \\1/p' ${q(p.interfaces)}; fi`,
    `if command -v ifquery >/dev/null 2>&1 && [ -f ${q(p.interfaces)} ]; then ifquery --list 2>/dev/null | sed 's/^/ifauto /'; fi`,
    "if command -v nmcli >/dev/null 2>&1; then printf 'nmversion %s\\n' \"$(nmcli --version 2>/dev/null | sed -n 's/.*version \\([0-9][0-9.]*\\).*/\\1/p')\"; " +
      "if [ -d /run/systemd/system ] && systemctl is-active -q NetworkManager 2>/dev/null; then nmcli -t -f DEVICE,STATE device 2>/dev/null | sed 's/^\\([^:]*\\):/nmdev \\1 /'; fi; fi",
    `for f in ${p.nmProfileDirs.map((d) => `${q(d)}/*`).join(" ")}; do [ -f "$f" ] || continue; awk -v f="$f" ${q(NM_PROFILE_AWK)} "$f"; done`,
    "true",
  ].join("\n");
}

/**
 * The host facts the renderers need, in one section of the observe round trip
 * (the script is the same for every object, so it lists everything):
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
export const stackFactsObserveSection = section(STACK_FACTS_SECTION, literal(stackFactsScript()));

/** What the section says about the host's network configuration. */
export interface StackFacts {
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

export function stackFacts(snap: HostSnapshot): StackFacts {
  const facts: StackFacts = { networkFiles: new Map(), ourNetworkFiles: [], netdevs: [], ifupdownSources: [], ifupdownAuto: [], nmDevices: new Map(), nmProfiles: [] };
  const byIndex = new Map(snap.links.map((l) => [String(l.ifindex), l.ifname]));
  for (const line of (snap.sections.get(STACK_FACTS_SECTION)?.text ?? "").split("\n")) {
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
