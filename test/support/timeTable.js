// A jest reporter: after the run, time per tier (jest project) and the ten
// slowest test files, then one plain closing line ("tests: N passed, N failed")
// that CI reads. jest reports on stderr and prints its own summary after every
// reporter, so the closing line is written when the process exits. Time per
// tier is the sum of its files' runtimes (files of different tiers may run
// side by side). CommonJS: jest loads reporters without a transform.
class TimeTableReporter {
  onRunComplete(_contexts, results) {
    const fmt = (ms) => `${(ms / 1000).toFixed(1)} s`.padStart(9);
    const tiers = new Map();
    const files = [];
    for (const r of results.testResults) {
      const tier = (r.displayName && (r.displayName.name || r.displayName)) || "default";
      const ms = r.perfStats ? r.perfStats.end - r.perfStats.start : 0;
      const t = tiers.get(tier) || { files: 0, tests: 0, failed: 0, ms: 0 };
      t.files += 1;
      t.tests += r.numPassingTests + r.numFailingTests;
      t.failed += r.numFailingTests + (r.testExecError ? 1 : 0);
      t.ms += ms;
      tiers.set(tier, t);
      files.push({ file: r.testFilePath.replace(`${process.cwd()}/`, ""), ms });
    }
    const lines = ["", "time per tier", "  tier        files  tests  failed      time"];
    for (const [tier, t] of tiers)
      lines.push(`  ${String(tier).padEnd(10)} ${String(t.files).padStart(6)} ${String(t.tests).padStart(6)} ${String(t.failed).padStart(7)} ${fmt(t.ms)}`);
    lines.push("", "ten slowest files");
    for (const f of files.sort((a, b) => b.ms - a.ms).slice(0, 10)) lines.push(`  ${fmt(f.ms)}  ${f.file}`);
    process.stderr.write(lines.join("\n") + "\n");
    const closing = `tests: ${results.numPassedTests} passed, ${results.numFailedTests + results.numRuntimeErrorTestSuites} failed`;
    process.once("exit", () => process.stderr.write(`\n${closing}\n`));
  }
}
module.exports = TimeTableReporter;
