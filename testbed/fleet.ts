/**
 * Tier-2 sandbox fleet: N real SSH hosts on this machine, each a network namespace
 * plus a private mount namespace with its own sshd, reachable from the root namespace
 * over a management veth. See docs/TESTING.md (tier 2 and "Safety rules") for the rules
 * this file enforces; in short:
 *
 * - The root namespace gets nothing but one veth end per host carrying the .1 of a /30
 *   out of 198.18.0.0/16 (plus the connected route the kernel adds for it) and no IPv6
 *   link-local (addrgenmode none). No other routes, NAT, sysctls or addresses there.
 * - Each host has an empty tmpfs over /sys/bus/pci (with empty devices/ and drivers/
 *   tmpfs mounts inside), /sys/kernel/iommu_groups and /sys/devices/pci*, so the
 *   machine's own NIC and disk are unreachable to PCI-passthrough code, and so are
 *   /sys/bus/pci/{rescan,drivers_probe}.
 * - Each host's /etc, /var and /run are copy-on-write overlays whose upper layer
 *   lives in the fleet's temp dir, /root is an empty tmpfs (no dotfiles of the machine
 *   run in sandbox sessions), and /run/kvmnet, /etc/kvmnet start as empty tmpfs:
 *   whatever the provider writes (state, locks, sysctl.d, networkd units, leases) stays
 *   private to that host and goes away with the fleet. The machine's files are not
 *   touched (not even mountpoint dirs: they are created inside the overlays).
 * - Everything is recorded in /run/kvmnet-sandbox/fleets/<runid>.json BEFORE it is
 *   made, so stop(), a failed start, the exit/signal handlers, or cleanupStale() after
 *   a SIGKILL can remove exactly what a fleet made. Processes are killed by pid (checked
 *   against their start time) or by membership of the fleet's namespaces, never by name
 *   (testbed/processes.ts).
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import type { ExecResult, PidRef } from "./processes";
import {
  claimAbandoned,
  isAlive,
  onOwnerExit,
  pidRef,
  pidsInNetns,
  readJson,
  RecordDir,
  run,
  runSync,
  spawnTracked,
  stopProcesses,
  withReapLock,
  writeJsonAtomic,
} from "./processes";

export type { ExecResult };

// ---------------------------------------------------------------------------------
// Public API

/** One sandbox host: an sshd in its own net + mount namespace. */
export interface SandboxHost {
  /** 1-based position in the fleet. */
  index: number;
  /** Network namespace name, "kvs-<runid>-<i>". */
  netns: string;
  /** Management address (the .2 of the host's /30), reachable from the root namespace. */
  address: string;
  port: number;
  user: string;
  /** Client private key text (OpenSSH format); the key is fresh per run. */
  privateKey: string;
  privateKeyPath: string;
  /** Client public key line, as in authorized_keys. */
  publicKeyLine: string;
  /** Host public key line, "ssh-ed25519 AAAA... <comment>" (one host key per fleet). */
  hostKeyLine: string;
  /** "SHA256:..." exactly as `ssh-keygen -lf` prints it. */
  hostKeyFingerprint: string;
  /** A known_hosts file holding this host's key for its address. */
  knownHostsPath: string;
  sshdPid: number;
  sshdLogPath: string;
  /** Uplink NIC inside the host ("eth0"): carries the default route, like a real KVM host's. */
  uplink: string;
  /** "198.19.0.(10+i)", on the upstream LAN 198.19.0.0/24. */
  uplinkAddress: string;
  /**
   * Run a shell command directly inside this host's net+mount(+uts) namespaces
   * (`nsenter -t sshdPid -n -m -u`), NOT over SSH: for test setup and assertions.
   * Rejects on non-zero exit unless `opts.allowFail`.
   */
  exec(cmd: string, opts?: ExecOptions): Promise<ExecResult>;
  /** Count of "Accepted publickey" lines in the sshd log so far. */
  acceptedConnections(): number;
  /** Count of "Starting session:" lines in the sshd log so far: one per exec channel (round trip). */
  sessionsStarted(): number;
}

export interface ExecOptions {
  allowFail?: boolean;
  /** Default 60 s; the command is killed (SIGKILL) when it runs longer. */
  timeoutMs?: number;
}

export interface Fleet {
  runId: string;
  /** Temp dir holding keys, sshd configs, logs and overlay upper layers: /tmp/kvs-<runid>. */
  dir: string;
  hosts: SandboxHost[];
  /** The LAN/internet router every host's uplink is bridged to (bridge lan0, 198.19.0.1/24). */
  upstream: { netns: string; address: string; exec: SandboxHost["exec"] };
  /**
   * Make a "guest" namespace with a veth whose peer is put into `host`'s netns under
   * `peerName` (set up, NOT enslaved: the caller enslaves it to the bridge it tests,
   * exactly like a VM's tap). Cleaned by stop().
   */
  addGuest(host: SandboxHost, peerName: string): Promise<{ netns: string; ifname: string; exec: SandboxHost["exec"] }>;
  /**
   * Stop everything this fleet made: processes (sshd pids, then any pid still in its
   * namespaces), namespaces, root-ns veth ends, slot dirs, the temp dir. Idempotent.
   */
  stop(): Promise<void>;
}

