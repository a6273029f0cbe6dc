// Three tiers, each its own jest project so they can be run alone
// (`jest --selectProjects unit`). Integration tiers need root and real
// kernel features; they fail loudly under CI=true when those are missing.
const tsJest = ["ts-jest", { tsconfig: "test/tsconfig.json" }];
const base = { testEnvironment: "node", transform: { "^.+\\.ts$": tsJest } };
module.exports = {
  projects: [
    { ...base, displayName: "unit", testMatch: ["<rootDir>/test/unit/**/*.test.ts"] },
    { ...base, displayName: "sandbox", testMatch: ["<rootDir>/test/sandbox/**/*.test.ts"], testTimeout: 120000 },
    { ...base, displayName: "engine", testMatch: ["<rootDir>/test/engine/**/*.test.ts"], testTimeout: 600000 },
  ],
};
