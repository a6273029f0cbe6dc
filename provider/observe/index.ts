/**
 * One round trip → a typed snapshot of the host.
 *
 * The observe script prints framed sections on stdout:
 *   @@kvmnet-begin <name> [<arg>]
 *   …command output (JSON where the tool offers it: `ip -j`, `nft -j`)…
 *   @@kvmnet-end <name> <exit status>
 * The same sections end every apply script, so a mutation returns the new
 * state without another round trip.
 */
import { joinLines, literal, Script, sh } from "../shell";
import { KvmnetError } from "../errors";

export interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate: string;
  address?: string;
  master?: string;
  link_type?: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
  };
}

export interface IpAddrInfo {
  family: "inet" | "inet6";
  local: string;
  prefixlen: number;
  scope: string;
  dynamic?: boolean;
  tentative?: boolean;
}

export interface IpAddr {
  ifindex: number;
  ifname: string;
  addr_info: IpAddrInfo[];
}

export interface HostSnapshot {
  /** uid the scripts run as (0 unless sudo is missing). */
  uid: number;
  links: IpLink[];
  addrs: IpAddr[];
  /** Interface carrying the SSH session's return route, when known. */
  managementInterface?: string;
  /** Interface of the default route (IPv4, main table), when there is one. */
  defaultRouteInterface?: string;
  /** Our own state files under /run/kvmnet/state: path → content. */
  stateFiles: Record<string, string>;
  /** `nft -j list ruleset` (its `nftables` array), or undefined when nft is not installed. */
  nftables?: Record<string, unknown>[];
  /** Selected sysctls under /proc/sys/net ("ipv4/ip_forward" → "1"); "" when absent. */
  sysctls: Record<string, string>;
  /** systemd is the running init. */
  systemd: boolean;
  /** Pid files under /run/kvmnet: path → pid and the running process's name (undefined when not running). */
  pidFiles: Record<string, { pid?: number; comm?: string }>;
  /** Local addresses with a UDP or TCP socket on port 53 (e.g. "0.0.0.0:53", "127.0.0.53%lo:53"). */
  dns53Listeners: string[];
  /** Every framed section by name, including a kind's own extra sections (KindSpec.observeExtra). */
  sections: Map<string, Section>;
}

export const STATE_DIR = "/run/kvmnet/state";
/**
 * The host-wide lock. It lives in /run/lock (the FHS place for lock files)
 * rather than our state dir, so removing our last object leaves no directory
 * of ours behind; a lock file cannot be unlinked safely while others may
 * hold it, and it is gone at reboot.
 */
export const LOCK_FILE = "/run/lock/kvmnet.lock";

/** Where each object lists the files it persists through: /etc/kvmnet/owned/<kind>/<name>. */
export const OWNED_DIR = "/etc/kvmnet/owned";

/** Network stacks running, and the files our objects persist through (read by provider/persist). */
function persistSection(): Script {
  return section(
    "persist",
    literal(
      [
        // One systemctl for the three units (it prints one state per unit, in order): each call costs a fork and a D-Bus round trip.
        "if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then",
        "  set -- $(systemctl is-active NetworkManager systemd-networkd networking 2>/dev/null)",
        '  for u in NetworkManager systemd-networkd networking; do printf "active %s %s\\n" "$u" "${1:-}"; [ $# -eq 0 ] || shift; done',
        "fi",
        "[ -e /run/network/ifstate ] && echo 'ifstate yes'",
        "command -v ifup >/dev/null 2>&1 && echo 'ifup yes'",
        // Which of our files systemd-networkd configures a link from right now (it read them at boot).
        'for f in /run/systemd/netif/links/*; do [ -f "$f" ] || continue; while IFS= read -r l; do case "$l" in NETWORK_FILE=*/05-kvmnet-*) printf "@@applied %s\\n" "${l#NETWORK_FILE=}" ;; esac; done <"$f"; done',
        `for m in ${OWNED_DIR}/*/*; do [ -f "$m" ] || continue; printf '@@manifest %s\\n' "$m"; ` +
          'while IFS= read -r p; do [ -n "$p" ] || continue; ' +
          'if [ -L "$p" ]; then printf "@@link %s %s\\n" "$p" "$(readlink "$p")"; ' +
          'elif [ -f "$p" ]; then printf "@@file %s %s\\n" "$p" "$(base64 -w0 <"$p")"; ' +
          'else printf "@@missing %s\\n" "$p"; fi; done <"$m"; done; true',
      ].join("\n"),
    ),
  );
}

/** Shell that prints one framed section. `body` writes to stdout. */
export function section(name: string, body: Script): Script {
  return joinLines([sh`printf '\\n@@kvmnet-begin %s\\n' ${name}`, body, literal("kvmnet_rc=$?"), sh`printf '\\n@@kvmnet-end %s %s\\n' ${name} "$kvmnet_rc"`]);
}

