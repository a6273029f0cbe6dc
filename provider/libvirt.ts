/**
 * libvirt registration: a libvirt network of the host-bridge form
 * (`<forward mode='bridge'/><bridge name='…'/>`, or macvtap's
 * `<forward mode='bridge'><interface dev='…'/></forward>` for a device that is
 * no bridge) defined, started and marked autostart through virsh, so VMs made
 * by virt-install, virt-manager or terraform-provider-libvirt attach by name.
 *
 * Ownership: a network this provider defines carries a UUID derived from the
 * kind, the resource's name and the network's name. A network of that name
 * with another UUID is someone else's: it is never touched, and defining ours
 * is refused unless the program says `adopt` (then its definition is kept in
 * /etc/kvmnet/libvirt/<network>.xml and defined again at delete).
 */
import { z } from "zod";
import { AttachPoint, xmlLiteral } from "./attach";
import { KvmnetError } from "./errors";
import { HostSnapshot, section } from "./observe";
import { stableUuid } from "./persist";
import type { Guard, Step } from "./render";
import { Script, sh } from "./shell";

/** libvirt network names become file names under /etc/libvirt/qemu/networks. */
export const libvirtNetworkName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,49}$/, "must be 1–50 characters of `[A-Za-z0-9_.+-]`, a letter or digit first (libvirt makes it a file name)");

export const libvirtSettings = z
  .object({
    network: libvirtNetworkName.describe("The libvirt network's name: what `virsh net-list` shows and a domain's `<source network='…'/>` names."),
    autostart: z.boolean().default(true).describe("Mark the network autostart, so libvirtd starts it at boot (`virsh net-autostart`)."),
    adopt: z
      .boolean()
      .default(false)
      .describe(
        "Replace a libvirt network of this name that this provider did not define (libvirt's own `default`, say). It must be stopped first (`virsh net-destroy`); " +
          "its definition is kept on the host and defined again when this resource is deleted. Without it such a name is refused.",
      ),
  })
  .strict();
export type LibvirtSettings = z.output<typeof libvirtSettings>;

/** Where an adopted network's own definition is kept until delete. */
export const LIBVIRT_BACKUP_DIR = "/etc/kvmnet/libvirt";
const backupPath = (network: string) => `${LIBVIRT_BACKUP_DIR}/${network}.xml`;

/** Every virsh call names the system libvirtd: sudo or not, never a per-user session daemon. */
const virsh = (args: Script) => sh`virsh -q -c qemu:///system ${args}`;

/** The UUID that marks a network as this resource's. */
export function ownUuid(kind: string, name: string, network: string): string {
  return stableUuid(`libvirt-network/${kind}/${name}/${network}`);
}

/** The network definition we give libvirt. */
export function libvirtNetworkXml(network: string, uuid: string, at: AttachPoint): string {
  const forward =
    at.kind === "bridge"
      ? [`  <forward mode='bridge'/>`, `  <bridge name='${xmlLiteral(at.bridge)}'/>`]
      : [`  <forward mode='bridge'>`, `    <interface dev='${xmlLiteral(at.dev)}'/>`, `  </forward>`];
  return [`<network>`, `  <name>${xmlLiteral(network)}</name>`, `  <uuid>${xmlLiteral(uuid)}</uuid>`, ...forward, `</network>`, ""].join("\n");
}

const sectionName = (network: string) => `libvirt-${network}`;

/**
 * The observe section for one network: whether virsh and libvirtd answer,
 * `virsh net-info`, the inactive definition, and whether an adopted
 * definition is kept. Only resources that name a network run it: virsh wakes
 * a socket-activated libvirtd.
 */
export function libvirtSection(network: string): Script {
  const c = virsh(sh`uri`);
  const info = virsh(sh`net-info ${network}`);
  const xml = virsh(sh`net-dumpxml --inactive ${network}`);
  return section(
    sectionName(network),
    sh`if ! command -v virsh >/dev/null 2>&1; then echo 'virsh no'; elif ! ${c} >/dev/null 2>&1; then echo 'daemon no'; else echo 'daemon yes'; [ -f ${backupPath(network)} ] && echo 'backup yes'; if ${info} 2>/dev/null; then echo '@@xml'; ${xml}; fi; fi; true`,
  );
}

