// The interop conformance cases against the TestService served by `roster serve` (2 workers).

import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { type RosterServer, serve } from "../../src/server/index.ts";
import { defineInteropSuite } from "../interop/suite.ts";

let server: RosterServer | undefined;

before(async () => {
  server = await serve({
    module: fileURLToPath(new URL("../interop/serve-module.ts", import.meta.url)),
    workers: 2,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
  });
});

after(async () => {
  await server?.close();
});

defineInteropSuite("through roster serve", () => {
  if (server === undefined) throw new Error("roster serve did not start");
  return server.address;
});
