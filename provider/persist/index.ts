/**
 * Persistence: what makes an object come back after the host reboots.
 *
 * Live changes always happen at once, with `ip`, `nft` and friends (the kinds'
 * plans). Persistence is a second, declarative layer: each kind renders the
 * files that recreate its object at boot on the host's own network stack
 * (systemd-networkd .netdev/.network, NetworkManager keyfiles, ifupdown
 * interfaces.d stanzas) or through systemd units of our own (nftables tables,
 * dnsmasq, sysctls, vfio-pci bindings). This module turns "these files, with
 * this content" into plan steps, and compares them with what the host has.
 *
 * Ownership: every file an object writes is listed in its manifest,
 * `/etc/kvmnet/owned/<kind>/<name>` (one path per line). A file dropped from
 * the desired set (a port removed, the backend changed) is found there and
 * removed; delete removes every listed file and the manifest itself. Files we
 * did not write are never touched.
 *
 * Detection (`persistence: "auto"`): NetworkManager active → networkmanager;
 * else systemd-networkd active → networkd; else ifupdown when it configured
 * the host at boot (networking.service active, or /run/network/ifstate) and
 * `ifup` exists; else runtime (nothing survives a reboot; read reports the
 * object gone afterwards, which is the truth).
 */
import { createHash } from "crypto";
import { z } from "zod";
import { KvmnetError } from "../errors";
import { HostSnapshot, OWNED_DIR } from "../observe";
import { andThen, joinLines, literal, Script, sh, writeFile } from "../shell";
import type { Plan, Step } from "../render";

export const PERSISTENCE_MODES = ["auto", "networkmanager", "networkd", "ifupdown", "runtime"] as const;
export type Persistence = (typeof PERSISTENCE_MODES)[number];
export type Backend = Exclude<Persistence, "auto">;

/** What an object persists through when the program does not say. */
export const DEFAULT_PERSISTENCE: Persistence = "runtime";

export const persistence = z.enum(PERSISTENCE_MODES, {
  error: () => ({
    message: 'must be one of "auto" (the stack the host runs), "networkmanager", "networkd", "ifupdown" or "runtime" (live only: gone after a reboot)',
  }),
});

export { OWNED_DIR };

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
}

/** What a kind persists on one backend. */
export interface PersistSet {
  files: PersistFile[];
}

/**
 * What to run after files under these paths changed, so the stack knows them
 * without touching live state (live changes are the plan's steps):
 * systemd re-reads units; NetworkManager re-reads keyfiles; udev its rules.
 * systemd-networkd and ifupdown read their files at boot (a networkd reload
 * would reconfigure links live).
 */
export function reloadsFor(paths: readonly string[]): Script[] {
  const out: Script[] = [];
  if (paths.some((p) => p.startsWith("/etc/systemd/system/"))) out.push(literal("systemctl daemon-reload"));
  if (paths.some((p) => p.startsWith("/etc/NetworkManager/"))) out.push(literal("if command -v nmcli >/dev/null 2>&1; then nmcli connection reload; fi"));
  if (paths.some((p) => p.startsWith("/etc/udev/"))) out.push(literal("if command -v udevadm >/dev/null 2>&1; then udevadm control --reload; fi"));
  return out;
}

