// gRPC interop conformance, client → server with no balancer in between: the baseline the balancer runs
// (which reuse defineInteropSuite with the balancer's address) must match.
import { after, before } from "node:test";
import { type InteropServer, startInteropServer } from "../interop/server.ts";
import { defineInteropSuite } from "../interop/suite.ts";

let server: InteropServer | undefined;

before(async () => {
  server = await startInteropServer();
});

after(async () => {
  await server?.close();
});

defineInteropSuite("direct", () => {
  if (server === undefined) throw new Error("interop server did not start");
  return server.address;
});