export interface LibvirtNetwork {
  uuid: string;
  active: boolean;
  autostart: boolean;
  persistent: boolean;
  /** The inactive definition, as libvirt prints it. */
  xml: string;
  forwardMode?: string;
  bridge?: string;
  dev?: string;
}
export interface LibvirtObserved {
  /** virsh is installed and the system libvirtd answers. */
  daemon: boolean;
  virsh: boolean;
  /** An adopted network's definition is kept. */
  backup: boolean;
  network?: LibvirtNetwork;
}

/** Parse the section (undefined when the snapshot did not read this network). */
export function parseLibvirt(text: string): LibvirtObserved {
  const lines = text.split("\n");
  const out: LibvirtObserved = { virsh: !lines.includes("virsh no"), daemon: lines.includes("daemon yes"), backup: lines.includes("backup yes") };
  const at = lines.indexOf("@@xml");
  if (!out.daemon || at < 0) return out;
  const info: Record<string, string> = {};
  for (const l of lines.slice(0, at)) {
    const m = /^([A-Za-z ]+):\s*(.*)$/.exec(l);
    if (m) info[m[1].trim().toLowerCase()] = m[2].trim();
  }
  const xml = lines
    .slice(at + 1)
    .join("\n")
    .trim();
  const attr = (re: RegExp) => re.exec(xml)?.[1];
  out.network = {
    uuid: info.uuid ?? attr(/<uuid>([^<]+)<\/uuid>/) ?? "",
    active: info.active === "yes",
    autostart: info.autostart === "yes",
    persistent: info.persistent === "yes",
    xml,
    forwardMode: attr(/<forward\b[^>]*\bmode=['"]([^'"]+)['"]/),
    bridge: attr(/<bridge\b[^>]*\bname=['"]([^'"]+)['"]/),
    dev: attr(/<forward\b[\s\S]*?<interface\b[^>]*\bdev=['"]([^'"]+)['"]/),
  };
  return out;
}

export function observeLibvirt(snap: HostSnapshot, network: string): LibvirtObserved | undefined {
  const s = snap.sections.get(sectionName(network));
  return s ? parseLibvirt(s.text) : undefined;
}

/** Did `who` define network `n` (named `network`)? Its UUID says so. */
function definedBy(who: Owner, network: string, n: LibvirtNetwork | undefined): boolean {
  return n !== undefined && n.uuid === ownUuid(who.kind, who.name, network);
}

/** The registration as it stands on the host against what `at` needs: problems, empty when it is right. */
export function libvirtProblems(who: Owner, want: LibvirtSettings, at: AttachPoint, snap: HostSnapshot): string[] {
  return problemsOf(who, want, at, observeLibvirt(snap, want.network));
}

function problemsOf(who: Owner, want: LibvirtSettings, at: AttachPoint, o: LibvirtObserved | undefined): string[] {
  const n = o?.network;
  const name = `libvirt network ${want.network}`;
  if (!o?.daemon) return [`${name}: libvirtd does not answer on the host`];
  if (!n) return [`${name} is not defined`];
  if (!definedBy(who, want.network, n)) return [`${name} is defined, but not by this resource (uuid ${n.uuid})`];
  const p: string[] = [];
  const shape = shapeProblem(n, at);
  if (shape) p.push(`${name} ${shape}`);
  if (!n.active) p.push(`${name} is not active`);
  if (n.autostart !== want.autostart) p.push(`${name} autostart is ${n.autostart ? "on" : "off"}, want ${want.autostart ? "on" : "off"}`);
  return p;
}

