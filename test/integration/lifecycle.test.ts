// Starting and stopping the balancer at awkward moments must not throw anything asynchronously.
import assert from "node:assert/strict";
import { it } from "node:test";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { startLb } from "../../src/proxy/lb.ts";
import { startInteropServer } from "../interop/server.ts";

it("closes cleanly while its backend sessions are still connecting (20 times in a row)", async () => {
  const errors: Error[] = [];
  const onError = (e: Error) => errors.push(e);
  process.on("uncaughtException", onError);
  const server = await startInteropServer();
  try {
    for (let i = 0; i < 20; i++) {
      const lb = await startLb({
        listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
        backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: server.port })],
        policy: createDefaultRegistry().resolve("round_robin", {}),
      });
      await lb.close(10);
    }
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    process.off("uncaughtException", onError);
    await server.close();
  }
  assert.deepEqual(
    errors.map((e) => e.message),
    [],
  );
});
