/**
 * The files an object persists through, as every backend writes them: what a
 * kind (through its backend) wants on the host, what the host has of an
 * object's manifest (`/etc/kvmnet/owned/<kind>/<name>`, one path per line),
 * and the sh that writes, removes and restores one file. Backends
 * (systemd.ts, networkd.ts, networkManager.ts, ifupdown.ts) and the core
 * (index.ts) build on this; it imports neither.
 */
import { HostSnapshot, OWNED_DIR } from "../observe";
import { joinLines, Script, sh, writeFile } from "../shell";

export { OWNED_DIR };

/** Where our own boot scripts and persisted copies live (flat: the core removes files, not directories, and prunes /etc/kvmnet once the last manifest is gone). */
export const ETC_DIR = "/etc/kvmnet";

/** What makes a stack re-read the files under `under` without touching live state. */
export interface StackReload {
  under: string;
  run: Script;
}

/** The first line of every file we write: who wrote it, and that edits are drift. */
export const writtenBy = (what: string) => `# Written by pulumi-kvmnet for ${what}. Edits here are reported as drift and replaced.`;

export function manifestPath(kind: string, name: string): string {
  return `${OWNED_DIR}/${kind}/${name}`;
}

/** One file (or symlink) that an object persists through. */
export interface PersistFile {
  path: string;
  /** Full content; a trailing newline is added when missing. Ignored for links. */
  content?: string;
  /** Octal mode; NetworkManager refuses keyfiles readable by others (use "0600"). */
  mode?: string;
  /** Make `path` a symlink to this target instead (what `systemctl enable` writes). */
  link?: string;
  /**
   * Earlier renderings of the same file that mean the same thing (a compatibility
   * read): a host written by an older version has one of them, which reads back as
   * in sync, not as drift, and is not rewritten.
   */
  accepts?: string[];
}

/** What a kind persists on one backend. */
export interface PersistSet {
  files: PersistFile[];
}

/** Which network stacks the host runs, as observed. */
export interface PersistFacts {
  systemd: boolean;
  networkManager: boolean;
  networkd: boolean;
  ifupdown: boolean;
}

/** What the host has of one manifest: path → content (undefined: missing), or link target. */
export interface OwnedFile {
  path: string;
  state: "file" | "link" | "missing";
  content?: string;
  link?: string;
}

interface ParsedPersist {
  facts: PersistFacts;
  /** Our files systemd-networkd configures a link from right now. */
  applied: Set<string>;
  manifests: Map<string, OwnedFile[]>;
}

const parsedCache = new WeakMap<HostSnapshot, ParsedPersist>();

function parsePersist(snap: HostSnapshot): ParsedPersist {
  const cached = parsedCache.get(snap);
  if (cached) return cached;
  const active = new Set<string>();
  let ifstate = false;
  let ifup = false;
  const manifests = new Map<string, OwnedFile[]>();
  const applied = new Set<string>();
  let cur: OwnedFile[] | undefined;
  for (const line of (snap.sections.get("persist")?.text ?? "").split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^active (\S+) active$/.exec(line))) active.add(m[1]);
    else if (line === "ifstate yes") ifstate = true;
    else if (line === "ifup yes") ifup = true;
    else if ((m = /^@@applied (\S+)$/.exec(line))) applied.add(m[1]);
    else if ((m = /^@@manifest (\S+)$/.exec(line))) manifests.set(m[1], (cur = []));
    else if ((m = /^@@file (\S+) ?(\S*)$/.exec(line)) && cur) cur.push({ path: m[1], state: "file", content: Buffer.from(m[2], "base64").toString("utf8") });
    else if ((m = /^@@link (\S+) (.*)$/.exec(line)) && cur) cur.push({ path: m[1], state: "link", link: m[2] });
    else if ((m = /^@@missing (\S+)$/.exec(line)) && cur) cur.push({ path: m[1], state: "missing" });
  }
  const parsed: ParsedPersist = {
    facts: {
      systemd: snap.systemd,
      networkManager: active.has("NetworkManager"),
      networkd: active.has("systemd-networkd"),
      ifupdown: ifup && (active.has("networking") || ifstate),
    },
    manifests,
    applied,
  };
  parsedCache.set(snap, parsed);
  return parsed;
}

export function persistFacts(snap: HostSnapshot): PersistFacts {
  return parsePersist(snap).facts;
}

/** Our files systemd-networkd configures a link from right now (read at boot: written since, they are not loaded). */
export function networkdApplies(snap: HostSnapshot): ReadonlySet<string> {
  return parsePersist(snap).applied;
}

/** The files listed in an object's manifest, as the host has them (empty when none). */
export function ownedFiles(snap: HostSnapshot, kind: string, name: string): OwnedFile[] {
  return parsePersist(snap).manifests.get(manifestPath(kind, name)) ?? [];
}

export function hasManifest(snap: HostSnapshot, kind: string, name: string): boolean {
  return parsePersist(snap).manifests.has(manifestPath(kind, name));
}

export const withNewline = (s: string) => (s.endsWith("\n") ? s : s + "\n");

