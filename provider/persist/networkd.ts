/**
 * The systemd-networkd backend: a link's `.netdev` (what it is) and
 * `.network` (its addresses, bridge, bring-up), named `05-<stem>` so ours sort
 * before an administrator's usual 10-*, because networkd applies only the
 * first file that matches a link. A VLAN netdev is only created when the
 * PARENT's .network names it (`VLAN=`), so a drop-in
 * `<parent's .network>.d/<stem>.conf` adds that line to whatever file
 * manages the parent, never overriding the admin's file (systemd.network(5):
 * `[Network] VLAN=`; drop-ins "*.network.d/*.conf"). networkd reads its files
 * at boot; nothing is reloaded live, except when a change removes a file networkd
 * configures a link from right now (withPersistFiles in persist/index.ts).
 */
import { bootAddresses, linkHeader, PersistedBridge, PersistedLink, PersistFile, writtenBy } from "./files";
import type { StackFacts } from "./stackFacts";

export const NETWORKD_DIR = "/etc/systemd/network";
/** Where systemd-networkd looks for .netdev/.network files (systemd.network(5)), first wins on equal names. */
export const NETWORKD_DIRS = [NETWORKD_DIR, "/run/systemd/network", "/usr/local/lib/systemd/network", "/usr/lib/systemd/network"];

