// Retries of idempotent methods after they reached a backend: on UNAVAILABLE, within a retry budget.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import { EchoClient, echoPath, echoService } from "../support/echo-backend.ts";

interface Backend {
  port: number;
  calls: number;
  server: grpc.Server;
}

/** A backend whose Echo answers OK, or UNAVAILABLE ("overloaded") when `failing`. */
async function backend(id: string, failing: boolean): Promise<Backend> {
  const server = new grpc.Server();
  const b: Backend = { port: 0, calls: 0, server };
  server.addService(echoService, {
    Echo: (call: grpc.ServerUnaryCall<{ message: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      b.calls++;
      if (failing) cb({ code: grpc.status.UNAVAILABLE, details: `${id} is overloaded` });
      else
        cb(null, {
          message: call.request.message,
          payload: Buffer.alloc(0),
          served_by: id,
          deadline_budget_ms: 0,
        });
    },
  });
  b.port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return b;
}

async function lbFor(backends: Backend[], idempotent: boolean, tokenRatio = 0.1): Promise<Lb> {
  return startLb({
    retryThrottle: { maxTokens: 10, tokenRatio },
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: backends.map((b) => staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: b.port })),
    policy: createDefaultRegistry().resolve("round_robin", {}),
    forward: { isIdempotent: (path) => idempotent && path === echoPath("Echo") },
  });
}

async function outcomes(lb: Lb, n: number): Promise<string[]> {
  const client = new EchoClient(lb.server.address);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    try {
      out.push((await client.echo({ message: "m" }, { deadlineMs: 5000 })).served_by);
    } catch (err) {
      out.push(`error ${(err as grpc.ServiceError).code}`);
    }
  }
  client.client.close();
  return out;
}

describe("retries of idempotent methods", () => {
  let sick: Backend;
  let healthy: Backend;
  let deadA: Backend;
  let deadB: Backend;
  before(async () => {
    sick = await backend("sick", true);
    healthy = await backend("healthy", false);
    deadA = await backend("deadA", true);
    deadB = await backend("deadB", true);
  });
  after(() => {
    for (const b of [sick, healthy, deadA, deadB]) b.server.forceShutdown();
  });

  it("sends an idempotent call answered UNAVAILABLE to another backend, so every call succeeds", async () => {
    // Half the first attempts fail here: a budget earning a token per success sustains that (A6's
    // default ratio 0.1 sustains under ~9% failures — the last test shows it stopping).
    const lb = await lbFor([sick, healthy], true, 1);
    const out = await outcomes(lb, 40);
    await lb.close(100);
    assert.deepEqual([...new Set(out)], ["healthy"]);
    assert.ok(sick.calls >= 15, `the sick backend was tried ${sick.calls} times`);
  });

  it("passes UNAVAILABLE through for a method not marked idempotent", async () => {
    const lb = await lbFor([sick, healthy], false);
    const out = await outcomes(lb, 40);
    await lb.close(100);
    assert.equal(out.filter((o) => o === "error 14").length, 20);
  });

  it("stops retrying when the whole cluster fails: the retry budget caps the extra load", async () => {
    const before = deadA.calls + deadB.calls;
    const lb = await lbFor([deadA, deadB], true);
    const out = await outcomes(lb, 100);
    await lb.close(100);
    const attempts = deadA.calls + deadB.calls - before;
    assert.equal(out.filter((o) => o === "error 14").length, 100);
    // Without a budget every call would take 2+ attempts (200+); A6's bucket (10 tokens, retries only
    // above 5) allows a handful of retries, then none.
    assert.ok(attempts <= 110, `${attempts} attempts for 100 calls`);
  });
});