/** A UUID (version 5 layout) derived from `seed`: NetworkManager profiles need one, and it must not change between renders. */
export function stableUuid(seed: string): string {
  const h = createHash("sha1").update(`pulumi-kvmnet\0${seed}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
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
  let cur: OwnedFile[] | undefined;
  for (const line of (snap.sections.get("persist")?.text ?? "").split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^active (\S+) active$/.exec(line))) active.add(m[1]);
    else if (line === "ifstate yes") ifstate = true;
    else if (line === "ifup yes") ifup = true;
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
  };
  parsedCache.set(snap, parsed);
  return parsed;
}

export function persistFacts(snap: HostSnapshot): PersistFacts {
  return parsePersist(snap).facts;
}

/** The files listed in an object's manifest, as the host has them (empty when none). */
export function ownedFiles(snap: HostSnapshot, kind: string, name: string): OwnedFile[] {
  return parsePersist(snap).manifests.get(manifestPath(kind, name)) ?? [];
}

export function hasManifest(snap: HostSnapshot, kind: string, name: string): boolean {
  return parsePersist(snap).manifests.has(manifestPath(kind, name));
}

function activeStacks(f: PersistFacts): string {
  const names = [f.networkManager && "NetworkManager", f.networkd && "systemd-networkd", f.ifupdown && "ifupdown"].filter(Boolean);
  return names.length ? names.join(", ") : "none of NetworkManager, systemd-networkd, ifupdown";
}

/**
 * The backend `mode` means on this host. An explicit backend the host does not
 * run is refused: files for a stack that is not running would do nothing at
 * boot, which is the failure persistence exists to prevent.
 */
export function resolveBackend(mode: Persistence, snap: HostSnapshot, what: string): Backend {
  const f = persistFacts(snap);
  if (mode === "auto") return f.networkManager ? "networkmanager" : f.networkd ? "networkd" : f.ifupdown ? "ifupdown" : "runtime";
  if (mode === "runtime") return "runtime";
  const runs = mode === "networkmanager" ? f.networkManager : mode === "networkd" ? f.networkd : f.ifupdown;
  if (!runs) {
    const service = mode === "networkmanager" ? "NetworkManager.service" : mode === "networkd" ? "systemd-networkd.service" : "networking.service (ifupdown)";
    throw new KvmnetError({
      kind: "Unsupported",
      message: `${what}: persistence "${mode}" needs ${service} active on the host, which runs ${activeStacks(f)}`,
      hint: 'use persistence: "auto" to persist through the stack the host runs, or "runtime" to persist nothing',
    });
  }
  return mode;
}

/** Systemd's own persistence (units, sysctl.d) for kinds that do not go through a network stack. */
export function requireSystemd(backend: Backend, snap: HostSnapshot, what: string): void {
  if (backend !== "runtime" && !snap.systemd) {
    throw new KvmnetError({
      kind: "Unsupported",
      message: `${what}: persistence "${backend}" needs systemd as the host's init (the boot-time units are systemd units)`,
      hint: 'use persistence: "runtime"',
    });
  }
}

const withNewline = (s: string) => (s.endsWith("\n") ? s : s + "\n");

function sameAs(want: PersistFile, have: OwnedFile | undefined): boolean {
  if (!have) return false;
  if (want.link !== undefined) return have.state === "link" && have.link === want.link;
  return have.state === "file" && have.content === withNewline(want.content ?? "");
}

/** The directory `path` is in. */
const dirOf = (path: string) => path.replace(/\/[^/]+$/, "") || "/";

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
function removeFile(path: string): Script {
  const dir = dropInDirOf(path);
  return dir ? sh`rm -f ${path} && { rmdir ${dir} 2>/dev/null || true; }` : sh`rm -f ${path}`;
}

/** Restore a file to what the host had (used as an undo). */
function restore(have: OwnedFile | undefined, path: string): Script {
  if (!have || have.state === "missing") return removeFile(path);
  const dir = dirOf(path);
  if (have.state === "link") return sh`mkdir -p ${dir} && ln -sfn ${have.link ?? ""} ${path}`;
  return joinLines([sh`mkdir -p ${dir}`, writeFile(path, have.content ?? "")]);
}

function write(f: PersistFile): Script {
  const dir = dirOf(f.path);
  if (f.link !== undefined) return sh`mkdir -p ${dir} && ln -sfn ${f.link} ${f.path}`;
  return joinLines([sh`mkdir -p ${dir}`, writeFile(f.path, f.content ?? "", f.mode ?? "0644")]);
}

/** Differences between what an object should persist and what the host has (empty = in sync). */
export function persistDrift(kind: string, name: string, want: PersistSet, snap: HostSnapshot): string[] {
  const have = new Map(ownedFiles(snap, kind, name).map((f) => [f.path, f]));
  const listed = hasManifest(snap, kind, name);
  const out: string[] = [];
  for (const f of want.files) {
    const h = have.get(f.path);
    if (!listed || !h || h.state === "missing") out.push(`${f.path} is missing`);
    else if (!sameAs(f, h)) out.push(`${f.path} differs from what the inputs render`);
  }
  const wanted = new Set(want.files.map((f) => f.path));
  for (const h of have.values()) if (!wanted.has(h.path) && h.state !== "missing") out.push(`${h.path} is left over`);
  return out;
}

/**
 * Steps that make the host's files for object kind/name exactly `want`
 * (files written or removed, the manifest, then the reloads), each with its
 * undo. Nothing when already in sync.
 */
