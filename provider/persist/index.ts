/**
 * Persistence: what makes an object come back after the host reboots.
 *
 * Live changes always happen at once, with `ip`, `nft` and friends (the kinds'
 * plans). Persistence is a second, declarative layer: each kind describes
 * what recreates its object at boot (a link, a bridge, units and files of its
 * own) and a backend renders the files, on the host's own network stack
 * (networkd.ts: .netdev/.network; networkManager.ts: keyfiles; ifupdown.ts:
 * interfaces.d stanzas) or as systemd units of our own (systemd.ts: nftables
 * tables, dnsmasq, sysctls, vfio-pci bindings). This module, the core, turns
 * "these files, with this content" into plan steps, and compares them with
 * what the host has.
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
import { z } from "zod";
import { KvmnetError } from "../errors";
import type { HostSnapshot } from "../observe";
import type { Plan, Step } from "../render";
import { joinLines, literal, Script, sh, writeFile } from "../shell";
import { nmPortsLetGo, nmReleaseWait, NM_RELOAD } from "./networkManager";
import { SYSTEMD_RELOAD } from "./systemd";
import {
  hasManifest,
  manifestPath,
  networkdApplies,
  OWNED_DIR,
  ownedFiles,
  PersistFacts,
  persistFacts,
  PersistSet,
  removeFile,
  restore,
  sameAs,
  StackReload,
  write,
} from "./files";

export { dropInDirOf, hasManifest, manifestPath, networkdApplies, ownedFiles, persistFacts } from "./files";
export type { OwnedFile, PersistFacts, PersistFile, PersistSet } from "./files";
export { bootHooksToDisarm, disarmSteps, requireSystemd } from "./systemd";
export type { BootHooks } from "./systemd";
export { stableUuid } from "./networkManager";

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

/**
 * What to run after files under these paths changed, so the stack knows them
 * without touching live state (live changes are the plan's steps):
 * systemd re-reads units; NetworkManager re-reads keyfiles; udev its rules.
 * systemd-networkd and ifupdown read their files at boot (a networkd reload
 * would reconfigure links live; a delete of files networkd holds is the
 * exception: withPersistFiles).
 */
export function reloadsFor(paths: readonly string[]): Script[] {
  return [SYSTEMD_RELOAD, NM_RELOAD, UDEV_RELOAD].filter((r) => paths.some((p) => p.startsWith(r.under))).map((r) => r.run);
}

/** udev re-reads its rules (PciPassthrough's). */
const UDEV_RELOAD: StackReload = { under: "/etc/udev/", run: literal("if command -v udevadm >/dev/null 2>&1; then udevadm control --reload; fi") };

function activeStacks(f: PersistFacts): string {
  const names = [f.networkManager && "NetworkManager", f.networkd && "systemd-networkd", f.ifupdown && "ifupdown"].filter(Boolean);
  return names.length ? names.join(", ") : "none of NetworkManager, systemd-networkd, ifupdown";
}

/**
 * Unsupported: `what`'s persistence (resolved to `backend`) would not bring
 * it back at boot, and why; the hint says what to change, or to persist
 * nothing.
 */
export function unsupportedOnStack(what: string, mode: Persistence, backend: Backend, why: string, hint: string): KvmnetError {
  const how = mode === backend ? `persistence "${backend}"` : `persistence "${mode}" (${backend}, the stack this host runs)`;
  return new KvmnetError({ kind: "Unsupported", message: `${what}: ${how} ${why}`, hint: `${hint}; or set persistence: "runtime" (live only, gone after a reboot)` });
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

/** systemd-networkd re-reads its files and reconfigures every link whose .network changed (networkctl(1)). */
const NETWORKD_RELOAD = literal("networkctl reload");

/**
 * `plan` (a change's live steps) with the files of object kind/name brought
 * to `want` (none: a delete). Usually after the live steps. But where the
 * host's stack holds a link through one of our files right now and the change
 * removes that file, the stack would take the live steps apart again as they
 * happen. So there the files change first and the stack lets go of the link
 * before the live steps run; undone, the files come back and the stack
 * reloads again. Two stacks do this, both seen in the lab with a taken-over
 * uplink given back from its bridge after a reboot:
 * - systemd-networkd, still holding our port file (`Bridge=`), put the uplink
 *   straight back into the bridge, which got its address again; under load the
 *   host was cut off. `networkctl reload` lets go of it (the uplink returns to
 *   its own .network). Only a removal counts: a file that is rewritten leaves
 *   its link ours, and a live step that networkd's reload already did (an
 *   address added) would then fail.
 * - NetworkManager, with our port profile active on the uplink and the bridge
 *   staying (an update that drops the port), auto-activated that profile again
 *   when the uplink left the bridge, enslaving it with its address on it until
 *   the profile was gone. Once `nmcli connection reload` dropped the profile,
 *   NetworkManager releases the port by itself (asynchronously: the next step
 *   waits, bounded, while the port is still enslaved under that profile). A
 *   delete is left in the usual order: NetworkManager would delete the bridge
 *   itself with its profile, and with the bridge gone the port profile cannot
 *   come back.
 */
export function withPersistFiles(plan: Plan, kind: string, name: string, want: PersistSet, snap: HostSnapshot): Plan {
  const steps = persistSteps(kind, name, want, snap);
  const kept = new Set(want.files.map((f) => f.path));
  const removed = ownedFiles(snap, kind, name).filter((f) => !kept.has(f.path));
  const applied = networkdApplies(snap);
  const networkd = removed.some((f) => applied.has(f.path));
  const nmPorts = persistFacts(snap).networkManager ? nmPortsLetGo(removed, want) : [];
  if (!networkd && nmPorts.length === 0) return withPersistence(plan, steps);
  return {
    ...plan,
    steps: [
      ...(networkd ? [{ description: "note systemd-networkd's reload", run: literal("true"), undo: NETWORKD_RELOAD }] : []),
      ...steps,
      ...(networkd ? [{ description: "systemd-networkd lets go of the links it configured from removed files", run: NETWORKD_RELOAD }] : []),
      ...nmPorts.map((p) => ({ description: `NetworkManager releases ${p.port} from ${p.bridge} (its port profile ${p.id} was removed)`, run: nmReleaseWait(p) })),
      ...plan.steps,
    ],
  };
}

/** Append persistence steps to a live plan. */
export function withPersistence(plan: Plan, steps: Step[]): Plan {
  return steps.length === 0 ? plan : { ...plan, steps: [...plan.steps, ...steps] };
}