/** What is wrong with the network's form for `at` (host-bridge on the bridge, or macvtap on the device), if anything. */
function shapeProblem(n: LibvirtNetwork, at: AttachPoint): string | undefined {
  const target = at.kind === "bridge" ? { bridge: at.bridge, dev: undefined } : { bridge: undefined, dev: at.dev };
  if (n.forwardMode === "bridge" && n.bridge === target.bridge && n.dev === target.dev) return undefined;
  return `attaches to ${n.bridge ?? n.dev ?? "nothing"} (forward mode ${n.forwardMode ?? "none"}), not ${target.bridge ?? target.dev}`;
}

/** Who owns a registration: the kind (its id spelling) and the resource's name. */
export interface Owner {
  kind: string;
  name: string;
}

function defineStep(network: string, xml: string, undo: Script | undefined, what: string): Step {
  return {
    description: `${what} libvirt network ${network}`,
    // net-define reads a file; a subshell so the temporary file goes whatever happens.
    run: sh`(f=$(mktemp) || exit 1; printf '%s' ${xml} >"$f"; ${virsh(sh`net-define "$f"`)} >/dev/null; rc=$?; rm -f "$f"; exit $rc)`,
    undo,
  };
}
const startStep = (n: string): Step => ({ description: `start libvirt network ${n}`, run: virsh(sh`net-start ${n}`), undo: virsh(sh`net-destroy ${n}`) });
const stopStep = (n: string): Step => ({ description: `stop libvirt network ${n}`, run: virsh(sh`net-destroy ${n}`), undo: virsh(sh`net-start ${n}`) });
function autostartStep(n: string, on: boolean): Step {
  const set = (v: boolean) => (v ? virsh(sh`net-autostart ${n}`) : virsh(sh`net-autostart --disable ${n}`));
  return { description: `turn autostart ${on ? "on" : "off"} for libvirt network ${n}`, run: set(on), undo: set(!on) };
}

/** Remove our network `network` as observed (stop, undefine), and define an adopted one's own definition again. */
function unregisterSteps(network: string, o: LibvirtObserved): Step[] {
  const n = o.network;
  const steps: Step[] = [];
  if (n?.active) steps.push(stopStep(network));
  if (n) steps.push({ description: `undefine libvirt network ${network}`, run: virsh(sh`net-undefine ${network}`), undo: defineStep(network, n.xml, undefined, "define").run });
  if (o.backup) {
    steps.push({
      description: `define libvirt network ${network} as it was before it was adopted`,
      run: sh`${virsh(sh`net-define ${backupPath(network)}`)} >/dev/null && rm -f ${backupPath(network)} && { rmdir ${LIBVIRT_BACKUP_DIR} 2>/dev/null || true; }`,
    });
  }
  return steps;
}

/**
 * Steps (and guards) that bring the registration from `previous` to `desired`
 * (either may be undefined: none wanted). Throws before anything changes when
 * libvirtd is missing, or the name is someone else's network.
 */