/**
 * The observation script (sections only; no locking, no changes).
 * SSH_CONNECTION tells which client address the session came from, so
 * `ip route get` names the interface that carries the management path.
 */
export function observeScript(extra: readonly Script[] = []): Script {
  return joinLines([
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    section("uid", literal("id -u")),
    section("links", literal("ip -j -d link show")),
    section("addrs", literal("ip -j addr show")),
    section("mgmt", literal('c=${KVMNET_SSH_CONNECTION:-${SSH_CONNECTION:-}}; if [ -n "$c" ]; then ip -j route get "${c%% *}"; else echo "[]"; fi')),
    section("default", literal("ip -j -4 route show default")),
    section("nft", literal("if command -v nft >/dev/null 2>&1; then nft -j list ruleset; else (exit 127); fi")),
    section(
      "sysctl",
      // `read` is a shell builtin: no process per value.
      literal(
        "for k in ipv4/ip_forward ipv6/conf/all/forwarding bridge/bridge-nf-call-iptables; do " +
          'v=; [ -r "/proc/sys/net/$k" ] && read -r v <"/proc/sys/net/$k"; printf \'%s=%s\\n\' "$k" "$v"; done',
      ),
    ),
    section("systemd", literal("if [ -d /run/systemd/system ]; then echo yes; else echo no; fi")),
    // Daemons we started record pid files under /run/kvmnet/<kind>/<name>/*.pid.
    section(
      "pids",
      literal(
        // Builtins only (`read`, parameter expansion): no process per pid file.
        'for f in /run/kvmnet/*/*/*.pid; do [ -f "$f" ] || continue; p=; read -r p <"$f" 2>/dev/null; ' +
          'c=; st=; case "$p" in ""|*[!0-9]*) ;; *) [ -r "/proc/$p/comm" ] && read -r c <"/proc/$p/comm" 2>/dev/null; [ -r "/proc/$p/stat" ] && read -r st <"/proc/$p/stat" 2>/dev/null ;; esac; ' +
          // A zombie (dead, not yet reaped) is not running: the state field after "(comm) " in /proc/<pid>/stat is Z.
          'st=${st##*) }; case "${st%% *}" in Z|"") c=- ;; esac; ' +
          'printf \'%s %s %s\\n\' "$f" "${p:--}" "${c:--}"; done; true',
      ),
    ),
    // ss has no JSON output; only the local address column of UDP and TCP :53 sockets is read.
    section("dns53", literal("if command -v ss >/dev/null 2>&1; then ss -H -lntu 'sport = :53' | while read -r _ _ _ _ l _; do echo \"$l\"; done; fi; true")),
    section("state", literal(`for f in ${STATE_DIR}/*/*; do [ -f "$f" ] || continue; printf '@@kvmnet-file %s\\n' "$f"; cat "$f"; printf '\\n'; done; true`)),
    persistSection(),
    ...extra,
  ]);
}

export interface Section {
  rc: number;
  text: string;
}

/** Split framed output into sections by name. */
export function parseSections(stdout: string): Map<string, Section> {
  const out = new Map<string, Section>();
  const lines = stdout.split("\n");
  let cur: { name: string; lines: string[] } | undefined;
  for (const line of lines) {
    const begin = /^@@kvmnet-begin (\S+)$/.exec(line);
    if (begin) {
      cur = { name: begin[1], lines: [] };
      continue;
    }
    const end = /^@@kvmnet-end (\S+) (\d+)$/.exec(line);
    if (end && cur && end[1] === cur.name) {
      out.set(cur.name, { rc: Number(end[2]), text: cur.lines.join("\n") });
      cur = undefined;
      continue;
    }
    if (cur) cur.lines.push(line);
  }
  return out;
}

function json<T>(sections: Map<string, Section>, name: string, host: string): T {
  const s = sections.get(name);
  if (!s) throw new KvmnetError({ kind: "Bug", message: `observe output lacks section ${name}`, host });
  if (s.rc !== 0) {
    const missing = s.rc === 127;
    throw new KvmnetError({
      kind: missing ? "Unsupported" : "Failed",
      message: `reading ${name} from the host failed (exit ${s.rc})`,
      host,
      stderr: s.text,
      hint: missing ? "the host needs iproute2 (`ip`) with JSON output (-j)" : undefined,
    });
  }
  try {
    return JSON.parse(s.text.trim() || "null") as T;
  } catch (e) {
    throw new KvmnetError({ kind: "Failed", message: `cannot parse ${name} JSON from the host`, host, stderr: s.text.slice(0, 500), cause: e });
  }
}

