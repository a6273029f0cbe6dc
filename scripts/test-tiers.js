#!/usr/bin/env node
// Runs the test tiers side by side in lanes, one per core. The "rest" lane runs
// one jest process for the tiers that mostly wait on SSH round trips and the
// engine (unit, sandbox, engine, scenarios); the lab lanes (KVMNET_LAB_LANES,
// default 1) run the files that boot the QEMU lab host (projects lab and
// scenarios-lab) one at a time, each as its own jest process, from one queue
// ordered longest first (test/support/durations.json). When the rest lane is
// done it takes lab files from the same queue, so the machine runs as many
// heavy things at once as it has cores (a run with more TCG guests than cores
// beside the engine tiers slowed each guest 1.5-3x, and a boot timed out
// after 300 s). Each line of output
// is prefixed with its lane's name; the run ends with one table for the whole
// run (time per tier, the ten slowest files, each lane's wall time) and one
// plain closing line ("tests: N passed, N failed"), and exits non-zero when
// any jest process failed.
//
//   node scripts/test-tiers.js [extra jest args…]
//   KVMNET_TEST_SERIAL=1 node scripts/test-tiers.js   # one jest process, tiers in turn
//   node scripts/test-tiers.js --selectProjects unit  # likewise, for the projects named
//   KVMNET_LAB_LANES=2 node scripts/test-tiers.js     # two lab lanes from the start
//   KVMNET_WRITE_DURATIONS=1 npm test                 # refresh test/support/durations.json
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { table } = require("../test/support/timeTable");

const root = path.join(__dirname, "..");
const jest = path.join(root, "node_modules", "jest", "bin", "jest.js");
const durationsFile = path.join(root, "test", "support", "durations.json");
const extra = process.argv.slice(2);
const serial = Boolean(process.env.KVMNET_TEST_SERIAL) || extra.includes("--selectProjects");
const labLanes = Math.max(1, Number(process.env.KVMNET_LAB_LANES || 1));
const timesDir = fs.mkdtempSync(path.join(os.tmpdir(), "kvmnet-times-"));
// Every `pulumi` run of the engine, scenario and lab-engine tests starts two Node
// processes (the program and the dynamic provider), each loading @pulumi/pulumi and
// its gRPC stack from scratch; Node's compile cache keeps their V8 bytecode between
// processes (a cache miss just compiles, as without it). `npx tsx bench/nodeCompileCache.ts`:
// such a start takes 0.59x the time with a warm cache (224 vs 377 ms); engine/quickstart.test.ts
// used 37-39 CPU-s instead of 44. Outside the repo, like the other caches.
if (!process.env.NODE_COMPILE_CACHE) {
  const cacheHome = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  process.env.NODE_COMPILE_CACHE = path.join(cacheHome, "kvmnet", "node-compile-cache");
}
let timesSeq = 0;

/** The lab files (projects lab and scenarios-lab), longest first by the recorded durations. */
function labQueue() {
  const durations = JSON.parse(fs.readFileSync(durationsFile, "utf8"));
  const list = (dir, re) =>
    fs
      .readdirSync(path.join(root, dir))
      .filter((f) => re.test(f))
      .map((f) => `${dir}/${f}`);
  const files = [...list("test/lab", /\.test\.ts$/), ...list("test/scenarios", /\.lab\.test\.ts$/)];
  // Unknown files first: their length is unknown, and starting them early bounds the tail.
  return files.sort((a, b) => (durations[b] ?? Infinity) - (durations[a] ?? Infinity) || a.localeCompare(b));
}

/** Children still running, signalled (as process groups) when we are interrupted. */
const running = new Set();
let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    interrupted = true;
    // jest ignores a SIGINT sent to its process group while workers run; SIGTERM
    // stops it, and the lab and sandbox harnesses clean up on SIGTERM.
    for (const c of running) {
      try {
        process.kill(-c.pid, "SIGTERM");
      } catch {
        /* already gone */
      }
    }
  });
}

