/**
 * The kind's own observe section (KindSpec.observeExtra): the host's PCI view
 * from sysfs in the same round trip as the standard sections, and the pure
 * queries the planner asks of it.
 *
 * The section cannot know which device a resource wants (the script is the
 * same for every PciPassthrough), so it lists every PCI device: a few hundred
 * lines on a big host, read with shell builtins (`read`) where it can.
 *
 * Lines (space-separated; the last field of `dev` is the rest of the line):
 *   dev <address> <vendor> <device> <class> <driver|-> <iommu group|-> <driver_override>
 *   iommu <number of /sys/kernel/iommu_groups entries>
 *   vfio <name under /dev/vfio>
 *   net <ifname> <realpath of /sys/class/net/<ifname>>
 *   blk <name> <maj:min> <realpath of /sys/class/block/<name>>
 *   slave <holder> <slave>            (dm-*, md*: the block devices they are built on)
 *   mnt <maj:min> <source resolved by readlink -f> <mount point, \040-escaped>
 *   swap <source resolved by readlink -f>
 * A network interface or block device "is on" a PCI device when its sysfs path
 * runs through the device's directory (virtio NICs sit one level deeper, under
 * …/0000:00:02.0/virtio0/net/eth0, so …/net/* of the device alone would miss them).
 */
import { KvmnetError } from "../../errors";
import type { HostSnapshot } from "../../observe";
import { section } from "../../observe";
import { literal } from "../../shell";

export const PCI_SECTION = "pci";

export const pciObserveSection = section(
  PCI_SECTION,
  literal(
    [
      'for d in /sys/bus/pci/devices/*; do [ -e "$d/vendor" ] || continue;',
      ' v=; p=; c=; o=; read -r v < "$d/vendor"; read -r p < "$d/device"; read -r c < "$d/class";',
      ' read -r o < "$d/driver_override" 2>/dev/null || o="(null)";',
      ' drv=$(readlink "$d/driver" 2>/dev/null); drv=${drv##*/}; grp=$(readlink "$d/iommu_group" 2>/dev/null); grp=${grp##*/};',
      ' printf \'dev %s %s %s %s %s %s %s\\n\' "${d##*/}" "$v" "$p" "$c" "${drv:--}" "${grp:--}" "${o:-(null)}"; done',
      'n=0; for g in /sys/kernel/iommu_groups/*; do [ -e "$g" ] && n=$((n+1)); done; echo "iommu $n"',
      'for f in /dev/vfio/*; do [ -e "$f" ] && echo "vfio ${f##*/}"; done',
      'for f in /sys/class/net/*; do [ -e "$f" ] && echo "net ${f##*/} $(readlink -f "$f")"; done',
      'for b in /sys/class/block/*; do [ -e "$b" ] || continue; m=; read -r m < "$b/dev";',
      ' echo "blk ${b##*/} ${m:--} $(readlink -f "$b")";',
      ' for s in "$b"/slaves/*; do [ -e "$s" ] && echo "slave ${b##*/} ${s##*/}"; done; done',
      // mountinfo: field 3 is maj:min, the mount point is field 5, the source follows " - <fstype> ".
      "while read -r _ _ mm _ mp rest; do src=${rest#* - }; src=${src#* }; src=${src%% *};",
      ' case "$src" in /dev/*) src=$(readlink -f "$src" 2>/dev/null || echo "$src");; *) src=-;; esac;',
      ' echo "mnt $mm $src $mp"; done < /proc/self/mountinfo',
      'if [ -r /proc/swaps ]; then tail -n +2 /proc/swaps | while read -r s _; do echo "swap $(readlink -f "$s" 2>/dev/null || echo "$s")"; done; fi',
      "true",
    ].join("\n"),
  ),
);

export interface PciDevice {
  address: string;
  /** Vendor id, 4 lower-case hex digits ("8086"). */
  vendorId: string;
  deviceId: string;
  /** Class code, 6 hex digits ("020000"; "0604xx" is a PCI-to-PCI bridge). */
  classCode: string;
  /** Bound driver, undefined when none. */
  driver?: string;
  iommuGroup?: number;
  /** driver_override, undefined when unset ("(null)" in sysfs). */
  driverOverride?: string;
}

export interface PciView {
  devices: Map<string, PciDevice>;
  /** Entries under /sys/kernel/iommu_groups: 0 means the IOMMU is off (or absent). */
  iommuGroupCount: number;
  /** Names under /dev/vfio ("vfio" and one per group bound to vfio-pci). */
  vfioNodes: Set<string>;
  nets: { name: string; path: string }[];
  blocks: { name: string; majMin: string; path: string }[];
  /** holder → the block devices it is built on (dm-0 → [vda2]). */
  slaves: Map<string, string[]>;
  mounts: { majMin: string; source?: string; mountPoint: string }[];
  swaps: string[];
}

