/**
 * Benchmark (prints figures; asserts nothing): what Node's compile cache
 * (NODE_COMPILE_CACHE, set by scripts/test-tiers.js) saves on the start of a
 * process that loads @pulumi/pulumi, as the program and the dynamic provider of
 * every `pulumi` run in the engine, scenario and lab-engine tests do. Rounds
 * alternate without / with a warm cache, so load drifting on the machine hits both.
 *   npx tsx bench/nodeCompileCache.ts [rounds=10]
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const script = "require('@pulumi/pulumi'); require('@pulumi/pulumi/dynamic'); require('pulumi-kvmnet');";

function once(cache?: string): number {
  const env = { ...process.env };
  delete env.NODE_COMPILE_CACHE;
  if (cache) env.NODE_COMPILE_CACHE = cache;
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, ["-e", script], { cwd: path.join(__dirname, ".."), env, stdio: "inherit" });
  if (r.status !== 0) throw new Error(`node exited ${r.status}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const rounds = Number(process.argv[2] ?? 10);
const cache = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-ncc-"));
try {
  once(cache); // fill it
  const without: number[] = [];
  const withCache: number[] = [];
  for (let i = 0; i < rounds; i++) {
    without.push(once());
    withCache.push(once(cache));
  }
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  console.log(`node ${process.version}, ${rounds} rounds, start of a process that loads @pulumi/pulumi and pulumi-kvmnet`);
  console.log(`  without compile cache  ${mean(without).toFixed(0)} ms`);
  console.log(`  with a warm cache      ${mean(withCache).toFixed(0)} ms`);
  console.log(`  ratio with / without   ${(mean(withCache) / mean(without)).toFixed(2)}`);
} finally {
  fs.rmSync(cache, { recursive: true, force: true });
}
