/**
 * Fleet benchmark (prints figures; asserts nothing): N sandbox hosts, each with the
 * same workload - 5 bridges, mtu 1400, STP off, up, one address; the first with one
 * port - applied by the raw floor (one hand-written `ssh host sh -s` script per host,
 * all hosts at once) and by pulumi-kvmnet under the real engine (program in
 * ./program), in the same run. Every phase is judged from outside (nsenter into each
 * host, not over SSH) before its figure counts.
 *
 *   sudo npm run bench:fleet -- 5 20 1x60   # fleet sizes (hosts, or hosts x bridges per host); JSON to bench/fleet/last.json (KVMNET_BENCH_JSON to move it)
 *
 * KVMNET_BENCH_PROFILE=<dir> adds a CPU profile of the program process in the apply (summarized on
 * stdout) and the apply and destroy again with PULUMI_SKIP_CHECKPOINTS=true (the engine's checkpoint share).
 *
 * Phases: the engine floor (the same `up` of the program declaring no resources), apply from empty (`up --yes --skip-preview` vs the raw script), no change with
 * reads (`preview --refresh --expect-no-changes` vs one raw read script per host),
 * destroy (`destroy --yes --skip-preview` vs a raw delete script). Per pulumi phase:
 * CPU seconds and peak RSS per process kind (engine = the pulumi CLI, language host,
 * program, provider = the dynamic provider's node), sampled from /proc every 100 ms,
 * and SSH handshakes per host (the hosts' sshd "Accepted publickey" lines).
 */
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ensurePulumi, REPO, Stack } from "../../testbed/engine";
import { Fleet, SandboxHost, startFleet } from "../../testbed/fleet";

/** Bridges per host unless a size says otherwise (`1x60`: one host with 60). */
const BRIDGES = 5;
const CLK_TCK = 100;
const PAGE_KB = 4;

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function rawApply(perHost: number): string {
  const lines = ["set -e"];
  for (let b = 0; b < perHost; b++) {
    lines.push(`ip link add kvb${b} type bridge stp_state 0`, `ip link set kvb${b} mtu 1400`, `ip addr add 10.77.${b}.1/24 dev kvb${b}`, `ip link set kvb${b} up`);
  }
  lines.push("ip link set kvbp0 master kvb0");
  return lines.join("\n") + "\n";
}
const RAW_READ = "ip -j -d link show type bridge >/dev/null && ip -j addr show >/dev/null\n";
const rawDestroy = (perHost: number) => Array.from({ length: perHost }, (_, b) => `ip link del kvb${b}`).join("\n") + "\n";

/** One `ssh` per host, all at once, each running `script` on stdin; resolves with the wall time. */
async function rawAll(hosts: SandboxHost[], script: string): Promise<number> {
  const t0 = Date.now();
  await Promise.all(
    hosts.map(
      (h) =>
        new Promise<void>((resolve, reject) => {
          const c = spawn(
            "ssh",
            [
              "-i",
              h.privateKeyPath,
              "-o",
              "IdentitiesOnly=yes",
              "-o",
              `UserKnownHostsFile=${h.knownHostsPath}`,
              "-o",
              "BatchMode=yes",
              "-o",
              "StrictHostKeyChecking=yes",
              "-p",
              String(h.port),
              `${h.user}@${h.address}`,
              "sh -s",
            ],
            { stdio: ["pipe", "ignore", "pipe"] },
          );
          let err = "";
          c.stderr.on("data", (d: Buffer) => (err += d.toString()));
          c.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`raw ssh to ${h.address} exited ${code}: ${err}`))));
          c.stdin.end(script);
        }),
    ),
  );
  return Date.now() - t0;
}

/** Judge a host from outside: the workload is there (want=true) or nothing of it is. */
async function judge(hosts: SandboxHost[], perHost: number, want: boolean, phase: string): Promise<void> {
  for (const h of hosts) {
    const links = JSON.parse((await h.exec("ip -j -d link show")).stdout) as {
      ifname: string;
      mtu: number;
      flags: string[];
      master?: string;
      linkinfo?: { info_kind?: string; info_data?: { stp_state?: number } };
    }[];
    const addrs = JSON.parse((await h.exec("ip -j -4 addr show")).stdout) as { ifname: string; addr_info: { local: string; prefixlen: number }[] }[];
    const bridges = links.filter((l) => /^kvb\d+$/.test(l.ifname));
    const problems: string[] = [];
    if (!want) {
      if (bridges.length) problems.push(`left: ${bridges.map((b) => b.ifname).join(" ")}`);
      if (links.find((l) => l.ifname === "kvbp0")?.master) problems.push("kvbp0 still has a master");
    } else {
      if (bridges.length !== perHost) problems.push(`${bridges.length} bridges, not ${perHost}`);
      for (let b = 0; b < perHost; b++) {
        const l = bridges.find((x) => x.ifname === `kvb${b}`);
        const a = addrs.find((x) => x.ifname === `kvb${b}`)?.addr_info.map((i) => `${i.local}/${i.prefixlen}`) ?? [];
        if (!l) problems.push(`kvb${b} missing`);
        else if (l.linkinfo?.info_kind !== "bridge" || l.mtu !== 1400 || !l.flags.includes("UP") || l.linkinfo.info_data?.stp_state !== 0 || a.join() !== `10.77.${b}.1/24`)
          problems.push(`kvb${b}: ${JSON.stringify({ kind: l.linkinfo?.info_kind, mtu: l.mtu, flags: l.flags, stp: l.linkinfo?.info_data?.stp_state, a })}`);
      }
      if (links.find((l) => l.ifname === "kvbp0")?.master !== "kvb0") problems.push("kvbp0 is not a port of kvb0");
    }
    if (problems.length) throw new Error(`${phase}: host ${h.address} judged from outside: ${problems.join("; ")}`);
  }
}

