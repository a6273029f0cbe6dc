/**
 * What a NatNetwork puts on the host, as text: the nft table, dnsmasq's
 * config and hosts files, and the paths they live at. Pure functions of the
 * validated inputs; every value in them passed the schema (interface names,
 * dotted quads, DNS names, MACs), and nft strings/identifiers additionally go
 * through shell.ts. The texts reach the host only inside quoted here-documents
 * (shell.ts writeFile), never through a shell's word splitting.
 */
import { createHash } from "crypto";
import { KvmnetError } from "../../errors";
import { HostSnapshot, STATE_DIR } from "../../observe";
import { nftAddr, nftIdent, nftString } from "../../shell";
import { modeForwards, NatMode, NatNetworkInputs, netmask, subnetRange } from "./schema";

/** Where the network's dnsmasq files, leases and pid file live. */
export function runDir(name: string): string {
  return `/run/kvmnet/nat/${name}`;
}
export const pidFile = (name: string) => `${runDir(name)}/dnsmasq.pid`;
export const confFile = (name: string) => `${runDir(name)}/dnsmasq.conf`;
export const dhcpHostsFile = (name: string) => `${runDir(name)}/dhcp-hosts`;
export const dnsHostsFile = (name: string) => `${runDir(name)}/hosts`;
export const tableFile = (name: string) => `${runDir(name)}/table.nft`;
export const leaseFile = (name: string) => `${runDir(name)}/leases`;
export const NAT_STATE_DIR = `${STATE_DIR}/natNetwork`;

/**
 * Where systemd runs, dnsmasq is a unit of its own: `systemctl status`,
 * the journal and restart-on-crash work as for any service. The unit file
 * lives in /run/systemd/system (systemd's runtime unit dir), so like every
 * other runtime object here it is gone after a reboot (persistence "runtime").
 * Network names are letters, digits and '_', all valid in unit names.
 */
export const dnsmasqUnit = (name: string) => `kvmnet-dnsmasq-${name}.service`;
export const dnsmasqUnitFile = (name: string) => `/run/systemd/system/${dnsmasqUnit(name)}`;

/**
 * The unit: Type=forking with dnsmasq's own pid file, so `systemctl start`
 * returns once dnsmasq has bound its sockets (or failed, the reason in the
 * journal), and the pid file is the same one the daemon mode uses.
 * ExecStart names dnsmasq without a path: systemd (≥ 239) looks it up in
 * /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin.
 */
export function dnsmasqUnitText(name: string): string {
  return [
    "[Unit]",
    `Description=dnsmasq (DHCP/DNS) for NatNetwork ${name}, managed by pulumi-kvmnet`,
    "Documentation=man:dnsmasq(8)",
    "",
    "[Service]",
    "Type=forking",
    `PIDFile=${pidFile(name)}`,
    `ExecStart=dnsmasq --conf-file=${confFile(name)}`,
    "ExecReload=/bin/kill -HUP $MAINPID",
    // SIGKILL after 10 s rather than systemd's 90: a dnsmasq reading a big hosts list
    // ignores SIGTERM that long (#14), and `systemctl stop` returns only once it is gone.
    "TimeoutStopSec=10s",
    "Restart=on-failure",
    "",
  ].join("\n");
}
/** What the last apply rendered (to choose reload vs restart, and to undo). */
export const stateFile = (name: string) => `${NAT_STATE_DIR}/${name}.json`;
/** sysctl files that set net.ipv4.ip_forward=0, recorded by the apply script (one per line). */
export const sysctlFile = (name: string) => `${NAT_STATE_DIR}/${name}.sysctl`;

/**
 * ip_forward holders: one empty file per network that needs forwarding, plus
 * `original`, the value before the first holder turned it on. Shared with any
 * kind that forwards (PortForward), so the last holder out restores it.
 */
export const FORWARD_DIR = `${STATE_DIR}/ipforward`;
export const forwardHolder = (name: string) => `${FORWARD_DIR}/natNetwork.${name}`;

export function tableName(name: string): string {
  return nftIdent(`kvmnet_nat_${name}`);
}

export interface NftRule {
  chain: "input" | "forward" | "postrouting";
  /** The rule's `comment`: how verify and refresh recognise each rule in `nft -j` output. */
  comment: string;
  body: string;
}

