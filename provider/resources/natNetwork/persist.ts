/**
 * A NatNetwork's boot-time configuration: systemd units of our own, whatever
 * network stack the host runs (issue 6). Like libvirt's virbr0, the network's
 * bridge is not handed to the host's stack: the stack would own an interface
 * whose address, MAC and dnsmasq we manage, and an `ifreload`, `nmcli
 * connection reload` or networkd restart could reconfigure it under the guests.
 * One boot unit per network recreates everything, on every backend alike.
 *
 * Files (every one listed in the object's manifest, removed on delete):
 *   /etc/kvmnet/nat-<name>.up.sh          what the boot unit runs (below)
 *   /etc/kvmnet/nat-<name>.table.nft      the nft table, as the live apply loads it
 *   /etc/kvmnet/nat-<name>.state.json     the live state record, restored at boot
 *   /etc/kvmnet/nat-<name>.dnsmasq.conf   dnsmasq's files (only when it runs)
 *                         .dhcp-hosts .hosts
 *   /etc/systemd/system/kvmnet-nat-<name>.service       oneshot, RemainAfterExit
 *   /etc/systemd/system/kvmnet-dnsmasq-<name>.service   the live unit, After= the above
 *   /etc/systemd/system/multi-user.target.wants/…       both enabled (`systemctl enable`'s links)
 *   /etc/systemd/system/nftables.service.d/kvmnet-nat-<name>.conf
 *   /etc/sysctl.d/90-kvmnet-nat-<name>.conf             nat/route modes: ip_forward=1
 *
 * The copies sit directly in /etc/kvmnet, not in a directory per network: the
 * persistence core removes files, not directories, and prunes /etc/kvmnet
 * itself once the last manifest is gone.
 *
 * Boot order: network.target (the host's stack has configured its NICs), then
 * kvmnet-nat-<name> (run dir and dnsmasq files, bridge with its MAC, MTU and
 * gateway address, nft table, ip_forward hold, state record), then
 * kvmnet-dnsmasq-<name>; both before libvirt starts guests.
 *
 * nftables.service flushes the whole ruleset when it starts or reloads
 * (Debian's /etc/nftables.conf begins with `flush ruleset`). A drop-in adds
 * our table back right after it (ExecStartPost, and ExecReload after the
 * service's own reload). A `PartOf=nftables.service` boot unit would act only
 * while that unit is active, i.e. not between a live create and the next
 * reboot (the core writes files; nothing starts the unit), and PartOf does not
 * propagate reloads at all.
 *
 * The dnsmasq unit is ordered After= the boot unit but neither Requires= nor
 * Wants= it: a live (re)start of dnsmasq during an apply would then start the
 * boot unit, whose persisted copies are one step behind the live state until
 * the core writes them at the end of that same apply.
 */
import { HostSnapshot } from "../../observe";
import type { Backend } from "../../persist";
import { ETC_DIR, ownedFiles, PersistFile, PersistSet, writtenBy } from "../../persist/files";
import { enableLink, nftablesDropIn, nftablesDropInPath, requireSystemd, SYSTEMD_DIR, unitFiles } from "../../persist/systemd";
import { joinLines, literal, Script, sh } from "../../shell";
import {
  bridgeMac,
  confFile,
  dhcpHostsFile,
  dnsHostsFile,
  dnsmasqUnit,
  dnsmasqUnitText,
  FORWARD_DIR,
  forwardHolder,
  gatewayCidr,
  NAT_STATE_DIR,
  natState,
  needsDnsmasq,
  runDir,
  stateFile,
  tableFile,
  tableName,
} from "./files";
import { modeForwards, NatNetworkInputs } from "./schema";

export const SYSCTL_DIR = "/etc/sysctl.d";

/** Paths of one network's persisted files. */
export function natPersistPaths(name: string) {
  const base = `${ETC_DIR}/nat-${name}`;
  return {
    up: `${base}.up.sh`,
    table: `${base}.table.nft`,
    state: `${base}.state.json`,
    conf: `${base}.dnsmasq.conf`,
    dhcpHosts: `${base}.dhcp-hosts`,
    dnsHosts: `${base}.hosts`,
    bootUnit: `${SYSTEMD_DIR}/${natBootUnit(name)}`,
    dnsmasqUnit: `${SYSTEMD_DIR}/${dnsmasqUnit(name)}`,
    nftDropIn: nftablesDropInPath(`nat-${name}`),
    sysctl: `${SYSCTL_DIR}/90-kvmnet-nat-${name}.conf`,
  };
}

/** The network's boot unit. */
export const natBootUnit = (name: string) => `kvmnet-nat-${name}.service`;
/** The dnsmasq unit as persisted in /etc (it shadows the runtime copy in /run/systemd/system). */
export const persistentDnsmasqUnitFile = (name: string) => `${SYSTEMD_DIR}/${dnsmasqUnit(name)}`;
/** The persisted dnsmasq unit: the runtime one, ordered after the boot unit, enabled. */
export function persistentDnsmasqUnitText(name: string): string {
  return dnsmasqUnitText(name)
    .replace("[Service]", `After=${natBootUnit(name)}\n\n[Service]`)
    .replace(/\n*$/, "\n\n[Install]\nWantedBy=multi-user.target\n");
}

