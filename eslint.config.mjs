// ESLint for the TypeScript (type-aware: typescript-eslint's recommendedTypeChecked) and the
// CommonJS scripts. Formatting is prettier's alone (eslint-config-prettier, last). Run through
// `npm run lint` (scripts/lint.sh), which builds first: the examples import "pulumi-kvmnet",
// whose types are dist/sdk/*.d.ts.
import js from "@eslint/js";
import prettier from "eslint-config-prettier";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".pulumi-test/"] },
  { linterOptions: { reportUnusedDisableDirectives: "error" } },
  js.configs.recommended,
  {
    files: ["**/*.ts"],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      // test/tsconfig.json is the one project that includes every .ts file (sdk, provider, test, testbed, bench, scripts, examples).
      parserOptions: { project: "./test/tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // A leading underscore marks a name kept on purpose: an unused parameter of an interface's signature, or a
      // key destructured only to leave it out of `...rest`.
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", ignoreRestSiblings: true }],
      // sdk/provider.ts requires the provider inside each serialized closure on purpose (see its comment); nothing else may.
      "@typescript-eslint/no-require-imports": ["error", { allow: ["^pulumi-kvmnet/provider$"] }],
      // Passing a caught value on unchanged (reject(e) in a catch) is a rethrow, not a new non-Error reason.
      "@typescript-eslint/prefer-promise-reject-errors": ["error", { allowThrowingUnknown: true }],
      // Off: `async` without `await` is how a synchronous body meets a Promise-returning interface (the engine's
      // check/diff, test fakes) and turns its throws into rejections.
      "@typescript-eslint/require-await": "off",
    },
  },
  {
    files: ["test/**/*.ts"],
    rules: {
      // Off in tests: they probe `ip -j`/`nft -j`/engine-state JSON ad hoc, and JSON.parse gives `any`; a wrong shape
      // fails the assertion that reads it, so a declared type per probe would add casts, not safety. Likewise
      // `Record<string, any>` for such a probe.
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
  {
    files: ["**/*.js"],
    languageOptions: { sourceType: "commonjs", globals: globals.node },
  },
  {
    files: ["eslint.config.mjs"],
    languageOptions: { globals: globals.node },
  },
  prettier,
);
