#!/usr/bin/env node
// Runs the test tiers as two jest processes side by side: one for everything
// that boots the QEMU lab host (projects lab and scenarios-lab: one guest at a
// time, it keeps both cores busy while it boots) and one for the rest (unit,
// sandbox, engine, scenarios). The lab tier alone is most of the suite's wall
// time; the other tiers mostly wait on SSH round trips and the engine, so they
// fit beside it. Each line of output is prefixed with its process's name; the
// run ends with one plain closing line summing both ("tests: N passed, N
// failed") and exits non-zero when either process failed.
//
//   node scripts/test-tiers.js [extra jest args…]
//   KVMNET_TEST_SERIAL=1 node scripts/test-tiers.js   # one jest process, tiers in turn
//   node scripts/test-tiers.js --selectProjects unit  # likewise, for the projects named
"use strict";
const { spawn } = require("child_process");
const path = require("path");

const jest = path.join(__dirname, "..", "node_modules", "jest", "bin", "jest.js");
const extra = process.argv.slice(2);
// A selection of projects of one's own (`npm test -- --selectProjects unit`) runs as one process.
const groups =
  process.env.KVMNET_TEST_SERIAL || extra.includes("--selectProjects")
    ? [["jest", []]]
    : [
        ["lab", ["--selectProjects", "lab", "scenarios-lab"]],
        ["rest", ["--selectProjects", "unit", "sandbox", "engine", "scenarios"]],
      ];

/** Children still running, killed (by pid, as a process group) when we are interrupted. */
const running = new Set();
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    for (const c of running) {
      try {
        process.kill(-c.pid, sig);
      } catch {
        /* already gone */
      }
    }
  });
}

function runGroup([name, args]) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [jest, ...args, ...extra], { stdio: ["ignore", "pipe", "pipe"], detached: true });
    running.add(child);
    let closing = "";
    const prefix = (stream, out) => {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (d) => {
        buf += d;
        const lines = buf.split("\n");
        buf = lines.pop();
        for (const l of lines) {
          if (/^tests: \d+ passed, \d+ failed$/.test(l)) closing = l;
          out.write(`[${name}] ${l}\n`);
        }
      });
      stream.on("end", () => buf && out.write(`[${name}] ${buf}\n`));
    };
    prefix(child.stdout, process.stdout);
    prefix(child.stderr, process.stderr);
    child.on("close", (code, signal) => {
      running.delete(child);
      const m = /^tests: (\d+) passed, (\d+) failed$/.exec(closing);
      resolve({ name, code: code ?? 1, signal, passed: m ? Number(m[1]) : 0, failed: m ? Number(m[2]) : 0 });
    });
  });
}

(async () => {
  const started = Date.now();
  const results = await Promise.all(groups.map(runGroup));
  const lines = ["", `tiers side by side: ${((Date.now() - started) / 60000).toFixed(1)} min wall`];
  for (const r of results) lines.push(`  ${r.name.padEnd(5)} exit ${r.signal ?? r.code}, ${r.passed} passed, ${r.failed} failed`);
  const passed = results.reduce((n, r) => n + r.passed, 0);
  const failed = results.reduce((n, r) => n + r.failed, 0) + results.filter((r) => r.code !== 0 && r.failed === 0).length;
  lines.push("", `tests: ${passed} passed, ${failed} failed`);
  process.stderr.write(lines.join("\n") + "\n");
  process.exit(results.every((r) => r.code === 0) ? 0 : 1);
})();