export interface StartFleetOptions {
  /**
   * Extra sshd_config text. sshd keeps the FIRST value it reads for a keyword, so the
   * lines before the first `Match` go at the top (they override the harness defaults)
   * and everything from the first `Match` on goes at the end.
   */
  sshdExtraConfig?: string;
  /** Keep /tmp/kvs-<runid> (keys, logs, overlay upper dirs) after stop(), for debugging. */
  keepDir?: boolean;
}

/** An error from startFleet carries the run id, so a test can prove the cleanup. */
export type StartFleetError = Error & { runId?: string };

// ---------------------------------------------------------------------------------
// Constants and naming

const STATE_ROOT = "/run/kvmnet-sandbox";
const SLOTS_DIR = `${STATE_ROOT}/slots`;
const FLEETS_DIR = `${STATE_ROOT}/fleets`;
const REAP_LOCK = `${STATE_ROOT}/reap.lock`;
const SSHD = "/usr/sbin/sshd";
/**
 * Management /30s come from 198.18.0.0/16 only (2^14 slots): the other half of the
 * 198.18.0.0/15 benchmarking block holds the upstream LAN 198.19.0.0/24, and a /30
 * inside it would collide with the uplink subnet inside the host.
 */
const SLOT_COUNT = 1 << 14;
const MGMT_BASE = 198 * 2 ** 24 + 18 * 2 ** 16;
const UPSTREAM_ADDRESS = "198.19.0.1";
const MAX_HOSTS = 200; // uplinks are 198.19.0.(10+i)/24
/** Copy-on-write per host: what the provider writes there stays in the host. */
const OVERLAID_DIRS = ["etc", "var", "run"] as const;
const READY_TIMEOUT_MS = 10_000;

/** Root-ns veth end of host i: "kvs<runid><i>" (≤ 12 chars). */
const rootLinkName = (runId: string, i: number) => `kvs${runId}${i}`;
const hostNetns = (runId: string, i: number) => `kvs-${runId}-${i}`;
const upstreamNetns = (runId: string) => `kvs-${runId}-up`;
const guestNetns = (runId: string, k: number) => `kvs-${runId}-g${k}`;
const RUN_ID_RE = /^[0-9a-f]{6}$/;
const OUR_NETNS_RE = /^kvs-([0-9a-f]{6})-(?:\d+|up|g\d+)$/;
const OUR_ROOT_LINK_RE = /^kvs([0-9a-f]{6})\d+$/;

