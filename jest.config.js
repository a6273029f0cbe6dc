// Five tiers, each its own jest project so they can be run alone
// (`jest --selectProjects unit`). Integration tiers need root and real
// kernel features; they fail loudly under CI=true when those are missing.
const tsJest = ["ts-jest", { tsconfig: "test/tsconfig.json" }];
const base = { testEnvironment: "node", transform: { "^.+\\.ts$": tsJest } };
module.exports = {
  // Per-test limit for the integration tiers (jest reads it globally, not per project);
  // engine tests raise it themselves with jest.setTimeout.
  testTimeout: 120000,
  // The default output, then a time table per tier, the slowest files and a plain closing line.
  reporters: ["default", "<rootDir>/test/support/timeTable.js"],
  projects: [
    { ...base, displayName: "unit", testMatch: ["<rootDir>/test/unit/**/*.test.ts"] },
    { ...base, displayName: "sandbox", testMatch: ["<rootDir>/test/sandbox/**/*.test.ts"] },
    { ...base, displayName: "engine", testMatch: ["<rootDir>/test/engine/**/*.test.ts"] },
    // Tier 3: a Debian guest under QEMU (802.1Q, IOMMU, systemd), see testbed/labHost.ts.
    { ...base, displayName: "lab", testMatch: ["<rootDir>/test/lab/**/*.test.ts"] },
    // Tier 5: whole programs as users write them (several kinds, several hosts) under the
    // real engine, judged from outside the host (a client upstream, a guest on the bridge).
    // Scenarios on the lab host (*.lab.test.ts) are a project of their own, so that
    // scripts/test-tiers.js can run everything that boots QEMU in one jest process.
    { ...base, displayName: "scenarios", testMatch: ["<rootDir>/test/scenarios/**/*.test.ts"], testPathIgnorePatterns: ["\\.lab\\.test\\.ts$"] },
    { ...base, displayName: "scenarios-lab", testMatch: ["<rootDir>/test/scenarios/**/*.lab.test.ts"] },
  ],
};
