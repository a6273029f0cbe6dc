/**
 * The systemd backend: units of our own, `systemctl enable`'s links, drop-ins
 * for other units, and stopping a unit. Kinds that do not go through a
 * network stack (NatNetwork, PortForward, PciPassthrough) persist through it
 * on any backend but "runtime"; the commit-confirm revert timer is stopped
 * through it too.
 */
import { KvmnetError } from "../errors";
import type { HostSnapshot } from "../observe";
import type { Step } from "../render";
import { andThen, joinLines, literal, Script, sh } from "../shell";
import { dirOf, ownedFiles, PersistFile, removeFile, restore, StackReload, writtenBy } from "./files";
import type { Backend } from "./index";

export const SYSTEMD_DIR = "/etc/systemd/system";
export const WANTS_DIR = `${SYSTEMD_DIR}/multi-user.target.wants`;
export const NFTABLES_DROPIN_DIR = `${SYSTEMD_DIR}/nftables.service.d`;

/** systemd re-reads its units after ours changed. */
export const SYSTEMD_RELOAD: StackReload = { under: `${SYSTEMD_DIR}/`, run: literal("systemctl daemon-reload") };

/** `<what>` is `nat-<network>` or `pf-<forward>`. */
export const nftablesDropInPath = (what: string) => `${NFTABLES_DROPIN_DIR}/kvmnet-${what}.conf`;

/** `systemctl enable`'s link for a unit WantedBy=`target`. */
export function enableLink(unit: string, target = "multi-user.target"): PersistFile {
  return { path: `${SYSTEMD_DIR}/${target}.wants/${unit}`, link: `${SYSTEMD_DIR}/${unit}` };
}

/**
 * A drop-in for nftables.service that loads `tableFile` again after the
 * service (re)loads its configuration, which flushes the whole ruleset. The
 * `-` prefix: our table failing to load must not fail the host's firewall.
 */
export function nftablesDropIn(what: string, tableFilePath: string): PersistFile {
  return {
    path: nftablesDropInPath(what),
    content: [
      writtenBy(what),
      "# nftables.service flushes the whole ruleset when it starts or reloads; load this table again after it.",
      "[Service]",
      `ExecStartPost=-nft -f ${tableFilePath}`,
      `ExecReload=-nft -f ${tableFilePath}`,
    ].join("\n"),
  };
}

/** The [Service] and [Install] of a oneshot that stays active once it ran, enabled for `wantedBy`. */
function oneshot(execStart: string, wantedBy: string): string[] {
  return ["", "[Service]", "Type=oneshot", "RemainAfterExit=yes", `ExecStart=${execStart}`, "", "[Install]", `WantedBy=${wantedBy}`];
}

/**
 * A oneshot boot unit: runs once the host's network stack has configured its
 * interfaces (network.target) and after nftables.service (whose flush would
 * remove what this unit loads), and before libvirt starts guests.
 */
function bootUnitText(description: string, execStart: string): string {
  return [
    "[Unit]",
    `Description=${description}, managed by pulumi-kvmnet`,
    "After=network.target nftables.service",
    // Guests attached to our bridge (or reached through our forwards) start after it is there.
    "Before=libvirtd.service virtqemud.service libvirt-guests.service",
    ...oneshot(execStart, "multi-user.target"),
    "",
  ].join("\n");
}

/**
 * A oneshot unit for early boot: no default dependencies, done before
 * sysinit.target, i.e. before every ordinary service (libvirtd included)
 * starts; after udev's coldplug trigger. `header` is its first line.
 */
function earlyBootUnitText(header: string, description: string, execStart: string): string {
  return [
    header,
    "[Unit]",
    `Description=${description}`,
    "DefaultDependencies=no",
    "After=local-fs.target systemd-modules-load.service systemd-udev-trigger.service",
    "Before=sysinit.target shutdown.target",
    "Conflicts=shutdown.target",
    ...oneshot(execStart, "sysinit.target"),
  ].join("\n");
}

/**
 * A oneshot unit of ours, described by the kind; {@link unitFiles} renders it
 * and its `systemctl enable` link.
 */
export interface PersistedUnit {
  /** The unit's name (its file is /etc/systemd/system/<unit>). */
  unit: string;
  description: string;
  /** What it runs (ExecStart=). */
  execStart: string;
  /**
   * "network" (default): once the network stack configured the interfaces,
   * after nftables.service, before libvirt ({@link bootUnitText}); "early":
   * before sysinit.target ({@link earlyBootUnitText}), enabled there.
   */
  stage?: "network" | "early";
  /** First line of an early unit (who wrote it). */
  header?: string;
}

/** The files of `u`: the unit and its enable link. Pure. */
export function unitFiles(u: PersistedUnit): PersistFile[] {
  if (u.stage === "early") {
    return [{ path: `${SYSTEMD_DIR}/${u.unit}`, content: earlyBootUnitText(u.header ?? writtenBy(u.unit), u.description, u.execStart) }, enableLink(u.unit, "sysinit.target")];
  }
  return [{ path: `${SYSTEMD_DIR}/${u.unit}`, content: bootUnitText(u.description, u.execStart) }, enableLink(u.unit)];
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

/** How {@link stopUnit} stops a unit. */
export interface StopUnitOptions {
  /**
   * Then drop systemd's record of a failed run (`systemctl reset-failed`, so
   * no failed unit is left listed): "if-stopped" only once the stop worked;
   * `{ after }` in any case, after `after` (the unit file's removal and a
   * daemon-reload).
   */
  forget?: "if-stopped" | { after: Script };
  /** Say nothing when there is no such unit. */
  quiet?: boolean;
  /** Only on a host that systemd runs (elsewhere there is no unit: nothing to do). */
  onlyUnderSystemd?: boolean;
}

/**
 * The one way to stop a unit of ours: a boot unit whose object stops
 * persisting (its oneshot stays "active" after its file is gone until the
 * next boot), a NatNetwork's dnsmasq unit, the commit-confirm revert timer.
 */
export function stopUnit(unit: string, o: StopUnitOptions = {}): Script {
  let s = o.quiet ? sh`systemctl stop ${unit} 2>/dev/null` : sh`systemctl stop ${unit}`;
  const forget = sh`systemctl reset-failed ${unit} 2>/dev/null`;
  if (o.forget === "if-stopped") s = sh`${s} && { ${forget}; true; }`;
  else if (o.forget) s = sh`${s}; ${o.forget.after}; ${forget}`;
  return o.onlyUnderSystemd ? sh`if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then ${s}; fi` : s;
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
    steps.push({ description: `stop boot unit ${hooks.unit}`, run: stopUnit(hooks.unit, { forget: "if-stopped" }) });
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