/** Parse framed observe output into a snapshot. */
export function parseSnapshot(stdout: string, host: string): HostSnapshot {
  const sections = parseSections(stdout);
  const uidText = sections.get("uid")?.text.trim();
  const mgmt = json<{ dev?: string }[] | null>(sections, "mgmt", host) ?? [];
  const defaults = json<{ dev?: string }[] | null>(sections, "default", host) ?? [];
  const stateFiles: Record<string, string> = {};
  const state = sections.get("state");
  if (state) {
    let path: string | undefined;
    let buf: string[] = [];
    const flush = () => {
      if (path) stateFiles[path] = buf.join("\n").replace(/\n$/, "");
    };
    for (const line of state.text.split("\n")) {
      const m = /^@@kvmnet-file (.+)$/.exec(line);
      if (m) {
        flush();
        path = m[1];
        buf = [];
      } else if (path) buf.push(line);
    }
    flush();
  }
  const nftSection = sections.get("nft");
  let nftables: Record<string, unknown>[] | undefined;
  if (nftSection && nftSection.rc === 0) {
    try {
      nftables = (JSON.parse(nftSection.text.trim() || '{"nftables":[]}') as { nftables?: Record<string, unknown>[] }).nftables ?? [];
    } catch (e) {
      throw new KvmnetError({ kind: "Failed", message: "cannot parse nft -j output from the host", host, stderr: nftSection.text.slice(0, 500), cause: e });
    }
  }
  const sysctls: Record<string, string> = {};
  for (const line of (sections.get("sysctl")?.text ?? "").split("\n")) {
    const m = /^([\w/.-]+)=(.*)$/.exec(line.trim());
    if (m) sysctls[m[1]] = m[2];
  }
  const pidFiles: Record<string, { pid?: number; comm?: string }> = {};
  for (const line of (sections.get("pids")?.text ?? "").split("\n")) {
    const [file, pid, comm] = line.trim().split(" ");
    if (!file || !pid) continue;
    pidFiles[file] = { pid: /^\d+$/.test(pid) ? Number(pid) : undefined, comm: comm && comm !== "-" ? comm : undefined };
  }
  return {
    nftables,
    sysctls,
    systemd: sections.get("systemd")?.text.trim() === "yes",
    pidFiles,
    dns53Listeners: (sections.get("dns53")?.text ?? "")
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean),
    uid: uidText && /^\d+$/.test(uidText) ? Number(uidText) : -1,
    links: json<IpLink[]>(sections, "links", host) ?? [],
    addrs: json<IpAddr[]>(sections, "addrs", host) ?? [],
    managementInterface: mgmt[0]?.dev,
    defaultRouteInterface: defaults[0]?.dev,
    stateFiles,
    sections,
  };
}

/** Addresses an administrator configured (global/site scope, not kernel-made link-local). */
export function configuredAddresses(snap: HostSnapshot, ifname: string): string[] {
  const entry = snap.addrs.find((a) => a.ifname === ifname);
  if (!entry) return [];
  return entry.addr_info.filter((a) => !(a.family === "inet6" && a.scope === "link") && a.scope !== "host").map((a) => `${a.local}/${a.prefixlen}`);
}

/** What every kind that owns a link reports of it (VlanSubinterface, TapInterface). */
export interface LinkBasics {
  ifindex?: number;
  mtu?: number;
  macAddress?: string;
  operState?: string;
  adminUp: boolean;
  /** The bridge (or other master) the link is a port of. */
  master?: string;
}

export function linkBasics(link: IpLink): LinkBasics {
  return { ifindex: link.ifindex, mtu: link.mtu, macAddress: link.address, operState: link.operstate, adminUp: link.flags.includes("UP"), master: link.master };
}
export function findLink(snap: HostSnapshot, ifname: string): IpLink | undefined {
  return snap.links.find((l) => l.ifname === ifname);
}

/**
 * The bridge `who` is about to join: NotFound (with `hint`: how to make it
 * exist first) when there is no such interface, Conflict when it is no bridge.
 */
export function bridgeToJoin(snap: HostSnapshot, who: string, bridge: string, hint: string): IpLink {
  const b = findLink(snap, bridge);
  if (!b) throw new KvmnetError({ kind: "NotFound", message: `${who}: bridge ${bridge} does not exist on the host`, hint });
  if (b.linkinfo?.info_kind !== "bridge") {
    throw new KvmnetError({ kind: "Conflict", message: `${who}: ${bridge} is not a bridge (it is ${b.linkinfo?.info_kind ?? b.link_type ?? "unknown"})` });
  }
  return b;
}

export function portsOf(snap: HostSnapshot, bridge: string): string[] {
  return snap.links.filter((l) => l.master === bridge).map((l) => l.ifname);
}