/** Run one jest process; resolves with its exit and its per-file figures. */
function runJest(lane, args) {
  const timesFile = path.join(timesDir, `${lane}-${++timesSeq}.json`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [jest, ...args, ...extra], {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      env: { ...process.env, KVMNET_TIMES_FILE: timesFile },
    });
    running.add(child);
    const prefix = (stream, out) => {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (d) => {
        buf += d;
        const lines = buf.split("\n");
        buf = lines.pop();
        for (const l of lines) out.write(`[${lane}] ${l}\n`);
      });
      stream.on("end", () => buf && out.write(`[${lane}] ${buf}\n`));
    };
    prefix(child.stdout, process.stdout);
    prefix(child.stderr, process.stderr);
    child.on("close", (code, signal) => {
      running.delete(child);
      let times;
      try {
        times = JSON.parse(fs.readFileSync(timesFile, "utf8"));
      } catch {
        times = undefined; // jest died before its reporter ran
      }
      resolve({ lane, args, code: code ?? 1, signal, times });
    });
  });
}

async function lane(name, next) {
  const started = Date.now();
  const runs = [];
  for (let args = next(); args && !interrupted; args = next()) runs.push(await runJest(name, args));
  return { name, runs, ms: Date.now() - started };
}

(async () => {
  const started = Date.now();
  let lanes;
  if (serial) {
    let done = false;
    lanes = [lane("jest", () => (done ? undefined : ((done = true), [])))];
  } else {
    const queue = labQueue();
    const nextLab = () => {
      const f = queue.shift();
      return f && ["--selectProjects", "lab", "scenarios-lab", "--runTestsByPath", f];
    };
    let restDone = false;
    lanes = [
      lane("rest", () => (restDone ? nextLab() : ((restDone = true), ["--selectProjects", "unit", "sandbox", "engine", "scenarios"]))),
      ...Array.from({ length: labLanes }, (_, i) => lane(`lab${i + 1}`, nextLab)),
    ];
  }
  const results = await Promise.all(lanes);
  const runs = results.flatMap((l) => l.runs);
  const files = runs.flatMap((r) => (r.times ? r.times.files : []));
  let out = table(files);
  out += "\nlanes (wall time)\n";
  for (const l of results) out += `  ${l.name.padEnd(6)} ${(l.ms / 60000).toFixed(1).padStart(5)} min  ${l.runs.length} jest process${l.runs.length === 1 ? "" : "es"}\n`;
  out += `  all    ${((Date.now() - started) / 60000).toFixed(1).padStart(5)} min\n`;
  const lost = runs.filter((r) => !r.times);
  for (const r of lost) out += `\n[${r.lane}] jest ${r.args.join(" ")} ended (${r.signal ?? `exit ${r.code}`}) without reporting its tests: counted as a failure\n`;
  const passed = runs.reduce((n, r) => n + (r.times ? r.times.passed : 0), 0);
  const failed = runs.reduce((n, r) => n + (r.times ? r.times.failed : 0), 0) + lost.length + runs.filter((r) => r.times && r.code !== 0 && r.times.failed === 0).length;
  if (process.env.KVMNET_WRITE_DURATIONS && !serial) {
    const d = JSON.parse(fs.readFileSync(durationsFile, "utf8"));
    for (const f of files) if (f.tier === "lab" || f.tier === "scenarios-lab") d[f.file] = Math.round(f.ms / 1000);
    fs.writeFileSync(durationsFile, JSON.stringify(d, null, 2) + "\n");
    out += `\nwrote ${path.relative(root, durationsFile)}\n`;
  }
  fs.rmSync(timesDir, { recursive: true, force: true });
  process.stderr.write(out + `\ntests: ${passed} passed, ${failed} failed\n`);
  process.exit(!interrupted && runs.every((r) => r.code === 0) && lost.length === 0 ? 0 : 1);
})();
