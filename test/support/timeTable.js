// A jest reporter: after the run, time per tier (jest project) and the ten
// slowest test files, then one plain closing line ("tests: N passed, N failed")
// that CI reads. jest reports on stderr and prints its own summary after every
// reporter, so the closing line is written when the process exits. Time per
// tier is the sum of its files' runtimes (files of different tiers may run
// side by side). CommonJS: jest loads reporters without a transform.
//
// Under scripts/test-tiers.js (several jest processes) KVMNET_TIMES_FILE names
// a file to write the per-file figures to as JSON instead: test-tiers prints
// one table and one closing line for the whole run.
const fs = require("fs");

/** Per-file figures of a jest run. */
function fileFigures(results) {
  return results.testResults.map((r) => ({
    file: r.testFilePath.replace(`${process.cwd()}/`, ""),
    tier: (r.displayName && (r.displayName.name || r.displayName)) || "default",
    ms: r.perfStats ? r.perfStats.end - r.perfStats.start : 0,
    tests: r.numPassingTests + r.numFailingTests,
    passed: r.numPassingTests,
    failed: r.numFailingTests + (r.testExecError ? 1 : 0),
  }));
}

/** The table: time per tier, then the ten slowest files. */
function table(files) {
  const fmt = (ms) => `${(ms / 1000).toFixed(1)} s`.padStart(9);
  const tiers = new Map();
  for (const f of files) {
    const t = tiers.get(f.tier) || { files: 0, tests: 0, failed: 0, ms: 0 };
    t.files += 1;
    t.tests += f.tests;
    t.failed += f.failed;
    t.ms += f.ms;
    tiers.set(f.tier, t);
  }
  const lines = ["", "time per tier", "  tier           files  tests  failed      time"];
  for (const [tier, t] of tiers)
    lines.push(`  ${String(tier).padEnd(13)} ${String(t.files).padStart(6)} ${String(t.tests).padStart(6)} ${String(t.failed).padStart(7)} ${fmt(t.ms)}`);
  lines.push("", "ten slowest files");
  for (const f of [...files].sort((a, b) => b.ms - a.ms).slice(0, 10)) lines.push(`  ${fmt(f.ms)}  ${f.file}`);
  return lines.join("\n") + "\n";
}

class TimeTableReporter {
  onRunComplete(_contexts, results) {
    const files = fileFigures(results);
    const passed = results.numPassedTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    if (process.env.KVMNET_TIMES_FILE) {
      fs.writeFileSync(process.env.KVMNET_TIMES_FILE, JSON.stringify({ files, passed, failed }));
      return;
    }
    process.stderr.write(table(files));
    const closing = `tests: ${passed} passed, ${failed} failed`;
    process.once("exit", () => process.stderr.write(`\n${closing}\n`));
  }
}
module.exports = TimeTableReporter;
module.exports.table = table;