/**
 * The value of net.ipv4.ip_forward the host's own sysctl configuration gives,
 * our files left out (kernel default 0): what to restore when the last network
 * needing forwarding goes. `systemd-analyze cat-config` prints the files in the
 * order systemd-sysctl applies them, each after a `# /path` line; the last
 * assignment wins.
 */
export const FORWARD_WITHOUT_OURS_AWK =
  '/^# \\/.*\\.conf$/ { ours = index($0, "kvmnet-") > 0; next } ' +
  '!ours && /^[[:space:]]*-?net[.\\/]ipv4[.\\/]ip_forward[[:space:]]*=/ { v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]*$/, "", v) } ' +
  'END { print (v == "" ? 0 : v) }';

/**
 * What kvmnet-nat-<name>.service runs: the live create's steps, made
 * idempotent (it may run again by hand), from the persisted copies. Every
 * value goes through shell.ts.
 */
export function natUpScript(n: NatNetworkInputs): string {
  const name = n.name;
  const br = n.bridgeName;
  const p = natPersistPaths(name);
  const original = `${FORWARD_DIR}/original`;
  const lines: (Script | false)[] = [
    literal("#!/bin/sh"),
    literal("# Written by pulumi-kvmnet for a NatNetwork: run at boot by its kvmnet-nat-*.service. Edits here are reported as drift and replaced."),
    literal("set -e"),
    literal("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    // World-traversable: dnsmasq re-reads its hosts files as nobody.
    sh`for d in /run/kvmnet /run/kvmnet/nat ${runDir(name)}; do [ -d "$d" ] || mkdir -m 0755 "$d"; done`,
    needsDnsmasq(n) && sh`cp ${p.conf} ${confFile(name)} && cp ${p.dhcpHosts} ${dhcpHostsFile(name)} && cp ${p.dnsHosts} ${dnsHostsFile(name)}`,
    sh`ip link show dev ${br} >/dev/null 2>&1 || ip link add name ${br} address ${bridgeMac(name)} type bridge`,
    sh`[ -d /sys/class/net/${br}/bridge ] || { echo ${`kvmnet: ${br} exists and is not a bridge`} >&2; exit 1; }`,
    n.mtu !== undefined && sh`ip link set dev ${br} mtu ${n.mtu}`,
    sh`ip addr replace ${gatewayCidr(n)} dev ${br}`,
    sh`ip link set dev ${br} up`,
    sh`cp ${p.table} ${tableFile(name)} && nft -f ${tableFile(name)}`,
    ...(modeForwards(n.mode)
      ? [
          // Held as the live apply holds it, so delete restores what the host's configuration says.
          sh`mkdir -p ${FORWARD_DIR}`,
          sh`if [ ! -f ${original} ]; then v=$(systemd-analyze cat-config sysctl.d 2>/dev/null | awk ${FORWARD_WITHOUT_OURS_AWK}); case "$v" in 0|1) ;; *) v=0 ;; esac; echo "$v" > ${original}; fi`,
          sh`: > ${forwardHolder(name)} && echo 1 > /proc/sys/net/ipv4/ip_forward`,
        ]
      : []),
    // Last: the state record marks the network as ours and complete.
    sh`mkdir -p ${NAT_STATE_DIR} && cp ${p.state} ${stateFile(name)}`,
  ];
  return joinLines(lines).text + "\n";
}

/** The files network `n` persists through (any backend but runtime: they are systemd units of our own). */
export function natPersist(n: NatNetworkInputs, backend: Exclude<Backend, "runtime">, snap: HostSnapshot): PersistSet {
  requireSystemd(backend, snap, `natNetwork ${n.name}`);
  const p = natPersistPaths(n.name);
  const state = natState(n, snap);
  const files: PersistFile[] = [
    { path: p.up, content: natUpScript(n) },
    { path: p.table, content: state.table },
    { path: p.state, content: JSON.stringify(state) },
  ];
  if (state.files) {
    files.push({ path: p.conf, content: state.files.conf }, { path: p.dhcpHosts, content: state.files.dhcpHosts }, { path: p.dnsHosts, content: state.files.dnsHosts });
  }
  files.push(
    ...unitFiles({ unit: natBootUnit(n.name), description: `NatNetwork ${n.name}: bridge ${n.bridgeName}, nft table inet ${tableName(n.name)}`, execStart: `/bin/sh ${p.up}` }),
  );
  if (state.files) files.push({ path: p.dnsmasqUnit, content: persistentDnsmasqUnitText(n.name) }, enableLink(dnsmasqUnit(n.name)));
  files.push(nftablesDropIn(`nat-${n.name}`, p.table));
  if (modeForwards(n.mode)) {
    files.push({
      path: p.sysctl,
      content: [writtenBy(`NatNetwork ${n.name}`), `# mode ${n.mode} forwards between ${n.bridgeName} and the uplink.`, "net.ipv4.ip_forward = 1"].join("\n"),
    });
  }
  return { files };
}

/** Does the object's manifest list `path` as present on the host? */
export function owns(snap: HostSnapshot, kind: string, name: string, path: string): boolean {
  return ownedFiles(snap, kind, name).some((f) => f.path === path && f.state !== "missing");
}