const hex = (s: string | undefined, digits: number) => (s ?? "").replace(/^0x/i, "").toLowerCase().padStart(digits, "0");

/** Parse the kind's section out of a snapshot. */
export function parsePciView(snap: HostSnapshot): PciView {
  const s = snap.sections.get(PCI_SECTION);
  if (!s) throw new KvmnetError({ kind: "Bug", message: `observe output lacks section ${PCI_SECTION}` });
  const view: PciView = { devices: new Map(), iommuGroupCount: 0, vfioNodes: new Set(), nets: [], blocks: [], slaves: new Map(), mounts: [], swaps: [] };
  for (const line of s.text.split("\n")) {
    const f = line.trim().split(" ");
    switch (f[0]) {
      case "dev": {
        if (f.length < 8) break;
        const override = f.slice(7).join(" ");
        view.devices.set(f[1], {
          address: f[1],
          vendorId: hex(f[2], 4),
          deviceId: hex(f[3], 4),
          classCode: hex(f[4], 6),
          driver: f[5] === "-" ? undefined : f[5],
          iommuGroup: /^\d+$/.test(f[6]) ? Number(f[6]) : undefined,
          driverOverride: override === "(null)" || override === "" ? undefined : override,
        });
        break;
      }
      case "iommu":
        view.iommuGroupCount = Number(f[1]) || 0;
        break;
      case "vfio":
        if (f[1]) view.vfioNodes.add(f[1]);
        break;
      case "net":
        if (f[1] && f[2]) view.nets.push({ name: f[1], path: f[2] });
        break;
      case "blk":
        if (f[1] && f[3]) view.blocks.push({ name: f[1], majMin: f[2], path: f[3] });
        break;
      case "slave":
        if (f[1] && f[2]) view.slaves.set(f[1], [...(view.slaves.get(f[1]) ?? []), f[2]]);
        break;
      case "mnt":
        if (f[1] && f[3]) view.mounts.push({ majMin: f[1], source: f[2] === "-" ? undefined : f[2], mountPoint: f.slice(3).join(" ").replace(/\\040/g, " ") });
        break;
      case "swap":
        if (f[1]) view.swaps.push(f[1]);
        break;
    }
  }
  return view;
}

/** A PCI-to-PCI bridge (class 0x0604): not an endpoint, never bound or counted for viability. */
export function isBridge(d: PciDevice): boolean {
  return d.classCode.startsWith("0604");
}

/** Every device in IOMMU group `group`, sorted by address. */
export function groupMembers(view: PciView, group: number): PciDevice[] {
  return [...view.devices.values()].filter((d) => d.iommuGroup === group).sort((a, b) => a.address.localeCompare(b.address));
}

const runsThrough = (sysPath: string, address: string) => sysPath.includes(`/${address}/`);

/** Network interfaces whose sysfs path runs through the device. */
export function interfacesOn(view: PciView, address: string): string[] {
  return view.nets
    .filter((n) => runsThrough(n.path, address))
    .map((n) => n.name)
    .sort();
}

/**
 * How the block devices on a PCI device are in use, e.g. "vda mounted at /",
 * "vda2 (through dm-0) mounted at /home", "vda3 used as swap". Holders
 * (device-mapper, md) are followed, so an LVM volume on the disk counts.
 */
export function diskUsesOn(view: PciView, address: string): string[] {
  const byName = new Map(view.blocks.map((b) => [b.name, b]));
  const holders = new Map<string, string[]>();
  for (const [holder, slaves] of view.slaves) for (const sl of slaves) holders.set(sl, [...(holders.get(sl) ?? []), holder]);
  const directUses = (name: string): string[] => {
    const b = byName.get(name);
    const uses: string[] = [];
    for (const m of view.mounts) {
      if ((b && m.majMin === b.majMin) || m.source === `/dev/${name}`) uses.push(`mounted at ${m.mountPoint}`);
    }
    if (view.swaps.includes(`/dev/${name}`)) uses.push("used as swap");
    return [...new Set(uses)];
  };
  const out: string[] = [];
  const visit = (name: string, via: string[], seen: Set<string>) => {
    if (seen.has(name)) return;
    seen.add(name);
    const through = via.length > 1 ? ` (through ${via.slice(1).join(", ")})` : "";
    for (const u of directUses(name)) out.push(`${via[0]}${through} ${u}`);
    for (const h of holders.get(name) ?? []) visit(h, [...via, h], seen);
  };
  for (const b of view.blocks.filter((x) => runsThrough(x.path, address)).sort((x, y) => x.name.localeCompare(y.name))) {
    visit(b.name, [b.name], new Set());
  }
  return [...new Set(out)];
}