/**
 * The rules of a network's table (libvirt's shape). `uplink` is required for
 * the forwarding modes.
 *
 * - every mode but open accepts DHCP (udp 67) and DNS (udp/tcp 53) from the bridge;
 * - nat: forwards subnet → uplink, lets replies back (ct established), masquerades
 *   subnet → not-subnet out of the uplink except to 224.0.0.0/24 and the limited
 *   broadcast (libvirt leaves those alone: they must keep the guest's source);
 * - route: forwards both ways without masquerade;
 * - isolated: forwards nothing to or from the bridge;
 * - open: no rules (the table stays, empty, so refresh can tell it is ours and present);
 * - every mode but open lets port-forwarded traffic (a PortForward's DNAT) in to the
 *   subnet and the guests' replies out, from and to any interface, and masquerades it
 *   when it hairpins (a guest reaching another guest through a host address).
 *   nftables base chains at one hook are independent: the forward's own accept does
 *   not stop this table's rejects, so this table must let that traffic through
 *   itself — and it does not depend on which of the two was created first. In an
 *   isolated network a forward is the one way in, and guests still start nothing
 *   towards the outside (replies only: `ct direction reply`); as its guests have no
 *   route out, forwarded connections are masqueraded to the gateway address.
 */
export function tableRules(mode: NatMode, bridge: string, subnet: string, uplink: string | undefined): NftRule[] {
  if (mode === "open") return [];
  const br = nftString(bridge);
  const net = nftAddr(subnet);
  const rules: NftRule[] = [
    { chain: "input", comment: "dhcp", body: `iifname ${br} udp dport 67 accept` },
    { chain: "input", comment: "dns", body: `iifname ${br} meta l4proto { tcp, udp } th dport 53 accept` },
    { chain: "forward", comment: "bridge-local", body: `iifname ${br} oifname ${br} accept` },
    { chain: "forward", comment: "in-dnat", body: `oifname ${br} ip daddr ${net} ct status dnat ct direction original accept` },
    { chain: "forward", comment: "out-dnat-reply", body: `iifname ${br} ip saddr ${net} ct status dnat ct direction reply accept` },
  ];
  if (mode === "nat" || mode === "route") {
    if (!uplink) throw new TypeError(`mode ${mode} needs an uplink`);
    const up = nftString(uplink);
    rules.push({ chain: "forward", comment: "out", body: `iifname ${br} oifname ${up} ip saddr ${net} accept` });
    rules.push(
      mode === "nat"
        ? { chain: "forward", comment: "in-established", body: `iifname ${up} oifname ${br} ip daddr ${net} ct state established,related accept` }
        : { chain: "forward", comment: "in", body: `iifname ${up} oifname ${br} ip daddr ${net} accept` },
    );
  }
  rules.push({ chain: "forward", comment: "reject-from-bridge", body: `iifname ${br} reject` });
  rules.push({ chain: "forward", comment: "reject-to-bridge", body: `oifname ${br} reject` });
  rules.push(
    mode === "isolated"
      ? // Guests of an isolated network have no route out (no default route in their lease): forwarded connections arrive from the gateway.
        { chain: "postrouting", comment: "dnat-from-gateway", body: `oifname ${br} ip daddr ${net} ct status dnat masquerade` }
      : { chain: "postrouting", comment: "hairpin-dnat", body: `oifname ${br} ip saddr ${net} ip daddr ${net} ct status dnat masquerade` },
  );
  if (mode === "nat") {
    const up = nftString(uplink as string);
    rules.push({ chain: "postrouting", comment: "keep-multicast", body: `ip saddr ${net} ip daddr 224.0.0.0/24 return` });
    rules.push({ chain: "postrouting", comment: "keep-broadcast", body: `ip saddr ${net} ip daddr 255.255.255.255 return` });
    rules.push({ chain: "postrouting", comment: "masquerade", body: `oifname ${up} ip saddr ${net} ip daddr != ${net} masquerade` });
  }
  return rules;
}

const CHAIN_HEADERS: Record<NftRule["chain"], string> = {
  input: "type filter hook input priority filter; policy accept;",
  forward: "type filter hook forward priority filter; policy accept;",
  postrouting: "type nat hook postrouting priority srcnat; policy accept;",
};

/**
 * The nft script that makes the table exactly `rules`, as ONE transaction
 * (`nft -f` applies a file atomically): add the table (so the delete cannot
 * fail), delete it with everything in it, and declare it again. A mode change
 * therefore never shows a moment with both modes' rules, or none.
 */
export function tableScript(name: string, rules: NftRule[]): string {
  const t = tableName(name);
  const lines = [`add table inet ${t}`, `delete table inet ${t}`, `table inet ${t} {`];
  for (const chain of ["input", "forward", "postrouting"] as const) {
    const rs = rules.filter((r) => r.chain === chain);
    if (rs.length === 0) continue;
    lines.push(`  chain ${chain} {`, `    ${CHAIN_HEADERS[chain]}`);
    for (const r of rs) lines.push(`    ${r.body} comment ${nftString(`kvmnet:${r.comment}`)}`);
    lines.push("  }");
  }
  lines.push("}");
  return lines.join("\n") + "\n";
}

export interface DnsmasqFiles {
  conf: string;
  dhcpHosts: string;
  dnsHosts: string;
}

/** Does this network run a dnsmasq at all? */
export function needsDnsmasq(n: NatNetworkInputs): boolean {
  return n.dhcp !== false || n.dns.enabled;
}