export function sameAs(want: PersistFile, have: OwnedFile | undefined): boolean {
  if (!have) return false;
  if (want.link !== undefined) return have.state === "link" && have.link === want.link;
  return have.state === "file" && [want.content ?? "", ...(want.accepts ?? [])].some((c) => have.content === withNewline(c));
}

/** The directory `path` is in. */
export const dirOf = (path: string) => path.replace(/\/[^/]+$/, "") || "/";

/**
 * The directory of `path` when it is a systemd drop-in directory of one named
 * file or unit (`/etc/systemd/network/10-eth0.network.d`,
 * `/etc/systemd/system/nftables.service.d`): such a directory exists only for
 * its drop-ins, so when removing ours empties it, it goes too (`rmdir` only
 * removes it empty: an admin's drop-ins keep it). Undefined for every other
 * directory (interfaces.d, system-connections, sysinit.target.wants, …),
 * which belong to the system.
 */
export function dropInDirOf(path: string): string | undefined {
  const dir = dirOf(path);
  return /^\/etc\/systemd\/(network|system)\/[^/]+\.(network|netdev|link|service|socket|timer|target|mount|path)\.d$/.test(dir) ? dir : undefined;
}

/** rm -f `path`, and its drop-in directory when that leaves it empty. */
export function removeFile(path: string): Script {
  const dir = dropInDirOf(path);
  return dir ? sh`rm -f ${path} && { rmdir ${dir} 2>/dev/null || true; }` : sh`rm -f ${path}`;
}

/** Restore a file to what the host had (used as an undo). */
export function restore(have: OwnedFile | undefined, path: string): Script {
  if (!have || have.state === "missing") return removeFile(path);
  const dir = dirOf(path);
  if (have.state === "link") return sh`mkdir -p ${dir} && ln -sfn ${have.link ?? ""} ${path}`;
  return joinLines([sh`mkdir -p ${dir}`, writeFile(path, have.content ?? "")]);
}

export function write(f: PersistFile): Script {
  const dir = dirOf(f.path);
  if (f.link !== undefined) return sh`mkdir -p ${dir} && ln -sfn ${f.link} ${f.path}`;
  return joinLines([sh`mkdir -p ${dir}`, writeFile(f.path, f.content ?? "", f.mode ?? "0644")]);
}

/**
 * A link as a kind describes it to the network-stack backends (networkd.ts,
 * networkManager.ts, ifupdown.ts): WHAT persists. Each backend says HOW, in
 * its own files.
 */
export interface PersistedLink {
  /** Who the files are written for (their first line), e.g. `vlanSubinterface eth1.30`. */
  owner: string;
  /** The files' name stem and NetworkManager's profile id, e.g. `kvmnet-vlan-eth1.30`. */
  stem: string;
  /** The interface. */
  name: string;
  mtu?: number;
  addresses: readonly string[];
  /** The bridge it is a port of. */
  bridge?: string;
  /** The command that makes it, as the live create runs it (ifupdown runs it at pre-up), its values quoted by `q`. */
  create: (q: (value: string | number) => string) => string;
  /** An 802.1Q / 802.1ad VLAN on `parent`. */
  vlan?: { id: number; parent: string; protocol: "802.1Q" | "802.1ad" };
  /** A persistent tap. */
  tap?: { owner?: string; group?: string; multiQueue: boolean; vnetHdr: boolean };
}

/** The first line of a link's files (VlanSubinterface's and TapInterface's wording, which hosts have). */
export const linkHeader = (owner: string) => `# Written by pulumi-kvmnet for ${owner}. Local edits are reported as drift and overwritten.`;

/** A route a bridge brings back at boot ("default" or a CIDR). */
export interface PersistedRoute {
  dst: string;
  gateway?: string;
  metric?: number;
}

/**
 * A bridge as the Bridge kind describes it to the network-stack backends:
 * WHAT persists. Each backend says HOW.
 */
export interface PersistedBridge {
  /** Who the files are written for (their first line), e.g. `Bridge br0`. */
  owner: string;
  /** The files' name stem and NetworkManager's profile id, e.g. `kvmnet-bridge-br0`. */
  stem: string;
  name: string;
  /** The MAC it comes back with. */
  mac: string;
  mtu?: number;
  stp: boolean;
  /** Its managed options as the kernel names them (times in centiseconds), the set ones only, in the kernel's order. */
  options: { stp_state?: number; forward_delay?: number; hello_time?: number; max_age?: number; priority?: number; ageing_time?: number; vlan_filtering?: number };
  /** Its own addresses. */
  addresses: readonly string[];
  /** What taken-over uplinks bring onto it at boot: their addresses (after its own) and routes (the default route above all). */
  takenOver: { addresses: readonly string[]; routes: readonly PersistedRoute[] };
  /** Its ports; a taken-over uplink's own profile must lose to the port's. */
  ports: readonly { name: string; takenOver: boolean }[];
}

/** The bridge's addresses at boot: its own, then those taken over. */
export const bootAddresses = (b: PersistedBridge): string[] => [...new Set([...b.addresses, ...b.takenOver.addresses])];
