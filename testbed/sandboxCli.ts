/**
 * Sandbox fleet by hand (root only):
 *
 *   npm run sandbox -- up N [--json] [--keep-dir]   start N hosts, print how to reach them,
 *                                                 tear down on Ctrl-C / SIGTERM
 *   npm run sandbox -- down                         remove fleets whose owner process died
 *   npm run sandbox -- ls                           list recorded fleets
 */
import { cleanupStale, listFleets, startFleet, type Fleet } from "./fleet";

const USAGE = `usage: npm run sandbox -- up N [--json] [--keep-dir] | down | ls`;

function describeFleet(fleet: Fleet): unknown {
  return {
    runId: fleet.runId,
    dir: fleet.dir,
    upstream: { netns: fleet.upstream.netns, address: fleet.upstream.address },
    hosts: fleet.hosts.map((h) => ({
      index: h.index,
      netns: h.netns,
      address: h.address,
      port: h.port,
      user: h.user,
      privateKeyPath: h.privateKeyPath,
      knownHostsPath: h.knownHostsPath,
      hostKeyFingerprint: h.hostKeyFingerprint,
      hostKeyLine: h.hostKeyLine,
      publicKeyLine: h.publicKeyLine,
      uplink: h.uplink,
      uplinkAddress: h.uplinkAddress,
      sshdPid: h.sshdPid,
      sshdLogPath: h.sshdLogPath,
      ssh: sshCommand(h),
    })),
  };
}

function sshCommand(h: Fleet["hosts"][number]): string {
  return `ssh -i ${h.privateKeyPath} -o UserKnownHostsFile=${h.knownHostsPath} ${h.user}@${h.address}`;
}

async function up(args: string[]): Promise<void> {
  const n = Number(args.find((a) => !a.startsWith("--")));
  const json = args.includes("--json");
  const keepDir = args.includes("--keep-dir");
  const unknown = args.filter((a) => a.startsWith("--") && a !== "--json" && a !== "--keep-dir");
  if (!Number.isInteger(n) || n < 1 || unknown.length > 0) {
    console.error(USAGE);
    process.exit(2);
  }
  const fleet = await startFleet(n, { keepDir });
  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    await fleet.stop();
    console.error(`fleet ${fleet.runId} stopped (${why})${keepDir ? `; kept ${fleet.dir}` : ""}`);
    process.exit(0);
  };
  // startFleet's own handlers (registered first) tear down synchronously; these then
  // find the fleet stopped, report and exit.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => void stop(sig));

  if (json) {
    console.log(JSON.stringify({ ownerPid: process.pid, ...(describeFleet(fleet) as object) }, null, 2));
  } else {
    console.log(`fleet ${fleet.runId}: ${n} host(s); files in ${fleet.dir}; upstream ${fleet.upstream.netns} ${fleet.upstream.address}/24`);
    for (const h of fleet.hosts) {
      console.log(`host ${h.index}  netns ${h.netns}  uplink ${h.uplink} ${h.uplinkAddress}/24  sshd pid ${h.sshdPid}`);
      console.log(`  ${sshCommand(h)}`);
      console.log(`  host key ${h.hostKeyFingerprint}`);
      console.log(`  inside without ssh: nsenter -t ${h.sshdPid} -n -m -u`);
    }
    // `kill <npm's pid>` does not reach us (npm exits and leaves its child running).
    console.log(`Ctrl-C or \`kill ${process.pid}\` stops the fleet.`);
  }
  setInterval(() => undefined, 1 << 30); // stay up until a signal
}

async function down(): Promise<void> {
  const removed = await cleanupStale();
  if (removed.length === 0) {
    const live = listFleets().filter((f) => f.alive);
    console.log(`no stale sandbox fleets${live.length ? ` (${live.length} live: stop them from their owner process)` : ""}`);
    return;
  }
  for (const r of removed) console.log(`removed ${r}`);
}

function ls(): void {
  const fleets = listFleets();
  if (fleets.length === 0) {
    console.log("no sandbox fleets");
    return;
  }
  for (const f of fleets) {
    const state = f.alive ? "live" : "stale (run `npm run sandbox -- down`)";
    console.log(`${f.runId}  owner pid ${f.ownerPid}  ${state}  since ${f.created}  ${f.dir}`);
    for (const h of f.hosts) console.log(`  host ${h.index}  ${h.netns}  ${h.address}`);
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "up":
      return up(rest);
    case "down":
      return down();
    case "ls":
      return ls();
    default:
      console.error(USAGE);
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
