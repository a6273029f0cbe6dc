/**
 * Benchmark (prints figures; asserts nothing): two lab guests at once, as the two lab
 * lanes of scripts/test-tiers.js run them, with 1 or 2 vCPUs each. Per round: both
 * boot cold to SSH and a settled system, then both reboot. Rounds alternate the vCPU
 * count (2, 1, 2, 1, ...) so that load drifting on the machine hits both alike.
 * Boots QEMU.
 *   npx tsx bench/labCpus.ts [rounds=4]
 *
 * Runs on 2026-12-04 (2 cores, qemu 7.2 TCG):
 * - beside a full CI run (load average 9): 2 vCPUs boot 89/88 s, reboot 177/175 s,
 *   round 280 s; 1 vCPU boot 109/103 s, reboot 124/117 s, round 240 s;
 * - on a quieter machine (load 3-4), `npx tsx bench/labCpus.ts 2`: 2 vCPUs mean boot to
 *   SSH 46.8 s, reboot 73.6 s, round 128.4 s; 1 vCPU 36.2 s, 50.5 s, 92.0 s: round
 *   wall 1 vCPU / 2 vCPUs 0.72. Lab guests default to 1 vCPU since.
 */
import { bootLabHost, cleanupStaleLab, ensureLabImage, LabHost } from "../testbed/labHost";

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function one(imageDir: string, cpus: number): Promise<{ bootMs: number; settledMs: number; rebootMs: number }> {
  const t0 = Date.now();
  let h: LabHost | undefined;
  try {
    h = await bootLabHost({ imageDir, cpus, snapshot: false });
    const bootMs = Date.now() - t0;
    await h.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 300_000 });
    const settledMs = Date.now() - t0;
    const r = await h.reboot();
    await h.exec("systemctl is-system-running --wait", { allowFail: true, timeoutMs: 300_000 });
    return { bootMs, settledMs, rebootMs: r.ms };
  } finally {
    await h?.shutdown();
  }
}

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 4);
  cleanupStaleLab();
  const imageDir = (await ensureLabImage()).dir;
  const sums: Record<number, { n: number; boot: number; settled: number; reboot: number; wall: number }> = {};
  for (let i = 0; i < rounds; i++) {
    const cpus = i % 2 === 0 ? 2 : 1;
    const t0 = Date.now();
    const both = await Promise.all([one(imageDir, cpus), one(imageDir, cpus)]);
    const wall = Date.now() - t0;
    const acc = (sums[cpus] ??= { n: 0, boot: 0, settled: 0, reboot: 0, wall: 0 });
    for (const b of both) {
      acc.n++;
      acc.boot += b.bootMs;
      acc.settled += b.settledMs;
      acc.reboot += b.rebootMs;
    }
    acc.wall += wall;
    console.log(`round ${i + 1}, ${cpus} vCPU each: ${both.map((b) => `boot ${s(b.bootMs)} settled ${s(b.settledMs)} reboot ${s(b.rebootMs)}`).join(" | ")}; wall ${s(wall)}`);
  }
  console.log("\nvCPUs  guests  mean boot to SSH  mean settled  mean reboot  mean round wall");
  for (const [cpus, a] of Object.entries(sums)) {
    console.log(
      `${cpus.padStart(5)}  ${String(a.n).padStart(6)}  ${s(a.boot / a.n).padStart(16)}  ${s(a.settled / a.n).padStart(12)}  ${s(a.reboot / a.n).padStart(11)}  ${s(a.wall / (a.n / 2)).padStart(15)}`,
    );
  }
  if (sums[1] && sums[2]) console.log(`\nround wall, 1 vCPU / 2 vCPUs: ${(sums[1].wall / sums[1].n / (sums[2].wall / sums[2].n)).toFixed(2)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
