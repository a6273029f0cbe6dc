/** NatNetwork actions → shell steps (values quoted by shell.ts only). */
import { nftLoad } from "../../nft";
import { STATE_DIR } from "../../observe";
import { absentGuard, createBridgeStep, deleteLinkStep, isBridgeGuard, linkActionStep } from "../../linkSteps";
import { Guard, Plan, Step } from "../../render";
import { andThen, joinLines, Script, sh, writeFile } from "../../shell";
import {
  confFile,
  dhcpHostsFile,
  dnsHostsFile,
  DnsmasqFiles,
  dnsmasqUnit,
  dnsmasqUnitFile,
  dnsmasqUnitText,
  FORWARD_DIR,
  forwardHolder,
  leaseFile,
  NAT_STATE_DIR,
  pidFile,
  runDir,
  stateFile,
  sysctlFile,
  tableFile,
  tableName,
} from "./files";
import { persistentDnsmasqUnitFile } from "./persist";
import { disarmSteps, stopUnit } from "../../persist/systemd";
import { NatAction, NatGuard, NatPlan } from "./plan";

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

/** The run dir, made world-traversable (0755): dnsmasq drops root for `nobody` and re-reads the hosts files on SIGHUP. */
function makeRunDir(name: string): Script {
  return sh`for d in /run/kvmnet /run/kvmnet/nat ${runDir(name)}; do [ -d "$d" ] || mkdir -m 0755 "$d"; done; [ -d ${runDir(name)} ]`;
}

/** Apply an nft script kept in the run dir (it deletes and re-declares the table: one transaction). */
function nftApply(name: string, file: string, script: string): Script {
  return andThen([makeRunDir(name), nftLoad(script, file)]);
}

const FORWARD_ORIGINAL = `${FORWARD_DIR}/original`;

/** Turn ip_forward on and record this network as a holder (the original value kept once). */
function acquireForward(name: string): Script {
  return sh`mkdir -p ${FORWARD_DIR} && { [ -f ${FORWARD_ORIGINAL} ] || cat ${IP_FORWARD} > ${FORWARD_ORIGINAL}; } && : > ${forwardHolder(name)} && echo 1 > ${IP_FORWARD}`;
}

/** Drop this network's hold; the last holder out restores the original value. */
function releaseForward(name: string): Script {
  return joinLines([
    sh`rm -f ${forwardHolder(name)}`,
    sh`if [ -d ${FORWARD_DIR} ] && [ -z "$(ls -A ${FORWARD_DIR} | grep -vx original)" ]; then`,
    sh`  if [ -f ${FORWARD_ORIGINAL} ]; then cat ${FORWARD_ORIGINAL} > ${IP_FORWARD}; fi`,
    sh`  rm -f ${FORWARD_ORIGINAL} && rmdir ${FORWARD_DIR}`,
    sh`fi`,
  ]);
}

/** dnsmasq's config and hosts files. */
function writeDnsmasqFiles(name: string, f: DnsmasqFiles): Script {
  return andThen([makeRunDir(name), writeFile(confFile(name), f.conf), writeFile(dhcpHostsFile(name), f.dhcpHosts), writeFile(dnsHostsFile(name), f.dnsHosts)]);
}

/**
 * The pid in our pid file, only when that process really is a live dnsmasq:
 * never signal a recycled pid, and never wait on a zombie (an init that is
 * slow to reap leaves a dead dnsmasq whose comm still reads "dnsmasq").
 */
const DNSMASQ_ALIVE = sh`[ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = dnsmasq ] && ! grep -qE '^[0-9]+ \\(dnsmasq\\) Z' /proc/$p/stat 2>/dev/null`;

function withDnsmasqPid(name: string, body: Script): Script {
  return sh`p=$(cat ${pidFile(name)} 2>/dev/null || true); if ${DNSMASQ_ALIVE}; then ${body}; fi`;
}

/**
 * Stop and forget the unit (if there is one): its runtime file goes, and
 * systemd drops it from memory. A persisted network's unit file in /etc
 * (which shadows the runtime one, and is the only one after a reboot) is left
 * to the persistence core, which removes it after the plan's steps.
 */