interface ProcFigures {
  cpuS: number;
  peakRssMb: number;
  processes: number;
}
type Kind = "engine" | "langhost" | "program" | "provider" | "other";

function kindOf(pid: number): Kind {
  let cmd: string;
  try {
    cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "other";
  }
  if (/pulumi-language-nodejs/.test(cmd)) return "langhost";
  if (/pulumi-resource-pulumi-nodejs|dynamic-provider|provider\/index|runtime\/dynamic/.test(cmd)) return "provider";
  if (/\bnode\b|\/node /.test(cmd)) return "program";
  if (/(^|\/)pulumi /.test(cmd)) return "engine";
  return "other";
}

/** Run `pulumi …` for the stack, sampling its process tree; resolves with wall time and figures per kind. */
async function pulumiMeasured(stack: Stack, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ ms: number; kinds: Record<Kind, ProcFigures>; code: number; out: string }> {
  const t0 = Date.now();
  const child = spawn("pulumi", stack.cliArgs(args), { cwd: stack.projectDir, env: { ...stack.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const seen = new Map<number, { kind: Kind; cpu: number; hwmKb: number }>();
  const sample = () => {
    // One read of every /proc/<pid>/stat: the parent (to find the tree) and the CPU so far.
    const procs = new Map<number, { ppid: number; cpu: number; rssKb: number }>();
    for (const e of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const st = fs.readFileSync(`/proc/${e}/stat`, "utf8");
        const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
        procs.set(Number(e), { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, rssKb: Number(f[21]) * PAGE_KB });
      } catch {
        /* gone */
      }
    }
    const inTree = (p: number): boolean => {
      for (let q = p, i = 0; q > 1 && i < 50; q = procs.get(q)?.ppid ?? 0, i++) if (q === child.pid) return true;
      return false;
    };
    for (const [p, { cpu, rssKb }] of procs) {
      if (!inTree(p)) continue;
      let hwm = rssKb;
      try {
        hwm = Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, "utf8"))?.[1] ?? rssKb);
      } catch {
        /* gone since: its last stat stands */
      }
      const prev = seen.get(p);
      seen.set(p, { kind: prev?.kind ?? kindOf(p), cpu: Math.max(prev?.cpu ?? 0, cpu), hwmKb: Math.max(prev?.hwmKb ?? 0, hwm) });
    }
  };
  const timer = setInterval(sample, 100);
  const code = await new Promise<number>((resolve) => child.on("close", (c) => resolve(c ?? 1)));
  clearInterval(timer);
  const ms = Date.now() - t0;
  const kinds = Object.fromEntries((["engine", "langhost", "program", "provider", "other"] as Kind[]).map((k) => [k, { cpuS: 0, peakRssMb: 0, processes: 0 }])) as Record<
    Kind,
    ProcFigures
  >;
  for (const v of seen.values()) {
    const k = kinds[v.kind];
    k.cpuS += v.cpu;
    k.peakRssMb = Math.max(k.peakRssMb, Math.round(v.hwmKb / 1024));
    k.processes++;
  }
  return { ms, kinds, code, out };
}

/**
 * Where the program process (the user's program under the language host) spent its CPU in the
 * profiled apply: self time by package, and the busiest functions. The dynamic provider process
 * is killed by the engine, so it leaves no profile; its CPU is in the table.
 */
