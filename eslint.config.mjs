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
      // test/tsconfig.json is the one project that includes every .ts file (sdk, provider, test, bench, scripts, examples).
      parserOptions: { project: "./test/tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // A leading underscore marks a name kept on purpose: an unused parameter of an interface's signature, or a
      // key destructured only to leave it out of `...rest`.
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", ignoreRestSiblings: true }],
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