function ipFromInt(n: number): string {
  return [Math.floor(n / 2 ** 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** Single-quote a value for POSIX sh (values here are ours, but quote anyway). */
function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------------------------
// Running commands

/** `ip [-n ns] -batch -`: one process for several iproute2 commands (each spawn costs ~20 ms here). */
function ipBatch(netns: string | undefined, lines: string[], what: string): Promise<ExecResult> {
  const args = netns ? ["-n", netns, "-batch", "-"] : ["-batch", "-"];
  return run("ip", args, { input: lines.join("\n") + "\n", what });
}

function makeExec(prefix: string[], what: string): SandboxHost["exec"] {
  return (cmd, opts = {}) => run(prefix[0], [...prefix.slice(1), "sh", "-c", cmd], { ...opts, what });
}

// Namespace and link listings straight from the filesystem: no process per call.

function existingNetns(): Set<string> {
  try {
    return new Set(fs.readdirSync("/run/netns"));
  } catch {
    return new Set();
  }
}

/** Links of the root namespace (node's /sys was mounted there). */
function rootLinkNames(): Set<string> {
  try {
    return new Set(fs.readdirSync("/sys/class/net"));
  } catch {
    return new Set();
  }
}

// ---------------------------------------------------------------------------------
// The on-disk record: what a fleet made, written BEFORE each thing is made.

interface FleetRecord {
  runId: string;
  owner: PidRef;
  dir: string;
  keepDir: boolean;
  created: string;
  netns: string[];
  rootLinks: string[];
  slots: number[];
  pids: PidRef[];
  hosts: { index: number; netns: string; address: string }[];
}

interface SlotOwner {
  runId: string;
  pid: number;
  start: string;
  rootLink: string;
}

const fleets = new RecordDir<FleetRecord>(FLEETS_DIR, { idOf: (r) => r.runId, valid: (r) => RUN_ID_RE.test(r.runId), idBytes: 3, what: "sandbox" });

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Reserve a run id by creating its record file exclusively (parallel workers never share one). */
function reserveRunId(keepDir: boolean): FleetRecord {
  fs.mkdirSync(SLOTS_DIR, { recursive: true, mode: 0o755 });
  return fleets.reserve((runId) => {
    const rec: FleetRecord = {
      runId,
      owner: pidRef(process.pid),
      dir: `/tmp/kvs-${runId}`,
      keepDir,
      created: new Date().toISOString(),
      netns: [],
      rootLinks: [],
      slots: [],
      pids: [],
      hosts: [],
    };
    return fs.existsSync(rec.dir) ? undefined : rec;
  });
}

/**
 * Claim a free /30 by atomic mkdir of slots/<k>. Scanning starts at a random slot so
 * parallel workers rarely contend. Slots of dead owners are skipped here and reclaimed
 * by cleanupStale() (which also deletes their veth), never stolen in place.
 */
function allocateSlot(rec: FleetRecord, rootLink: string): number {
  const first = crypto.randomInt(SLOT_COUNT);
  for (let n = 0; n < SLOT_COUNT; n++) {
    const k = (first + n) % SLOT_COUNT;
    if (k === 0 || k === SLOT_COUNT - 1) continue; // keep clear of 198.18.0.0 and 198.18.255.255
    const dir = `${SLOTS_DIR}/${k}`;
    try {
      fs.mkdirSync(dir, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") continue;
      throw err;
    }
    const owner: SlotOwner = { runId: rec.runId, pid: rec.owner.pid, start: rec.owner.start, rootLink };
    writeJsonAtomic(`${dir}/owner.json`, owner);
    rec.slots.push(k);
    return k;
  }
  throw new Error("sandbox: no free management /30 left in 198.18.0.0/16");
}

// ---------------------------------------------------------------------------------
// Teardown: synchronous, shared by stop(), failed starts, the exit/signal handlers and
// cleanupStale().

/** Stop the fleet's processes by pid (grace 0.5 s), and at once whatever else runs in its namespaces. */
function killAll(pids: PidRef[], netnsNames: string[]): void {
  // Whatever runs in our namespaces is ours: sshd sessions, a dnsmasq a test started, ...
  // (the namespace deletion after this still unnames what outlives the kill).
  stopProcesses(pids, { graceMs: 500, strays: () => pidsInNetns(netnsNames) });
}

function teardownRecord(rec: FleetRecord): void {
  const present = existingNetns();
  const ours = rec.netns.filter((ns) => present.has(ns));
  killAll(rec.pids, ours);
  // Root ends are deleted explicitly (netns teardown in the kernel is asynchronous and
  // they must be gone when stop() returns); -force keeps the batch going past errors.
  const links = rootLinkNames();
  const batch = [...rec.rootLinks.filter((l) => links.has(l)).map((l) => `link del dev ${l}`), ...ours.map((ns) => `netns del ${ns}`)];
  if (batch.length > 0) runSync("ip", ["-force", "-batch", "-"], batch.join("\n") + "\n");
  for (const k of rec.slots) {
    const owner = readJson<SlotOwner>(`${SLOTS_DIR}/${k}/owner.json`);
    if (owner?.runId === rec.runId) fs.rmSync(`${SLOTS_DIR}/${k}`, { recursive: true, force: true });
  }
  if (!rec.keepDir && rec.dir === `/tmp/kvs-${rec.runId}`) fs.rmSync(rec.dir, { recursive: true, force: true });
  fleets.remove(rec.runId);
}

// Live fleets of this process: the exit/signal handlers stop them.
interface LiveFleet {
  rec: FleetRecord;
  stopped: boolean;
  release: () => void;
}

function stopLive(lf: LiveFleet): void {
  if (lf.stopped) return;
  lf.stopped = true;
  lf.release();
  teardownRecord(lf.rec);
}

// ---------------------------------------------------------------------------------
// Support check

let supportChecked = false;

/**
 * Throws an Error saying what is missing (root, `ip netns`, sshd, ssh-keygen, unshare,
 * nsenter, mount, overlayfs/tmpfs, veth/bridge) when this machine cannot run sandbox
 * hosts. Tests call it first: under CI=true a tier that cannot run must FAIL, never skip.
 */
export async function assertSandboxSupported(): Promise<void> {
  if (supportChecked) return;
  const missing: string[] = [];
  const uid = process.getuid?.();
  if (uid !== 0) missing.push(`root (running as uid ${uid ?? "unknown"})`);
  const tools: [string, string][] = [
    [SSHD, "the sshd binary (Debian package openssh-server)"],
    ["/usr/bin/ssh-keygen", "ssh-keygen (openssh-client)"],
    ["/usr/bin/unshare", "unshare (util-linux)"],
    ["/usr/bin/nsenter", "nsenter (util-linux)"],
    ["/usr/bin/mount", "mount (package mount)"],
  ];
  for (const [file, what] of tools) {
    try {
      fs.accessSync(file, fs.constants.X_OK);
    } catch {
      missing.push(`${what} at ${file}`);
    }
  }
  let filesystems = "";
  try {
    filesystems = fs.readFileSync("/proc/filesystems", "utf8");
  } catch {
    /* reported below */
  }
  if (!/\toverlay\n/.test(filesystems)) missing.push("overlayfs in the kernel (/proc/filesystems)");
  if (!/\ttmpfs\n/.test(filesystems)) missing.push("tmpfs in the kernel (/proc/filesystems)");
  const failed = (e: Error): ExecResult => ({ code: 127, stdout: "", stderr: e.message });
  const [ipNetns, probe] = await Promise.all([
    run("ip", ["netns", "list"], { allowFail: true, timeoutMs: 10_000 }).catch(failed),
    // veth + bridge in a throwaway anonymous netns: it dies with the probe process.
    uid === 0
      ? run("unshare", ["--net", "--", "sh", "-c", "ip link add kvsprobe0 type veth peer name kvsprobe1 && ip link add kvsprobe2 type bridge"], {
          allowFail: true,
          timeoutMs: 10_000,
        }).catch(failed)
      : Promise.resolve(undefined),
  ]);
  if (ipNetns.code !== 0) missing.push(`\`ip netns\` (iproute2): ${ipNetns.stderr.trim()}`);
  if (probe && probe.code !== 0) missing.push(`veth/bridge in a new network namespace: ${probe.stderr.trim()}`);
  if (missing.length > 0) throw new Error(`this machine cannot run tier-2 sandbox hosts; missing: ${missing.join("; ")}`);
  supportChecked = true;
}

// ---------------------------------------------------------------------------------
// Start

/** The sshd_config; see StartFleetOptions.sshdExtraConfig for where extra text goes. */
function sshdConfig(p: { runId: string; index: number; address: string; uplinkAddress: string; dir: string; extra?: string }): string {
  const extra = p.extra ?? "";
  const m = /^[ \t]*Match\b/im.exec(extra);
  const extraTop = (m ? extra.slice(0, m.index) : extra).trim();
  const extraMatch = (m ? extra.slice(m.index) : "").trim();
  const lines = [
    `# kvmnet sandbox fleet ${p.runId}, host ${p.index}`,
    ...(extraTop ? [extraTop] : []),
    `ListenAddress ${p.address}:22`,
    "# also on the uplink LAN, so one host can be the jump host to another",
    `ListenAddress ${p.uplinkAddress}:22`,
    `HostKey ${p.dir}/ssh_host_ed25519_key`,
    `AuthorizedKeysFile ${p.dir}/authorized_keys`,
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "# our files live under /tmp, which StrictModes rejects",
    "StrictModes no",
    `PidFile ${p.dir}/sshd-${p.index}.pid`,
    '# VERBOSE logs "Accepted publickey for ...", which acceptedConnections() counts',
    "LogLevel VERBOSE",
    "AllowTcpForwarding yes",
    "MaxSessions 10",
    "# tests open many connections at once; the default 10:30:100 drops some at random",
    "MaxStartups 100",
    "UseDNS no",
    "PrintMotd no",
    "Subsystem sftp internal-sftp",
    ...(extraMatch ? [extraMatch] : []),
  ];
  return lines.join("\n") + "\n";
}

/**
 * fstab for `mount -a -T`, read inside the host's fresh private mount namespace (one
 * mount process instead of one per mount point). `ip netns exec` has already
 * remounted /sys for the netns, so the PCI-hiding mounts go over THAT sysfs.
 */
function hostFstab(overlayDir: string): string {
  const lines: string[] = [];
  for (const d of OVERLAID_DIRS) {
    lines.push(`kvs-overlay /${d} overlay lowerdir=/${d},upperdir=${overlayDir}/${d}.up,workdir=${overlayDir}/${d}.work 0 0`);
  }
  // root's home starts empty, as on a fresh server: the machine's dotfiles must not run
  // in sandbox sessions (a .bashrc running `pyenv init` hung every SSH exec, and left a
  // stale lock behind when teardown killed it), and its files are none of a host's business.
  lines.push("kvs-root /root tmpfs mode=0700 0 0");
  // Inside the overlays: X-mount.mkdir creates the mountpoints in the upper layer only.
  for (const d of ["/run/sshd", "/run/netns", "/run/kvmnet", "/etc/kvmnet"]) {
    lines.push(`kvs-tmpfs ${d} tmpfs mode=0755,X-mount.mkdir 0 0`);
  }
  lines.push("kvs-nopci /sys/bus/pci tmpfs mode=0755 0 0");
  lines.push("kvs-nopci /sys/bus/pci/devices tmpfs mode=0755,X-mount.mkdir 0 0");
  lines.push("kvs-nopci /sys/bus/pci/drivers tmpfs mode=0755,X-mount.mkdir 0 0");
  if (fs.existsSync("/sys/kernel/iommu_groups")) lines.push("kvs-nopci /sys/kernel/iommu_groups tmpfs mode=0755 0 0");
  for (const d of safeReaddir("/sys/devices").filter((e) => e.startsWith("pci"))) {
    lines.push(`kvs-nopci /sys/devices/${d} tmpfs mode=0755 0 0`);
  }
  return lines.join("\n") + "\n";
}

/** The script that becomes sshd (it ends in exec, so the spawned pid is sshd's). */
function hostSetupScript(p: { netns: string; fstabPath: string; sshdConfigPath: string }): string {
  return `set -eu
# The copied mount table holds every namespace named in /run/netns (other fleets' too)
# and would pin them until this host dies; one lazy umount drops the whole subtree.
# -n everywhere: no /run/mount/utab on the machine's real /run.
umount -n -l /run/netns 2>/dev/null || true
mount -n -a -T ${shq(p.fstabPath)}
# Only this host's own netns is named, so \`ip netns identify\` works in the host.
: > /run/netns/${shq(p.netns)}
mount -n --bind /proc/self/ns/net /run/netns/${shq(p.netns)}
# Own UTS namespace: the hostname is the netns name, and a test cannot rename the machine.
echo ${shq(p.netns)} > /proc/sys/kernel/hostname
exec ${SSHD} -D -e -f ${shq(p.sshdConfigPath)}
`;
}

function tcpReachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

interface Keys {
  hostKeyLine: string;
  hostKeyFingerprint: string;
  privateKey: string;
  privateKeyPath: string;
  publicKeyLine: string;
}

async function makeKeys(dir: string, runId: string): Promise<Keys> {
  const hostKey = `${dir}/ssh_host_ed25519_key`;
  const clientKey = `${dir}/id_ed25519`;
  // One sh for the three ssh-keygen runs: every spawn costs ~10-25 ms on these machines.
  const r = await run(
    "sh",
    [
      "-c",
      `ssh-keygen -q -N '' -t ed25519 -C ${shq(`kvs-${runId}-host`)} -f ${shq(hostKey)} &&
       ssh-keygen -q -N '' -t ed25519 -C ${shq(`kvs-${runId}-client`)} -f ${shq(clientKey)} &&
       ssh-keygen -l -f ${shq(`${hostKey}.pub`)}`,
    ],
    { what: "ssh-keygen" },
  );
  // "256 SHA256:abc... comment (ED25519)"
  const hostKeyFingerprint = r.stdout.trim().split(/\s+/)[1] ?? "";
  if (!hostKeyFingerprint.startsWith("SHA256:")) throw new Error(`ssh-keygen -lf printed ${JSON.stringify(r.stdout)}`);
  const publicKeyLine = fs.readFileSync(`${clientKey}.pub`, "utf8").trim();
  fs.writeFileSync(`${dir}/authorized_keys`, publicKeyLine + "\n", { mode: 0o600 });
  return {
    hostKeyLine: fs.readFileSync(`${hostKey}.pub`, "utf8").trim(),
    hostKeyFingerprint,
    privateKey: fs.readFileSync(clientKey, "utf8"),
    privateKeyPath: clientKey,
    publicKeyLine,
  };
}

interface HostPlan {
  index: number;
  netns: string;
  rootLink: string;
  rootAddress: string;
  address: string;
  uplinkAddress: string;
}

/**
 * Build host i's network from inside its netns: DAD off, both veths (mgmt0's peer goes
 * to the root ns, named by our pid; eth0's peer to the upstream ns), addresses, default
 * route. One nsenter + sh + ip per host.
 */
function buildHostNetwork(h: HostPlan, upstream: string): Promise<ExecResult> {
  const batch = [
    `link add mgmt0 index 2 type veth peer name ${h.rootLink} netns ${process.pid}`,
    // Every veth pair gets ends with DIFFERENT ifindexes. When a veth's ifindex equals
    // its peer's (eth0 is 3 in each host; h<i> would get 3 upstream too), linkwatch
    // treats its carrier event as non-urgent and defers it up to 1 s; until then the
    // bridge keeps the port disabled and the first ARP after start is lost. The kernel
    // honours the peer's index only when the first end's index is given as well.
    `link add eth0 index 3 type veth peer name h${h.index} index ${100 + h.index} netns ${upstream}`,
    "link set dev lo up",
    `addr add ${h.address}/30 dev mgmt0`,
    "link set dev mgmt0 up",
    `addr add ${h.uplinkAddress}/24 dev eth0`,
    "link set dev eth0 up",
    `route add default via ${UPSTREAM_ADDRESS} dev eth0`,
  ];
  // No IPv6 duplicate address detection in hosts: link-local addresses are final at
  // once instead of flipping from "tentative" a second later, which snapshots (and
  // the provider's refresh) would see as drift. Set on "default" before the links exist.
  const script = `echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
exec ip -batch - <<'EOF'
${batch.join("\n")}
EOF
`;
  return run("nsenter", [`--net=/run/netns/${h.netns}`, "--", "sh", "-ec", script], { what: `host ${h.index} network` });
}

async function startSshd(rec: FleetRecord, h: HostPlan, keys: Keys, opts: StartFleetOptions): Promise<SandboxHost> {
  const { runId, dir } = rec;
  const i = h.index;
  const sshdConfigPath = `${dir}/sshd-${i}.conf`;
  const sshdLogPath = `${dir}/sshd-${i}.log`;
  const setupPath = `${dir}/setup-${i}.sh`;
  const fstabPath = `${dir}/fstab-${i}`;
  const overlayDir = `${dir}/overlay-${i}`;
  for (const d of OVERLAID_DIRS) {
    fs.mkdirSync(`${overlayDir}/${d}.up`, { recursive: true, mode: 0o755 });
    fs.mkdirSync(`${overlayDir}/${d}.work`, { recursive: true, mode: 0o700 });
  }
  fs.writeFileSync(sshdConfigPath, sshdConfig({ runId, index: i, address: h.address, uplinkAddress: h.uplinkAddress, dir, extra: opts.sshdExtraConfig }), { mode: 0o600 });
  fs.writeFileSync(fstabPath, hostFstab(overlayDir), { mode: 0o600 });
  fs.writeFileSync(setupPath, hostSetupScript({ netns: h.netns, fstabPath, sshdConfigPath }), { mode: 0o600 });
  const knownHostsPath = `${dir}/known_hosts-${i}`;
  fs.writeFileSync(knownHostsPath, `${h.address} ${keys.hostKeyLine}\n`, { mode: 0o600 });

  // ip netns exec → unshare → sh → sshd are all exec()s, so the spawned pid IS sshd.
  // Detached: a Ctrl-C to the test's process group must not kill sshd behind our back.
  const child = spawnTracked(["ip", "netns", "exec", h.netns, "unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", setupPath], {
    logFile: sshdLogPath,
    cwd: "/",
    detached: true,
  });
  const sshdPid = child.ref.pid;
  rec.pids.push(child.ref);
  fleets.save(rec);

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const exited = child.exited();
    if (exited) throw new Error(`sandbox host ${i} (${h.netns}): sshd ${exited}; ${sshdLogPath}:\n${readText(sshdLogPath).trim()}`);
    if (readText(sshdLogPath).includes("Server listening") && (await tcpReachable(h.address, 22, 1000))) break;
    if (Date.now() > deadline) {
      throw new Error(`sandbox host ${i} (${h.netns}): sshd not reachable at ${h.address}:22 after ${READY_TIMEOUT_MS} ms; ${sshdLogPath}:\n${readText(sshdLogPath).trim()}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const exe = (() => {
    try {
      return fs.readlinkSync(`/proc/${sshdPid}/exe`);
    } catch {
      return "";
    }
  })();
  if (exe !== SSHD) throw new Error(`sandbox host ${i}: pid ${sshdPid} is ${exe || "gone"}, expected ${SSHD}`);

  return {
    index: i,
    netns: h.netns,
    address: h.address,
    port: 22,
    user: "root",
    privateKey: keys.privateKey,
    privateKeyPath: keys.privateKeyPath,
    publicKeyLine: keys.publicKeyLine,
    hostKeyLine: keys.hostKeyLine,
    hostKeyFingerprint: keys.hostKeyFingerprint,
    knownHostsPath,
    sshdPid,
    sshdLogPath,
    uplink: "eth0",
    uplinkAddress: h.uplinkAddress,
    exec: makeExec(["nsenter", "-t", String(sshdPid), "-n", "-m", "-u", "--"], `sandbox host ${i} (${h.netns})`),
    acceptedConnections: () => (readText(sshdLogPath).match(/Accepted publickey for /g) ?? []).length,
    sessionsStarted: () => (readText(sshdLogPath).match(/Starting session: /g) ?? []).length,
  };
}

/**
 * Start `n` sandbox hosts (1 ≤ n ≤ 200) and their upstream router. On any failure
 * everything made so far is removed before the error is rethrown; the error carries
 * `runId` and, when sshd was the problem, its log text.
 */
export async function startFleet(n: number, opts: StartFleetOptions = {}): Promise<Fleet> {
  if (!Number.isInteger(n) || n < 1 || n > MAX_HOSTS) throw new Error(`startFleet: n must be an integer in 1..${MAX_HOSTS}, got ${n}`);
  await assertSandboxSupported();
  await cleanupStale().catch(() => undefined); // reap fleets of killed runs; never fatal here

  const rec = reserveRunId(opts.keepDir ?? false);
  const lf: LiveFleet = { rec, stopped: false, release: () => undefined };
  lf.release = onOwnerExit(() => stopLive(lf));
  const { runId, dir } = rec;
  const up = upstreamNetns(runId);
  let guestCount = 0;

  try {
    fs.mkdirSync(dir, { mode: 0o700 });
    const keysP = makeKeys(dir, runId);
    keysP.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile

    const plans: HostPlan[] = [];
    for (let i = 1; i <= n; i++) {
      const rootLink = rootLinkName(runId, i);
      const base = MGMT_BASE + allocateSlot(rec, rootLink) * 4;
      plans.push({
        index: i,
        netns: hostNetns(runId, i),
        rootLink,
        rootAddress: ipFromInt(base + 1),
        address: ipFromInt(base + 2),
        uplinkAddress: `198.19.0.${10 + i}`,
      });
    }
    rec.netns.push(up, ...plans.map((p) => p.netns));
    rec.rootLinks.push(...plans.map((p) => p.rootLink));
    rec.hosts.push(...plans.map((p) => ({ index: p.index, netns: p.netns, address: p.address })));
    fleets.save(rec);

    await ipBatch(
      undefined,
      [up, ...plans.map((p) => p.netns)].map((ns) => `netns add ${ns}`),
      "create namespaces",
    );
    await Promise.all([
      ipBatch(up, ["link set dev lo up", "link add lan0 type bridge", `addr add ${UPSTREAM_ADDRESS}/24 dev lan0`, "link set dev lan0 up"], "upstream bridge"),
      ...plans.map((p) => buildHostNetwork(p, up)),
    ]);
    await Promise.all([
      ipBatch(
        undefined,
        plans.flatMap((p) => [
          // No IPv6 link-local either: the root end carries exactly one address.
          `link set dev ${p.rootLink} addrgenmode none`,
          `addr add ${p.rootAddress}/30 dev ${p.rootLink}`,
          `link set dev ${p.rootLink} up`,
        ]),
        "root veth ends",
      ),
      ipBatch(
        up,
        plans.flatMap((p) => [`link set dev h${p.index} master lan0`, `link set dev h${p.index} up`]),
        "upstream ports",
      ),
    ]);

    const keys = await keysP;
    const settled = await Promise.allSettled(plans.map((p) => startSshd(rec, p, keys, opts)));
    const failures = settled.filter((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failures.length > 0) throw failures[0].reason;
    const hosts = settled.map((s) => (s as PromiseFulfilledResult<SandboxHost>).value);

    return {
      runId,
      dir,
      hosts,
      upstream: { netns: up, address: UPSTREAM_ADDRESS, exec: makeExec(["ip", "netns", "exec", up], `upstream (${up})`) },
      async addGuest(host, peerName) {
        if (lf.stopped) throw new Error(`addGuest: fleet ${runId} is stopped`);
        if (!hosts.includes(host)) throw new Error(`addGuest: host ${host.netns} is not in fleet ${runId}`);
        if (!/^[A-Za-z0-9_.-]{1,15}$/.test(peerName) || peerName === "." || peerName === "..") {
          throw new Error(`addGuest: invalid interface name ${JSON.stringify(peerName)} (1-15 chars of [A-Za-z0-9_.-])`);
        }
        const guest = guestNetns(runId, ++guestCount);
        rec.netns.push(guest);
        fleets.save(rec);
        await run("ip", ["netns", "add", guest], { what: "addGuest" });
        await ipBatch(guest, [`link add eth0 type veth peer name ${peerName} netns ${host.netns}`, "link set dev lo up", "link set dev eth0 up"], `addGuest ${guest}`);
        await ipBatch(host.netns, [`link set dev ${peerName} up`], `addGuest ${guest} peer`);
        return { netns: guest, ifname: "eth0", exec: makeExec(["ip", "netns", "exec", guest], `guest (${guest})`) };
      },
      async stop() {
        stopLive(lf);
      },
    };
  } catch (err) {
    const e: StartFleetError = err instanceof Error ? err : new Error(String(err));
    try {
      stopLive(lf);
    } catch (cleanupErr) {
      e.message += `\n(cleanup of fleet ${runId} also failed: ${(cleanupErr as Error).message})`;
    }
    e.message = `startFleet(${n}) fleet ${runId}: ${e.message}`;
    e.runId = runId;
    throw e;
  }
}

// ---------------------------------------------------------------------------------
// Stale fleets

/**
 * Remove fleets whose owner process is dead (their processes, namespaces, root veth
 * ends, slot dirs, temp dirs), plus stale slots and kvs-* namespaces / root links that
 * no fleet record claims. Returns one line per thing removed; empty when nothing was stale.
 */
export async function cleanupStale(): Promise<string[]> {
  return withReapLock(REAP_LOCK, () => {
    const removed: string[] = [];
    // Namespaces and links are listed BEFORE records are read: a fleet writes its
    // record before making anything, so whatever is listed without a record is orphaned.
    const netnsNow = [...existingNetns()];
    const linksNow = [...rootLinkNames()];
    const records = new Map(fleets.list().map((rec) => [rec.runId, rec]));
    const reaped = new Set<string>();
    for (const rec of [...records.values()]) {
      if (isAlive(rec.owner)) continue;
      teardownRecord(rec);
      records.delete(rec.runId);
      reaped.add(rec.runId);
      removed.push(`fleet ${rec.runId} (owner pid ${rec.owner.pid} is gone): ${[...rec.netns, ...rec.rootLinks].join(" ")}`);
    }
    const orphanNetns = netnsNow.filter((ns) => {
      const m = OUR_NETNS_RE.exec(ns);
      return m !== null && !records.has(m[1]) && !reaped.has(m[1]) && !fs.existsSync(fleets.file(m[1]));
    });
    const orphanLinks = linksNow.filter((l) => {
      const m = OUR_ROOT_LINK_RE.exec(l);
      return m !== null && !records.has(m[1]) && !reaped.has(m[1]) && !fs.existsSync(fleets.file(m[1]));
    });
    if (orphanNetns.length + orphanLinks.length > 0) {
      killAll([], orphanNetns);
      const batch = [...orphanLinks.map((l) => `link del dev ${l}`), ...orphanNetns.map((ns) => `netns del ${ns}`)];
      runSync("ip", ["-force", "-batch", "-"], batch.join("\n") + "\n");
      removed.push(...orphanLinks.map((l) => `orphan root link ${l}`), ...orphanNetns.map((ns) => `orphan namespace ${ns}`));
    }
    for (const k of safeReaddir(SLOTS_DIR)) {
      const slotDir = `${SLOTS_DIR}/${k}`;
      const owner = readJson<SlotOwner>(`${slotDir}/owner.json`);
      // A slot of a live fleet's record is never stale, whatever its owner pid says.
      if (owner && records.has(owner.runId)) continue;
      if (!claimAbandoned(slotDir, owner && { pid: owner.pid, start: owner.start }, 60_000)) continue;
      if (owner && OUR_ROOT_LINK_RE.test(owner.rootLink) && rootLinkNames().has(owner.rootLink)) {
        runSync("ip", ["link", "del", "dev", owner.rootLink]);
      }
      fs.rmSync(slotDir, { recursive: true, force: true });
      removed.push(`stale slot ${k}${owner ? ` (fleet ${owner.runId})` : ""}`);
    }
    return removed;
  });
}

/** Fleets recorded under /run/kvmnet-sandbox/fleets, live or (until cleanupStale) stale. */
export function listFleets(): { runId: string; ownerPid: number; alive: boolean; created: string; dir: string; hosts: FleetRecord["hosts"] }[] {
  return fleets
    .list()
    .map((r) => ({ runId: r.runId, ownerPid: r.owner.pid, alive: isAlive(r.owner), created: r.created, dir: r.dir, hosts: r.hosts }))
    .sort((a, b) => a.created.localeCompare(b.created));
}

/** Where the harness keeps its records (for tests of the harness itself). */
export const sandboxPaths = { stateRoot: STATE_ROOT, slotsDir: SLOTS_DIR, fleetsDir: FLEETS_DIR } as const;

/** What a fleet's namespace names and root-ns link names start with. */
export function fleetPrefixes(runId: string): { netns: string; rootLink: string } {
  return { netns: `kvs-${runId}-`, rootLink: `kvs${runId}` };
}

// ---------------------------------------------------------------------------------
// Snapshots

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Copy of `v` without the keys `drop` picks (it sees each key and its parent's key). */
function dropKeys(v: Json, drop: (key: string, parentKey: string | undefined) => boolean, parentKey?: string): Json {
  if (Array.isArray(v)) return v.map((x) => dropKeys(x, drop, parentKey));
  if (v !== null && typeof v === "object") {
    const out: { [k: string]: Json } = {};
    for (const [k, x] of Object.entries(v)) if (!drop(k, parentKey)) out[k] = dropKeys(x, drop, k);
    return out;
  }
  return v;
}

const FOREVER = 4294967295;

/** Static addresses keep their "forever" lifetimes; ticking ones become "finite". */
function normaliseLifetimes(v: Json): Json {
  if (Array.isArray(v)) return v.map(normaliseLifetimes);
  if (v !== null && typeof v === "object") {
    const out: { [k: string]: Json } = {};
    for (const [k, x] of Object.entries(v)) {
      out[k] = (k === "valid_life_time" || k === "preferred_life_time") && x !== FOREVER ? "finite" : normaliseLifetimes(x);
    }
    return out;
  }
  return v;
}

function normaliseNft(v: Json): Json {
  const stripped = dropKeys(
    v,
    (k, parent) =>
      k === "metainfo" || k === "expires" || ((k === "packets" || k === "bytes") && parent === "counter") || ((k === "used" || k === "used_unit") && parent === "quota"),
  );
  if (stripped !== null && typeof stripped === "object" && !Array.isArray(stripped) && Array.isArray(stripped.nftables)) {
    // {"metainfo": {...}} is an element of its own; it is {} now: drop it.
    const isEmpty = (e: Json) => e !== null && typeof e === "object" && !Array.isArray(e) && Object.keys(e).length === 0;
    return { nftables: stripped.nftables.filter((e) => !isEmpty(e)) };
  }
  return stripped;
}

const SNAPSHOT_SEPARATOR = "--kvs-snapshot-section--";

/**
 * The kernel gives a link its default qdisc (noqueue, pfifo_fast…) the first time
 * it goes up and keeps it after the link goes down again; a never-up link shows
 * "noop". On a link that is administratively down the two mean the same (no
 * traffic; the default returns on the next up), so a port brought up and down
 * again compares equal to one never touched.
 */
function normaliseDownQdisc(links: Json): Json {
  if (!Array.isArray(links)) return links;
  return links.map((l) => {
    const link = l as { flags?: string[]; qdisc?: string };
    if (link && typeof link === "object" && !link.flags?.includes("UP") && link.qdisc !== undefined) {
      return { ...link, qdisc: "(down)" };
    }
    return l;
  });
}

/**
 * A snapshot of one host for "destroy leaves the host as it was" tests (P4), taken in
 * one exec: links (`ip -j -d link`), addresses, IPv4 and IPv6 routes of all tables,
 * the nft ruleset, forwarding sysctls, and every path under /run/kvmnet and
 * /etc/kvmnet (type, mode, size and sha256 of files). Volatile fields are dropped:
 * link stats, bridge/port *_timer values, finite address lifetimes, route expiry, nft
 * counter values, quota usage and metainfo. Compare two snapshots with toEqual.
 */
export async function snapshotHost(host: SandboxHost): Promise<unknown> {
  const sections = [
    "ip -j -d link show",
    "ip -j addr show",
    "ip -4 -j route show table all",
    "ip -6 -j route show table all",
    "nft -j list ruleset",
    "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding",
    "find /run/kvmnet /etc/kvmnet -printf '%y %m %s %p\\n' 2>/dev/null | sort -k4",
    "find /run/kvmnet /etc/kvmnet -type f -exec sha256sum {} + 2>/dev/null | sort -k2",
  ];
  const r = await host.exec(sections.map((c) => `${c}; echo; echo ${SNAPSHOT_SEPARATOR}`).join("\n"));
  const out = r.stdout.split(`${SNAPSHOT_SEPARATOR}\n`).map((s) => s.trim());
  const json = (i: number): Json => (out[i] ? (JSON.parse(out[i]) as Json) : []);
  const [ipForward = "", ip6Forward = ""] = (out[5] ?? "").split("\n");
  const hashes = new Map(
    (out[7] ?? "")
      .split("\n")
      .filter(Boolean)
      .map((l) => [l.slice(66), l.slice(0, 64)] as const),
  );
  const files = (out[6] ?? "")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [type = "", mode = "", size = "", ...rest] = l.split(" ");
      const p = rest.join(" ");
      return type === "f" ? { path: p, type, mode, size: Number(size), sha256: hashes.get(p) ?? "" } : { path: p, type, mode };
    });
  return {
    links: normaliseDownQdisc(
      dropKeys(json(0), (k, parent) => k === "stats64" || k === "stats" || (/_timer$/.test(k) && (parent === "info_data" || parent === "info_slave_data"))),
    ),
    addresses: normaliseDownQdisc(normaliseLifetimes(json(1))),
    routes: dropKeys(json(2), (k) => k === "expires"),
    routes6: dropKeys(json(3), (k) => k === "expires"),
    nftables: normaliseNft(json(4)),
    sysctls: { "net.ipv4.ip_forward": ipForward, "net.ipv6.conf.all.forwarding": ip6Forward },
    files,
  };
}