function printProgramProfile(dir: string): void {
  type Node = { id: number; callFrame: { functionName: string; url: string; lineNumber: number } };
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith(".cpuprofile"))) {
    const p = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
    if (!p.nodes.some((n) => n.callFrame.url.includes("bench/fleet/program/"))) continue;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const pkg = new Map<string, number>();
    const fn = new Map<string, number>();
    let busy = 0;
    p.samples.forEach((id, i) => {
      const cf = byId.get(id)?.callFrame;
      const ms = (p.timeDeltas[i] ?? 0) / 1000;
      if (!cf || cf.functionName === "(idle)") return;
      busy += ms;
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(cf.url);
      const where = m ? m[1] : cf.url ? cf.url.replace(/^file:\/\//, "").replace(`${REPO}/`, "") : cf.functionName;
      pkg.set(where, (pkg.get(where) ?? 0) + ms);
      const name = `${cf.functionName || "(anonymous)"} ${cf.url.replace(/.*node_modules\//, "")}:${cf.lineNumber + 1}`;
      fn.set(name, (fn.get(name) ?? 0) + ms);
    });
    const top = (m: Map<string, number>, k: number) =>
      [...m]
        .sort((a, b) => b[1] - a[1])
        .slice(0, k)
        .map(([w, ms]) => `    ${ms.toFixed(0).padStart(6)} ms  ${w}`)
        .join("\n");
    console.log(`\nprogram process, profiled apply (${path.join(dir, f)}): ${busy.toFixed(0)} ms busy\n  by package:\n${top(pkg, 8)}\n  busiest functions:\n${top(fn, 12)}`);
  }
}

/**
 * What the provider process weighs before it manages anything: a node that has loaded
 * @pulumi/pulumi (which the dynamic provider process runs on), then pulumi-kvmnet/provider too.
 */
function rssFloor(): { pulumiMb: number; withProviderMb: number } {
  const script = [
    "const mb = () => Math.round(process.memoryUsage().rss / 1048576);",
    'require("@pulumi/pulumi"); const a = mb();',
    'require("pulumi-kvmnet/provider"); console.log(JSON.stringify({ pulumiMb: a, withProviderMb: mb() }));',
  ].join(" ");
  const r = spawnSync(process.execPath, ["-e", script], { cwd: REPO, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`measuring the RSS floor failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { pulumiMb: number; withProviderMb: number };
}

interface Row {
  hosts: number;
  bridgesPerHost: number;
  phase: string;
  rawMs: number;
  kvmnetMs: number;
  ratio: number;
  handshakesPerHost: number;
  /** SSH sessions (exec channels: round trips) the phase opened, per resource. */
  roundTripsPerResource: number;
  /** CPU seconds of the whole machine in the phase: the pulumi processes above plus the hosts' sshd and scripts. */
  machineCpuS: number;
  kinds: Record<Kind, ProcFigures>;
}

/** CPU seconds the whole machine has spent so far (/proc/stat: user nice system irq softirq steal). */
function machineCpuS(): number {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK;
}

async function one(n: number, perHost: number, bin: string): Promise<Row[]> {
  let fleet: Fleet | undefined;
  let stack: Stack | undefined;
  const rows: Row[] = [];
  try {
    fleet = await startFleet(n);
    const hosts = fleet.hosts;
    for (const h of hosts) await h.exec("ip link add kvbp0 type veth peer name kvbp0p && ip link set kvbp0 up && ip link set kvbp0p up"); // the "NIC" that is the first bridge's port
    // The raw floor, judged.
    const rawApplyMs = await rawAll(hosts, rawApply(perHost));
    await judge(hosts, perHost, true, "raw apply");
    const rawReadMs = await rawAll(hosts, RAW_READ);
    const rawDestroyMs = await rawAll(hosts, rawDestroy(perHost));
    await judge(hosts, perHost, false, "raw destroy");

    stack = new Stack(path.join(REPO, "bench", "fleet", "program"), `bench-fleet-${process.pid}-${n}x${perHost}`, bin);
    await stack.init();
    await stack.setConfig("hosts", JSON.stringify(hosts.map((h) => ({ host: h.address, hostKey: h.hostKeyFingerprint }))), { path: false });
    await stack.setConfig("sshKey", hosts[0].privateKey, { secret: true });
    await stack.setConfig("bridges", String(perHost));
    const phase = async (name: string, args: string[], rawMs: number, want: boolean, env: NodeJS.ProcessEnv = {}) => {
      const before = hosts.map((h) => [h.acceptedConnections(), h.sessionsStarted()]);
      const cpu0 = machineCpuS();
      // Any failed operation fails the phase (pulumi exits non-zero) and so the bench: a row is 0 failures.
      const r = await pulumiMeasured(stack!, args, env);
      const cpu = machineCpuS() - cpu0;
      if (r.code !== 0) throw new Error(`${name}: pulumi ${args.join(" ")} exited ${r.code}\n${r.out.slice(-4000)}`);
      await judge(hosts, perHost, want, name);
      const hs = hosts.reduce((a, h, i) => a + h.acceptedConnections() - before[i][0], 0) / n;
      const rt = hosts.reduce((a, h, i) => a + h.sessionsStarted() - before[i][1], 0) / (n * perHost);
      rows.push({
        hosts: n,
        bridgesPerHost: perHost,
        phase: name,
        rawMs,
        kvmnetMs: r.ms,
        ratio: r.ms / rawMs,
        handshakesPerHost: hs,
        roundTripsPerResource: perHost ? rt : 0,
        machineCpuS: Math.round(cpu * 10) / 10,
        kinds: r.kinds,
      });
    };
    // The engine's own floor: the same `up` of the same program declaring no resources.
    await stack.setConfig("bridges", "0");
    await phase("engine floor: no resources", ["up", "--yes", "--skip-preview"], rawApplyMs, false);
    await stack.setConfig("bridges", String(perHost));
    const up = ["up", "--yes", "--skip-preview"];
    const profileDir = process.env.KVMNET_BENCH_PROFILE && path.resolve(process.env.KVMNET_BENCH_PROFILE, `${n}x${perHost}`);
    if (profileDir) fs.mkdirSync(profileDir, { recursive: true });
    await phase("apply from empty", up, rawApplyMs, true, profileDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` } : {});
    await phase("no change, with reads", ["preview", "--refresh", "--expect-no-changes"], rawReadMs, true);
    await phase("destroy", ["destroy", "--yes", "--skip-preview"], rawDestroyMs, false);
    if (profileDir) {
      // The engine's share that is checkpoints: the same apply with Pulumi's PULUMI_SKIP_CHECKPOINTS (final state only).
      await phase("apply, skip checkpoints", up, rawApplyMs, true, { PULUMI_SKIP_CHECKPOINTS: "true" });
      await phase("destroy, skip checkpoints", ["destroy", "--yes", "--skip-preview"], rawDestroyMs, false, { PULUMI_SKIP_CHECKPOINTS: "true" });
      printProgramProfile(profileDir);
    }
  } finally {
    await stack?.dispose().catch(() => undefined);
    await fleet?.stop();
  }
  return rows;
}