function removeUnit(name: string): Script {
  const unit = dnsmasqUnit(name);
  const stop = stopUnit(unit, { forget: { after: sh`rm -f ${dnsmasqUnitFile(name)}; systemctl daemon-reload` } });
  return sh`if [ -f ${dnsmasqUnitFile(name)} ] || [ -f ${persistentDnsmasqUnitFile(name)} ]; then ${stop}; fi; true`;
}

function startDnsmasq(name: string, systemd: boolean): Script {
  const waitAlive = andThen([
    sh`{ i=0; while [ ! -s ${pidFile(name)} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; }`,
    sh`p=$(cat ${pidFile(name)} 2>/dev/null)`,
    DNSMASQ_ALIVE,
  ]);
  if (systemd) {
    const unit = dnsmasqUnit(name);
    // A unit that fails to start shows why (the journal's last lines) and is removed again.
    return andThen([
      sh`rm -f ${pidFile(name)}`,
      writeFile(dnsmasqUnitFile(name), dnsmasqUnitText(name)),
      sh`systemctl daemon-reload`,
      joinLines([sh`if ! systemctl start ${unit}; then`, sh`  journalctl -u ${unit} -n 10 --no-pager -o cat >&2 2>/dev/null`, sh`  ${removeUnit(name)}; false`, sh`fi`]),
      waitAlive,
    ]);
  }
  // dnsmasq daemonizes; its parent exits only after the child started (or failed, with the reason on stderr).
  return andThen([sh`rm -f ${pidFile(name)}`, sh`dnsmasq --conf-file=${confFile(name)} </dev/null >/dev/null`, waitAlive]);
}

/** Tenths of a second a dnsmasq gets to act on SIGTERM, then on SIGKILL. */
const TERM_WAIT_TENTHS = 100;
const KILL_WAIT_TENTHS = 50;

/**
 * Prints the live dnsmasq processes of this network, one pid a line: the pid
 * file's, and every other one started with this network's config (a daemon the
 * pid file lost track of; dnsmasq's forked TCP children). grep -z reads
 * /proc/<pid>/cmdline argument by argument.
 */
function ourDnsmasqPids(name: string): Script {
  return joinLines([
    sh`{ p=$(cat ${pidFile(name)} 2>/dev/null || true); if ${DNSMASQ_ALIVE}; then echo "$p"; fi`,
    // Only processes in this network namespace: /proc lists every namespace's, and a
    // dnsmasq of a same-named network in another one (a container, another host on
    // a shared kernel) is not ours to stop.
    sh`  me=$(readlink /proc/self/ns/net); for f in $(grep -lzxF -e ${`--conf-file=${confFile(name)}`} /proc/[0-9]*/cmdline 2>/dev/null); do p=\${f#/proc/}; p=\${p%/cmdline}; [ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] || continue; if ${DNSMASQ_ALIVE}; then echo "$p"; fi; done; } | sort -u`,
  ]);
}

/** Waits (bounded) while any pid in $pids is a live dnsmasq; leaves the living ones in $left. */
function waitGone(tenths: number): Script {
  return sh`i=0; while :; do left=; for p in $pids; do if ${DNSMASQ_ALIVE}; then left="$left $p"; fi; done; [ -n "$left" ] && [ $i -lt ${tenths} ] || break; sleep 0.1; i=$((i+1)); done`;
}

/**
 * Stop the network's dnsmasq and succeed only once it is gone, sockets and all
 * (#14): a dnsmasq reading a big hosts list acts on SIGTERM only when done (45 s
 * for a million names), and one that outlives its network keeps the gateway's
 * :53 and :67, so the next network there fails with "Address already in use".
 * The unit (if any) is stopped first: systemd escalates after TimeoutStopSec.
 * Whatever still runs our config after that (no systemd, or a unit that lost
 * track) gets SIGTERM, then SIGKILL after TERM_WAIT_TENTHS; a process exits
 * (closing its sockets) before it is a zombie, so "no live process" is "no socket".
 */