export function persistSteps(kind: string, name: string, want: PersistSet, snap: HostSnapshot): Step[] {
  const owned = ownedFiles(snap, kind, name);
  const have = new Map(owned.map((f) => [f.path, f]));
  const steps: Step[] = [];
  const touched: string[] = [];
  for (const f of want.files) {
    const h = have.get(f.path);
    if (sameAs(f, h)) continue;
    steps.push({ description: `write ${f.path}`, run: write(f), undo: restore(h, f.path) });
    touched.push(f.path);
  }
  const wanted = new Set(want.files.map((f) => f.path));
  for (const h of owned) {
    if (wanted.has(h.path) || h.state === "missing") continue;
    steps.push({ description: `remove ${h.path}`, run: removeFile(h.path), undo: restore(h, h.path) });
    touched.push(h.path);
  }
  const manifest = manifestPath(kind, name);
  const listed = hasManifest(snap, kind, name);
  const oldList = owned.map((f) => f.path).join("\n");
  const newList = want.files.map((f) => f.path).join("\n");
  if (want.files.length === 0) {
    if (listed) {
      steps.push({
        description: `remove ${manifest}`,
        // The directories go too when nothing else of ours is in them.
        run: sh`rm -f ${manifest} && { rmdir ${`${OWNED_DIR}/${kind}`} ${OWNED_DIR} /etc/kvmnet 2>/dev/null || true; }`,
        undo: joinLines([sh`mkdir -p ${`${OWNED_DIR}/${kind}`}`, writeFile(manifest, oldList)]),
      });
    }
  } else if (!listed || oldList !== newList) {
    steps.push({
      description: `record the files of ${kind} ${name} in ${manifest}`,
      run: joinLines([sh`mkdir -p ${`${OWNED_DIR}/${kind}`}`, writeFile(manifest, newList)]),
      undo: listed ? writeFile(manifest, oldList) : sh`rm -f ${manifest}`,
    });
  }
  const reloads = reloadsFor(touched);
  if (reloads.length === 0) return steps;
  const reload = joinLines(reloads);
  // The reload runs after the files change; undone, after they are restored
  // (undos run last step first, so the restoring reload is the first step's undo).
  return [
    { description: "note the stack's configuration reload", run: literal("true"), undo: reload },
    ...steps,
    { description: "reload the stack's view of the persisted files", run: reload },
  ];
}

/**
 * What comes off, live, when an object stops persisting (delete, or
 * persistence set to "runtime"), ahead of the core removing its files:
 * - its boot unit is stopped (ours have no ExecStop: this only marks it
 *   inactive), so no "not-found, active" unit is left once its file is gone;
 * - a drop-in for another unit (nftables.service's, which loads a table
 *   again after nftables flushes) goes first, with a daemon-reload, so a
 *   restart of that unit no longer re-adds what is being deleted; its
 *   directory goes too when nothing else is in it.
 */
export interface BootHooks {
  /** Boot unit to stop (its manifest lists it). */
  unit?: string;
  /** The drop-in as the host has it (restored if a later step fails). */
  dropIn?: { path: string; content: string };
}

/** The hooks object kind/name persisted (from its manifest), or undefined when none. */
export function bootHooksToDisarm(kind: string, name: string, bootUnitPath: string, dropInPath: string | undefined, snap: HostSnapshot): BootHooks | undefined {
  const have = ownedFiles(snap, kind, name);
  const unit = have.some((f) => f.path === bootUnitPath && f.state !== "missing") ? bootUnitPath.replace(/^.*\//, "") : undefined;
  const d = dropInPath === undefined ? undefined : have.find((f) => f.path === dropInPath && f.state === "file");
  if (!unit && !d) return undefined;
  return { ...(unit ? { unit } : {}), ...(d ? { dropIn: { path: d.path, content: d.content ?? "" } } : {}) };
}

/** The steps that take `hooks` off (see {@link BootHooks}). */
export function disarmSteps(hooks: BootHooks): Step[] {
  const steps: Step[] = [];
  if (hooks.unit) {
    steps.push({ description: `stop boot unit ${hooks.unit}`, run: sh`systemctl stop ${hooks.unit} && { systemctl reset-failed ${hooks.unit} 2>/dev/null; true; }` });
  }
  if (hooks.dropIn) {
    const { path, content } = hooks.dropIn;
    const unit = dirOf(path).replace(/^.*\//, "").replace(/\.d$/, "");
    steps.push({
      description: `remove ${unit} drop-in ${path}`,
      run: andThen([removeFile(path), sh`systemctl daemon-reload`]),
      undo: joinLines([restore({ path, state: "file", content }, path), sh`systemctl daemon-reload`]),
    });
  }
  return steps;
}

/** Append persistence steps to a live plan. */
export function withPersistence(plan: Plan, steps: Step[]): Plan {
  return steps.length === 0 ? plan : { ...plan, steps: [...plan.steps, ...steps] };
}
