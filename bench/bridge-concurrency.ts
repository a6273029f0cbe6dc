/**
 * Benchmark (prints figures; asserts nothing): N Bridge creates at once on one
 * sandbox host, then N deletes, through the provider as the engine calls it.
 *   sudo npx tsx bench/bridge-concurrency.ts [N=40]
 */
import { closeAllConnections, poolStats } from "../provider/host";
import { bridgeProvider } from "../provider/resources/bridge";
import { startFleet } from "../testbed/fleet";

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 40);
  const fleet = await startFleet(1);
  const h = fleet.hosts[0];
  const connection = { host: h.address, privateKey: h.privateKey, hostKey: h.hostKeyFingerprint };
  try {
    const t0 = Date.now();
    const created = await Promise.all(Array.from({ length: n }, async (_, i) => bridgeProvider.create((await bridgeProvider.check({}, { connection, name: `brb${i}` })).inputs)));
    const t1 = Date.now();
    await Promise.all(created.map((c) => bridgeProvider.delete(c.id, c.outs)));
    const t2 = Date.now();
    const rss = Math.round(process.memoryUsage().rss / 1024 / 1024);
    console.log(`bridges=${n} create_all_ms=${t1 - t0} delete_all_ms=${t2 - t1} per_create_ms=${((t1 - t0) / n).toFixed(1)}`);
    console.log(
      `ssh_handshakes=${poolStats.handshakes} commands=${poolStats.commands} channel_retries=${poolStats.channelRetries} sshd_accepted=${h.acceptedConnections()} rss_mb=${rss}`,
    );
  } finally {
    closeAllConnections();
    await fleet.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