async function main(): Promise<void> {
  // "20" is 20 hosts with the workload's 5 bridges each; "1x60" is one host with 60 (sshd's MaxSessions is 10).
  const sizes = process.argv.slice(2).map((a) => {
    const m = /^(\d+)(?:x(\d+))?$/.exec(a);
    if (!m || Number(m[1]) < 1) throw new Error(`fleet size ${JSON.stringify(a)}: give hosts (20) or hosts x bridges per host (1x60)`);
    return { hosts: Number(m[1]), perHost: Number(m[2] ?? BRIDGES) };
  });
  if (!sizes.length) sizes.push({ hosts: 5, perHost: BRIDGES }, { hosts: 20, perHost: BRIDGES });
  const bin = await ensurePulumi();
  process.env.PATH = `${bin}:${process.env.PATH ?? ""}`;
  const rows: Row[] = [];
  for (const { hosts, perHost } of sizes) rows.push(...(await one(hosts, perHost, bin)));
  const f = (k: ProcFigures) => `${k.cpuS.toFixed(1)}/${k.peakRssMb}`;
  console.log(`\nfleet bench: sandbox hosts on this machine (${os.cpus().length} cores), node ${process.version}; every row 0 failures (any failure stops the bench)`);
  console.log(
    "hosts x bridges  phase                        raw ssh    kvmnet   ratio  handshakes/host  round trips/resource  machine CPU s  CPU s / peak RSS MB: engine  langhost  program  provider",
  );
  for (const r of rows) {
    console.log(
      `${`${r.hosts} x ${r.bridgesPerHost}`.padStart(15)}  ${r.phase.padEnd(27)} ${s(r.rawMs).padStart(8)} ${s(r.kvmnetMs).padStart(9)} ${r.ratio.toFixed(2).padStart(6)}x ${r.handshakesPerHost.toFixed(1).padStart(15)} ${r.roundTripsPerResource.toFixed(2).padStart(21)} ${r.machineCpuS.toFixed(1).padStart(14)}  ${f(r.kinds.engine).padStart(27)} ${f(r.kinds.langhost).padStart(9)} ${f(r.kinds.program).padStart(8)} ${f(r.kinds.provider).padStart(9)}`,
    );
  }
  const floor = rssFloor();
  console.log(
    `\nRSS floor of the provider process: node with @pulumi/pulumi loaded ${floor.pulumiMb} MB, plus pulumi-kvmnet/provider ${floor.withProviderMb} MB (the dynamic provider process is @pulumi/pulumi's own)`,
  );
  const out = process.env.KVMNET_BENCH_JSON ?? path.join(__dirname, "last.json");
  fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, rssFloor: floor, rows }, null, 2) + "\n");
  console.log(`\nwrote ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