/**
 * dnsmasq's files. The config is read once at start (a change restarts
 * dnsmasq); the two hosts files are re-read on SIGHUP (a change reloads it,
 * keeping its leases and pid). Options as libvirt writes them for its networks.
 */
export function dnsmasqFiles(n: NatNetworkInputs): DnsmasqFiles {
  const name = n.name;
  const conf = [
    `# NatNetwork ${name}, written by pulumi-kvmnet: edits are overwritten`,
    `pid-file=${pidFile(name)}`,
    // Bound to the bridge only: never answers on the uplink or loopback.
    "bind-interfaces",
    `interface=${n.bridgeName}`,
    "except-interface=lo",
    "strict-order",
    "no-hosts",
    `addn-hosts=${dnsHostsFile(name)}`,
    "domain-needed",
    "bogus-priv",
  ];
  if (!n.dns.enabled) conf.push("port=0");
  if (n.dns.enabled && n.dns.domain) conf.push(`domain=${n.dns.domain}`, `local=/${n.dns.domain}/`, "expand-hosts");
  if (n.dhcp !== false) {
    const d = n.dhcp;
    conf.push(
      `dhcp-range=${d.start},${d.end},${netmask(n.subnet)},${d.leaseTime}`,
      "dhcp-no-override",
      "dhcp-authoritative",
      // Every address of the subnet: static hosts can change (a reload) without touching the config.
      `dhcp-lease-max=${subnetRange(n.subnet).broadcast - subnetRange(n.subnet).network - 1}`,
      `dhcp-leasefile=${leaseFile(name)}`,
      `dhcp-hostsfile=${dhcpHostsFile(name)}`,
    );
    // An isolated network has no way out: do not hand guests a default route.
    if (n.mode === "isolated") conf.push("dhcp-option=3");
  }
  const dhcpHosts = n.dhcp === false ? [] : n.dhcp.hosts.map((h) => [h.mac, h.ip, ...(h.hostname ? [h.hostname] : [])].join(","));
  const dnsHosts = n.dns.hosts.map((h) => [h.ip, ...h.hostnames].join(" "));
  return { conf: conf.join("\n") + "\n", dhcpHosts: dhcpHosts.map((l) => l + "\n").join(""), dnsHosts: dnsHosts.map((l) => l + "\n").join("") };
}

/** The gateway address as the bridge carries it (gateway/prefix). */
export function gatewayCidr(n: NatNetworkInputs): string {
  return `${n.gateway}/${subnetRange(n.subnet).prefix}`;
}

/** The uplink a forwarding network uses: the input, else the default route's interface. */
export function resolveUplink(desired: NatNetworkInputs, snap: HostSnapshot): string | undefined {
  return desired.uplink ?? snap.defaultRouteInterface;
}

/**
 * A fixed, locally administered MAC for the bridge, derived from the network
 * name. Without one a bridge takes the lowest MAC of its ports, so plugging in
 * a guest could change the gateway's MAC under the other guests' ARP caches
 * (libvirt pins its bridges' MACs for the same reason). A reboot recreates the
 * bridge with the same one.
 */
export function bridgeMac(name: string): string {
  const h = createHash("sha256").update(`kvmnet-nat:${name}`).digest();
  return ["52", "54", "00", ...[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

/** What the last apply recorded (state file), so later plans can tell reload from restart and undo. */
export interface NatState {
  uplink?: string;
  table: string;
  files?: DnsmasqFiles;
  /** The systemd unit running dnsmasq; absent when it runs as a plain daemon (no systemd) or not at all. */
  dnsmasqUnit?: string;
}

/**
 * The state record an apply of `n` writes on this host: the table script,
 * dnsmasq's files and unit. Persisted networks restore it at boot, so the
 * first plan after a reboot finds the host as the last apply left it.
 * Throws when a forwarding mode has no uplink to forward through.
 */
export function natState(n: NatNetworkInputs, snap: HostSnapshot): NatState {
  const forwards = modeForwards(n.mode);
  const uplink = resolveUplink(n, snap);
  if (forwards && !uplink) {
    throw new KvmnetError({
      kind: "NotFound",
      message: `natNetwork ${n.name}: mode ${n.mode} needs an uplink, and the host has no default route`,
      hint: "set uplink to the interface that leads out",
    });
  }
  const table = tableScript(n.name, tableRules(n.mode, n.bridgeName, n.subnet, forwards ? uplink : undefined));
  const files = needsDnsmasq(n) ? dnsmasqFiles(n) : undefined;
  // Under systemd dnsmasq runs as a unit of its own (decided by the host, which cannot change init without a reboot).
  const unit = files && snap.systemd ? dnsmasqUnit(n.name) : undefined;
  return { uplink: forwards ? uplink : n.uplink, table, files, ...(unit ? { dnsmasqUnit: unit } : {}) };
}