function stopDnsmasq(name: string): Script {
  const who = `dnsmasq of NatNetwork ${name}`;
  // One group, so `&&` around it (a restart: write && stop && start) takes its status as a whole.
  const lines = joinLines([
    removeUnit(name),
    sh`pids=$(${ourDnsmasqPids(name)})`,
    sh`if [ -n "$pids" ]; then`,
    sh`  kill $pids 2>/dev/null; ${waitGone(TERM_WAIT_TENTHS)}`,
    sh`  if [ -n "$left" ]; then echo ${`${who} (pid`}$left${`) ignored SIGTERM for ${TERM_WAIT_TENTHS / 10} s: SIGKILL`} >&2; pids=$left; kill -KILL $pids 2>/dev/null; ${waitGone(KILL_WAIT_TENTHS)}; fi`,
    sh`fi`,
    // Judged afresh: a process forked meanwhile counts too.
    sh`left=$(${ourDnsmasqPids(name)})`,
    sh`if [ -n "$left" ]; then echo ${`${who} still runs after SIGKILL (pid`} $left")" >&2; false; else rm -f ${pidFile(name)}; fi`,
  ]);
  return sh`{ ${lines}; }`;
}

function reloadDnsmasq(name: string): Script {
  return withDnsmasqPid(name, sh`kill -HUP "$p"`);
}

function writeState(name: string, json: string): Script {
  return sh`mkdir -p ${NAT_STATE_DIR} && ${writeFile(stateFile(name), json)}`;
}

/** Remove our directories once empty, children first (rmdir refuses non-empty ones). */
function pruneDirs(name: string): Script {
  return sh`rmdir ${runDir(name)} /run/kvmnet/nat ${NAT_STATE_DIR} ${STATE_DIR} /run/kvmnet 2>/dev/null || true`;
}

function renderAction(a: NatAction): Step[] {
  if (a.op === "disarmBootHooks") return disarmSteps(a.hooks);
  return [renderOne(a)];
}

function renderOne(a: Exclude<NatAction, { op: "disarmBootHooks" }>): Step {
  switch (a.op) {
    case "createBridge":
      return createBridgeStep(a.bridge, a.mac);
    case "setMtu":
    case "addAddress":
    case "up":
      return linkActionStep(a);
    case "applyTable":
      return {
        description: `apply nft table inet ${tableName(a.name)}`,
        run: nftApply(a.name, tableFile(a.name), a.script),
        undo: a.previous
          ? nftApply(a.name, `${tableFile(a.name)}.previous`, a.previous)
          : joinLines([sh`nft delete table inet ${tableName(a.name)}`, sh`rm -f ${tableFile(a.name)}`, pruneDirs(a.name)]),
        // The file is written before `nft -c` judges it (no nft, a rule the kernel
        // refuses): `nft -f` is one transaction, so only the file needs putting back.
        cleanup: a.previous ? writeFile(tableFile(a.name), a.previous) : joinLines([sh`rm -f ${tableFile(a.name)} ${`${tableFile(a.name)}.tmp`}`, pruneDirs(a.name)]),
      };
    case "deleteTable":
      return { description: `delete nft table inet ${tableName(a.name)}`, run: sh`nft delete table inet ${tableName(a.name)}` };
    case "acquireForward":
      // Releasing is right after a partial acquire too: the original value, if recorded, is put back.
      return { description: "turn on net.ipv4.ip_forward", run: acquireForward(a.name), undo: releaseForward(a.name), cleanup: releaseForward(a.name) };
    case "releaseForward":
      return { description: "release net.ipv4.ip_forward (restored when no other network needs it)", run: releaseForward(a.name), undo: acquireForward(a.name) };
    case "dnsmasq": {
      // Each variant's undo is also right after its own run stopped part way, so it is the cleanup too.
      const write = writeDnsmasqFiles(a.name, a.files);
      const back = a.previous ? writeDnsmasqFiles(a.name, a.previous) : undefined;
      const removeOwn = sh`rm -f ${confFile(a.name)} ${dhcpHostsFile(a.name)} ${dnsHostsFile(a.name)} ${leaseFile(a.name)} ${pidFile(a.name)}`;
      if (a.how === "start") {
        const undo = back ? joinLines([stopDnsmasq(a.name), back]) : joinLines([stopDnsmasq(a.name), removeOwn]);
        return {
          description: `start dnsmasq for ${a.name}${a.systemd ? ` (unit ${dnsmasqUnit(a.name)})` : ""}`,
          run: andThen([write, startDnsmasq(a.name, a.systemd)]),
          undo,
          cleanup: undo,
        };
      }
      if (a.how === "reload") {
        const undo = back ? joinLines([back, reloadDnsmasq(a.name)]) : undefined;
        return { description: `reload dnsmasq for ${a.name} (SIGHUP: hosts files)`, run: andThen([write, reloadDnsmasq(a.name)]), undo, cleanup: undo };
      }
      const undo = back ? joinLines([back, stopDnsmasq(a.name), startDnsmasq(a.name, a.systemd)]) : undefined;
      const run = andThen([write, stopDnsmasq(a.name), startDnsmasq(a.name, a.systemd)]);
      return { description: `restart dnsmasq for ${a.name} (configuration changed)`, run, undo, cleanup: undo };
    }
    case "stopDnsmasq":
      return { description: `stop dnsmasq of ${a.name}`, run: stopDnsmasq(a.name), undo: startDnsmasq(a.name, a.systemd) };
    case "writeState": {
      const undo = a.previous ? writeState(a.name, JSON.stringify(a.previous)) : joinLines([sh`rm -f ${stateFile(a.name)} ${`${stateFile(a.name)}.tmp`}`, pruneDirs(a.name)]);
      return { description: `record state of ${a.name}`, run: writeState(a.name, JSON.stringify(a.state)), undo, cleanup: undo };
    }
    case "recordSysctl":
      // Later files override earlier ones in sysctl.d; any file saying 0 is worth a warning.
      return {
        description: "look for sysctl files that turn ip_forward off",
        run: sh`mkdir -p ${NAT_STATE_DIR} && { grep -lsE '^[[:space:]]*net[./]ipv4[./]ip_forward[[:space:]]*=[[:space:]]*0' /etc/sysctl.conf /etc/sysctl.d/*.conf /run/sysctl.d/*.conf /usr/local/lib/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf /lib/sysctl.d/*.conf > ${sysctlFile(a.name)}; true; }`,
        undo: joinLines([sh`rm -f ${sysctlFile(a.name)}`, pruneDirs(a.name)]),
        cleanup: joinLines([sh`rm -f ${sysctlFile(a.name)}`, pruneDirs(a.name)]),
      };
    case "forgetSysctl":
      return { description: "forget sysctl findings", run: joinLines([sh`rm -f ${sysctlFile(a.name)}`, pruneDirs(a.name)]) };
    case "deleteBridge":
      return deleteLinkStep(a.bridge, `bridge ${a.bridge}`);
    case "removeFiles":
      return { description: `remove files of ${a.name}`, run: joinLines([sh`rm -rf ${runDir(a.name)} && rm -f ${stateFile(a.name)} ${sysctlFile(a.name)}`, pruneDirs(a.name)]) };
    case "writeRuntimeUnit":
      // No undo: while the persisted unit file exists it shadows this one.
      return { description: `keep ${dnsmasqUnit(a.name)} as a runtime unit`, run: writeFile(dnsmasqUnitFile(a.name), dnsmasqUnitText(a.name)) };
  }
}

function renderGuard(g: NatGuard): Guard {
  switch (g.op) {
    case "absent":
      return absentGuard(g.ifname);
    case "isBridge":
      return isBridgeGuard(g.ifname);
  }
}

export function renderNatPlan(plan: NatPlan): Plan {
  return { guards: plan.guards.map(renderGuard), steps: plan.actions.flatMap(renderAction) };
}
