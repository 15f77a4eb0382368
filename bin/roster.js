#!/usr/bin/env node
// The `roster` command. Runs the compiled CLI (dist/, built by `npm install` through `prepare`);
// in a checkout without a build, or with ROSTER_FROM_SOURCE=1 (a build may be stale while you edit),
// it runs the TypeScript sources through tsx.
import { existsSync } from "node:fs";

const dist = new URL("../dist/cli/main.js", import.meta.url);
if (existsSync(dist) && process.env.ROSTER_FROM_SOURCE !== "1") {
  await import(dist.href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(new URL("../src/cli/main.ts", import.meta.url).href);
}
