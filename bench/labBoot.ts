/**
 * Benchmark (prints figures; asserts nothing): what a lab host costs cold, and what
 * "boot once, restore many" (testbed/labHost.ts, Snapshots) costs and saves, side by
 * side in one run on one machine configuration (the default one, or KVL_BENCH_LAN=1
 * for the LAN-tap one). Boots QEMU: take the shared lock.
 *   flock /tmp/kvmnet-lab.lock npx tsx bench/labBoot.ts [restores=3]
 * It discards that configuration's snapshot first, so the build is measured from empty.
 *
 * Measured on the 2-core CI machine (qemu 7.2, TCG), default devices, one run:
 *   cold boot to SSH 32.5 s; first boot of the configuration 48.6 s = cold to SSH 42.5 s
 *   + settle 0.9 s + save 2.3 s (307 MiB state) + restore to SSH 2.1 s; restores
 *   3.5 / 3.2 / 2.3 s per bootLabHost() call, guest clock within 0.3 s after the fix:
 *   a restore call is 11x cheaper than a cold one. (Cold boots to SSH vary 27–50 s here.)
 */
import { execFileSync } from "child_process";
import { bootLabHost, BootLabHostOptions, cleanupStaleLab, discardLabSnapshot, ensureLabImage, LabHost, snapshotKey } from "../testbed/labHost";

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function timed(opts: BootLabHostOptions): Promise<{ host: LabHost; callMs: number }> {
  const t0 = Date.now();
  const host = await bootLabHost(opts);
  return { host, callMs: Date.now() - t0 };
}

async function main(): Promise<void> {
  const restores = Number(process.argv[2] ?? 3);
  cleanupStaleLab();
  const imageDir = (await ensureLabImage()).dir;
  const ns = `kvl-bench${process.pid}`;
  const lan = process.env.KVL_BENCH_LAN === "1";
  if (lan) execFileSync("ip", ["netns", "add", ns]);
  const opts: BootLabHostOptions = { imageDir, ...(lan ? { lan: { netns: ns } } : {}) };
  const rows: string[] = [];
  try {
    const key = snapshotKey(opts);
    discardLabSnapshot(key);

    const cold = await timed({ ...opts, snapshot: false });
    const coldUp = (await cold.host.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 180_000 })).stdout.trim();
    await cold.host.shutdown();
    rows.push(`cold boot (snapshot: false): to SSH ${s(cold.host.bootMs)}, bootLabHost() call ${s(cold.callMs)} (then ${coldUp})`);

    const first = await timed(opts);
    const b = first.host.boot.built;
    await first.host.shutdown();
    rows.push(
      `first boot of the configuration (builds the snapshot): call ${s(first.callMs)} = cold to SSH ${s(b?.coldBootMs ?? NaN)} + settle ${s(b?.settleMs ?? NaN)} + save ${s(b?.saveMs ?? NaN)} ` +
        `(${((b?.stateBytes ?? 0) / 2 ** 20).toFixed(0)} MiB state) + restore to SSH ${s(first.host.bootMs)}; mode ${first.host.boot.mode}`,
    );

    const calls: number[] = [];
    for (let i = 0; i < restores; i++) {
      const r = await timed(opts);
      const clockSkewMs = Math.abs(Number((await r.host.exec("date +%s%3N")).stdout.trim()) - Date.now());
      await r.host.shutdown();
      calls.push(r.callMs);
      rows.push(`restore ${i + 1}: mode ${r.host.boot.mode}, to SSH ${s(r.host.bootMs)}, call ${s(r.callMs)}, guest clock off by ${clockSkewMs} ms after the fix`);
    }
    const avg = calls.reduce((a, c) => a + c, 0) / Math.max(1, calls.length);
    rows.push(`ratio cold call / restore call: ${(cold.callMs / avg).toFixed(1)}x; first (build) call / cold call: ${(first.callMs / cold.callMs).toFixed(2)}x`);
    rows.push(`break-even: the build costs ${s(first.callMs - avg)} over a restore, each restore saves ${s(cold.callMs - avg)} over a cold boot`);
  } finally {
    if (lan) execFileSync("ip", ["netns", "del", ns]);
  }
  console.log(`lab boot bench (${lan ? "LAN tap" : "default devices"}):\n  ${rows.join("\n  ")}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
