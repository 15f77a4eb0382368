// Import rules of DESIGN.md: data flows one way; core is pure; no cycles.
// cli → products (proxy, server, client, bench) → channel → platform / discovery / health / observe → core
/** @type {import('dependency-cruiser').IConfiguration} */
const layer = (name) => `^src/${name}/`;
module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", from: {}, to: { circular: true } },
    {
      name: "tests-use-only-core-and-support",
      comment: "unit tests of core may import core, test/support and node:test/assert",
      severity: "error",
      from: { path: "^src/core/.*\\.test\\.ts$" },
      to: { pathNot: ["^src/core/", "^test/support/", "^(node:)?(test|assert)"] },
    },
    {
      name: "core-is-pure",
      comment: "src/core imports nothing outside core and no node:* builtins",
      severity: "error",
      from: { path: layer("core"), pathNot: "\\.test\\.ts$" },
      to: { pathNot: [layer("core")] },
    },
    {
      name: "low-layers-stay-low",
      comment: "platform/discovery/health/observe may import only core and each other (never channel or products)",
      severity: "error",
      from: { path: "^src/(platform|discovery|health|observe)/" },
      to: { path: "^src/(channel|proxy|server|client|transfer|bench|cli)/" },
    },
    {
      name: "channel-below-products",
      severity: "error",
      from: { path: layer("channel") },
      to: { path: "^src/(proxy|server|client|transfer|bench|cli)/" },
    },
    {
      name: "products-never-import-cli",
      severity: "error",
      from: { path: "^src/(proxy|server|client|transfer|bench)/" },
      to: { path: layer("cli") },
    },
    {
      name: "no-test-code-in-src",
      severity: "error",
      from: { path: "^src/", pathNot: "\\.test\\.ts$" },
      to: { path: "^test/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    exclude: { path: "node_modules" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"] },
  },
};