const basename = (p: string) => p.replace(/^.*\//, "");

/**
 * The .network file systemd-networkd will apply to `parent` at boot: the one
 * it applies now (/run/systemd/netif/links), or our own file for a parent
 * that is a kvmnet Bridge or VLAN persisted through networkd (written, but
 * not loaded until boot). networkd applies the first matching file in the
 * lexical order of file names, so of the two the one that sorts first.
 */
export function networkdParentFile(parent: string, facts: StackFacts): string | undefined {
  const ours = facts.ourNetworkFiles.filter((p) => [`05-kvmnet-bridge-${parent}.network`, `05-kvmnet-vlan-${parent}.network`].includes(basename(p)));
  const candidates = [facts.networkFiles.get(parent), ...ours].filter((p): p is string => p !== undefined);
  return candidates.sort((a, b) => (basename(a) < basename(b) ? -1 : basename(a) > basename(b) ? 1 : 0))[0];
}

/** Does a .netdev networkd reads create bridge `name` (networkd ignores Bridge= for a bridge it does not create)? */
export const networkdCreatesBridge = (facts: StackFacts, name: string) => facts.netdevs.some((n) => n.name === name && n.kind === "bridge");

/** The networkd files of a link; a VLAN's drop-in goes beside `parentNetworkFile`. Pure. */
export function networkdLinkFiles(l: PersistedLink, parentNetworkFile?: string): PersistFile[] {
  const { name, mtu, vlan, tap } = l;
  const h = linkHeader(l.owner);
  const stem = `${NETWORKD_DIR}/05-${l.stem}`;
  const netdev = [
    h,
    "[NetDev]",
    `Name=${name}`,
    `Kind=${vlan ? "vlan" : "tap"}`,
    ...(vlan && mtu !== undefined ? [`MTUBytes=${mtu}`] : []),
    "",
    ...(vlan
      ? [
          "[VLAN]",
          `Id=${vlan.id}`,
          // systemd ≥ 248; the kernel's default is 802.1Q.
          ...(vlan.protocol === "802.1ad" ? ["Protocol=802.1ad"] : []),
        ]
      : []),
    ...(tap
      ? [
          "[Tap]",
          ...(tap.owner !== undefined ? [`User=${tap.owner}`] : []),
          ...(tap.group !== undefined ? [`Group=${tap.group}`] : []),
          `MultiQueue=${tap.multiQueue ? "yes" : "no"}`,
          `VNetHeader=${tap.vnetHdr ? "yes" : "no"}`,
        ]
      : []),
  ];
  const network = [
    h,
    "[Match]",
    `Name=${name}`,
    "",
    "[Network]",
    // As live: addresses and the bridge port whether or not there is a carrier (a VLAN's parent may
    // have none; a tap has none until a process opens it).
    "ConfigureWithoutCarrier=yes",
    ...(tap ? ["LinkLocalAddressing=no"] : []),
    ...l.addresses.map((a) => `Address=${a}`),
    ...(l.bridge !== undefined ? [`Bridge=${l.bridge}`] : []),
    // A tap's mtu goes in [Link], not the .netdev: networkd makes a tap with the tun ioctls, and a
    // .netdev's MTUBytes= went unapplied (the lab's reboot proof: mtu 1500 after boot).
    ...(tap && mtu !== undefined ? ["", "[Link]", `MTUBytes=${mtu}`] : []),
  ];
  const files: PersistFile[] = [
    { path: `${stem}.netdev`, content: netdev.join("\n") + "\n" },
    { path: `${stem}.network`, content: network.join("\n") + "\n" },
  ];
  if (vlan && parentNetworkFile !== undefined) {
    files.push({ path: `${NETWORKD_DIR}/${basename(parentNetworkFile)}.d/${l.stem}.conf`, content: [h, "[Network]", `VLAN=${name}`].join("\n") + "\n" });
  }
  return files;
}

/** The networkd files of a bridge: `.netdev` (the bridge and its options), `.network` (its addresses, routes), one `-port-<port>.network` per port (`Bridge=`). Pure. */
export function networkdBridgeFiles(b: PersistedBridge): PersistFile[] {
  const o = b.options;
  const header = writtenBy(b.owner);
  const sec = (cs: number) => `${(cs / 100).toString()}s`;
  const netdev = [
    header,
    "[NetDev]",
    `Name=${b.name}`,
    "Kind=bridge",
    `MACAddress=${b.mac}`,
    ...(b.mtu !== undefined ? [`MTUBytes=${b.mtu}`] : []),
    "",
    "[Bridge]",
    `STP=${b.stp ? "yes" : "no"}`,
    ...(o.forward_delay !== undefined ? [`ForwardDelaySec=${sec(o.forward_delay)}`] : []),
    ...(o.hello_time !== undefined ? [`HelloTimeSec=${sec(o.hello_time)}`] : []),
    ...(o.max_age !== undefined ? [`MaxAgeSec=${sec(o.max_age)}`] : []),
    ...(o.ageing_time !== undefined ? [`AgeingTimeSec=${sec(o.ageing_time)}`] : []),
    ...(o.priority !== undefined ? [`Priority=${o.priority}`] : []),
    ...(o.vlan_filtering !== undefined ? [`VLANFiltering=${o.vlan_filtering ? "yes" : "no"}`] : []),
  ];
  const network = [
    header,
    "[Match]",
    `Name=${b.name}`,
    "",
    "[Network]",
    // A bridge has no carrier until a port is up; its addresses are configured anyway.
    "ConfigureWithoutCarrier=yes",
    ...bootAddresses(b).map((a) => `Address=${a}`),
    // Routes a taken-over uplink had (its default route above all).
    ...b.takenOver.routes.flatMap((r) => [
      "",
      "[Route]",
      ...(r.dst !== "default" ? [`Destination=${r.dst}`] : []),
      ...(r.gateway ? [`Gateway=${r.gateway}`] : []),
      ...(r.metric !== undefined ? [`Metric=${r.metric}`] : []),
    ]),
  ];
  const base = `${NETWORKD_DIR}/05-${b.stem}`;
  return [
    { path: `${base}.netdev`, content: netdev.join("\n") },
    { path: `${base}.network`, content: network.join("\n") },
    ...b.ports.map(({ name: p }) => ({
      path: `${base}-port-${p}.network`,
      content: [header, "[Match]", `Name=${p}`, "", "[Network]", `Bridge=${b.name}`].join("\n"),
    })),
  ];
}