export function planLibvirt(
  who: Owner,
  desired: LibvirtSettings | undefined,
  at: AttachPoint,
  previous: LibvirtSettings | undefined,
  snap: HostSnapshot,
): { guards: Guard[]; steps: Step[] } {
  const guards: Guard[] = [];
  const steps: Step[] = [];
  const label = `${who.kind} ${who.name}`;
  if (previous && previous.network !== desired?.network) {
    const o = observeLibvirt(snap, previous.network);
    if (o?.virsh && !o.daemon) {
      // Our network may still be defined: going on would leave it behind, naming a bridge that is gone.
      throw new KvmnetError({
        kind: "Failed",
        message: `libvirt: ${label} must undefine libvirt network ${previous.network}, but the system libvirtd (qemu:///system) does not answer`,
        hint: "start libvirtd on the host (systemctl start libvirtd) and run this again; nothing was changed",
      });
    }
    // Gone already, or libvirt uninstalled with it: nothing of ours to remove.
    if (o?.daemon && definedBy(who, previous.network, o.network)) steps.push(...unregisterSteps(previous.network, o));
  }
  if (!desired) return { guards, steps };
  const network = desired.network;
  const o = observeLibvirt(snap, network);
  if (!o?.virsh || !o.daemon) {
    throw new KvmnetError({
      kind: "Unsupported",
      message: `libvirt: ${label} asks for libvirt network ${network}, but ${!o?.virsh ? "the host has no virsh" : "the system libvirtd (qemu:///system) does not answer"}`,
      hint: "install libvirt on the host (Debian/Ubuntu: apt-get install libvirt-daemon-system; Fedora/RHEL: dnf install libvirt) and start libvirtd, or leave `libvirt` unset; nothing was changed",
    });
  }
  const uuid = ownUuid(who.kind, who.name, network);
  const xml = libvirtNetworkXml(network, uuid, at);
  const n = o.network;
  if (!n) {
    guards.push({
      test: sh`! ${virsh(sh`net-info ${network}`)} >/dev/null 2>&1`,
      kind: "Conflict",
      message: `a libvirt network named ${network} appeared on the host while this change was planned`,
    });
    steps.push(defineStep(network, xml, virsh(sh`net-undefine ${network}`), "define"), startStep(network), autostartStep(network, desired.autostart));
    return { guards, steps };
  }
  if (!definedBy(who, network, n)) {
    if (!desired.adopt) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `libvirt: libvirt network ${network} already exists on the host and was not defined by ${label} (uuid ${n.uuid})`,
        hint: "pick another `libvirt.network`, or set `libvirt.adopt: true` to replace it (its definition is kept and defined again at delete)",
      });
    }
    if (n.active) {
      throw new KvmnetError({
        kind: "Conflict",
        message: `libvirt: libvirt network ${network} is active; adopting it needs it stopped`,
        hint: `run \`virsh net-destroy ${network}\` and \`virsh net-autostart --disable ${network}\` on the host first (the README's migration steps); nothing was changed`,
      });
    }
    steps.push(
      {
        description: `keep libvirt network ${network}'s own definition in ${backupPath(network)}`,
        run: sh`mkdir -p ${LIBVIRT_BACKUP_DIR} && ${virsh(sh`net-dumpxml --inactive ${network}`)} >${backupPath(network)}`,
        undo: sh`rm -f ${backupPath(network)}`,
      },
      { description: `undefine libvirt network ${network} (adopted)`, run: virsh(sh`net-undefine ${network}`), undo: virsh(sh`net-define ${backupPath(network)}`) },
      defineStep(network, xml, virsh(sh`net-undefine ${network}`), "define"),
      startStep(network),
      autostartStep(network, desired.autostart),
    );
    return { guards, steps };
  }
  if (shapeProblem(n, at)) {
    // A running network takes a new definition at its next start.
    if (n.active) steps.push(stopStep(network));
    steps.push(defineStep(network, xml, defineStep(network, n.xml, undefined, "define").run, "redefine"));
    steps.push(startStep(network));
  } else if (!n.active) {
    steps.push(startStep(network));
  }
  if (n.autostart !== desired.autostart) steps.push(autostartStep(network, desired.autostart));
  return { guards, steps };
}

/** Removal of our registration at delete (nothing when it is gone or someone else's). */
export function planLibvirtDelete(who: Owner, settings: LibvirtSettings | undefined, at: AttachPoint, snap: HostSnapshot): Step[] {
  return planLibvirt(who, undefined, at, settings, snap).steps;
}

/** The registration as the host has it, for outputs (undefined when it is not right: refresh shows it as drift). */
export function libvirtOutput(who: Owner, want: LibvirtSettings | undefined, at: AttachPoint, snap: HostSnapshot): LibvirtSettings | undefined {
  if (!want) return undefined;
  const o = observeLibvirt(snap, want.network);
  const n = o?.network;
  if (!n || problemsOf(who, { ...want, autostart: n.autostart }, at, o).length > 0) return undefined;
  return { ...want, autostart: n.autostart };
}
