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
}

export const STATE_DIR = "/run/kvmnet/state";
/**
 * The host-wide lock. It lives in /run/lock (the FHS place for lock files)
 * rather than our state dir, so removing our last object leaves no directory
 * of ours behind; a lock file cannot be unlinked safely while others may
 * hold it, and it is gone at reboot.
 */
export const LOCK_FILE = "/run/lock/kvmnet.lock";

/** Shell that prints one framed section. `body` writes to stdout. */
function section(name: string, body: Script): Script {
  return joinLines([
    sh`printf '\\n@@kvmnet-begin %s\\n' ${name}`,
    body,
    literal("kvmnet_rc=$?"),
    sh`printf '\\n@@kvmnet-end %s %s\\n' ${name} "$kvmnet_rc"`,
  ]);
}

/**
 * The observation script (sections only; no locking, no changes).
 * SSH_CONNECTION tells which client address the session came from, so
 * `ip route get` names the interface that carries the management path.
 */
export function observeScript(): Script {
  return joinLines([
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    section("uid", literal("id -u")),
    section("links", literal("ip -j -d link show")),
    section("addrs", literal("ip -j addr show")),
    section(
      "mgmt",
      literal(
        'c=${KVMNET_SSH_CONNECTION:-${SSH_CONNECTION:-}}; if [ -n "$c" ]; then ip -j route get "${c%% *}"; else echo "[]"; fi',
      ),
    ),
    section("default", literal("ip -j -4 route show default")),
    section(
      "state",
      literal(
        `for f in ${STATE_DIR}/*/*; do [ -f "$f" ] || continue; printf '@@kvmnet-file %s\\n' "$f"; cat "$f"; printf '\\n'; done; true`,
      ),
    ),
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
  return {
    uid: uidText && /^\d+$/.test(uidText) ? Number(uidText) : -1,
    links: json<IpLink[]>(sections, "links", host) ?? [],
    addrs: json<IpAddr[]>(sections, "addrs", host) ?? [],
    managementInterface: mgmt[0]?.dev,
    defaultRouteInterface: defaults[0]?.dev,
    stateFiles,
  };
}

/** Addresses an administrator configured (global/site scope, not kernel-made link-local). */
export function configuredAddresses(snap: HostSnapshot, ifname: string): string[] {
  const entry = snap.addrs.find((a) => a.ifname === ifname);
  if (!entry) return [];
  return entry.addr_info
    .filter((a) => !(a.family === "inet6" && a.scope === "link") && a.scope !== "host")
    .map((a) => `${a.local}/${a.prefixlen}`);
}

export function findLink(snap: HostSnapshot, ifname: string): IpLink | undefined {
  return snap.links.find((l) => l.ifname === ifname);
}

export function portsOf(snap: HostSnapshot, bridge: string): string[] {
  return snap.links.filter((l) => l.master === bridge).map((l) => l.ifname);
}
