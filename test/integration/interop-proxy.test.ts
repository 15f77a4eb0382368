// The interop conformance cases with `roster lb` between client and server: every case must pass as it
// does direct (interop-direct.test.ts), with both clients.
import { after, before } from "node:test";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import { type InteropServer, startInteropServer } from "../interop/server.ts";
import { defineInteropSuite } from "../interop/suite.ts";

let server: InteropServer | undefined;
let lb: Lb | undefined;

before(async () => {
  server = await startInteropServer();
  lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: server.port })],
    policy: createDefaultRegistry().resolve("round_robin", {}),
  });
});

after(async () => {
  await lb?.close(1000);
  await server?.close();
});

defineInteropSuite("through roster lb", () => {
  if (lb === undefined) throw new Error("balancer did not start");
  return lb.server.address;
});
