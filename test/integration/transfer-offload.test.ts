// CPU offload (roster/transfer): in a `roster serve` worker, CPU work runs on a piscina pool (one thread,
// queue of one) while the worker's event loop keeps answering; a cancelled call stops its task; a
// full queue refuses with RESOURCE_EXHAUSTED. The spinning tasks run until the test releases them, so
// nothing here depends on how fast the machine is.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { callFunction, callFunctionStream, type OffloadStats } from "../../src/transfer/index.ts";
import { type ProxyProcess, startRosterServe } from "../support/proxy-process.ts";

const SERVICE = fileURLToPath(new URL("../fixtures/offload-service.ts", import.meta.url));

describe("CPU offload to worker threads", { timeout: 120_000 }, () => {
  let serve: ProxyProcess;
  let client: grpc.Client;
  const stats = () => callFunction<OffloadStats & { spinning: number }>(client, "stats", null);

  before(async () => {
    serve = await startRosterServe(SERVICE, 1);
    client = new grpc.Client(serve.address, grpc.credentials.createInsecure());
  });
  after(async () => {
    if (client !== undefined) {
      await callFunction(client, "release", null).catch(() => {});
      client.close();
    }
    await serve?.stop();
  });

  it("keeps the worker's event loop answering while offloaded work saturates the pool, and refuses past the queue", async (t) => {
    await callFunction(client, "reset", null);
    const spins = [callFunction<number>(client, "spin", null), callFunction<number>(client, "spin", null)];
    // One task runs, one waits: the pool is saturated and its queue full.
    let s = await stats();
    // Bounded by the clock: 20 s.
    for (
      const until = Date.now() + 20_000;
      (s.running < 2 || s.spinning < 1) && Date.now() < until;
      s = await stats()
    ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(s.running, 2, JSON.stringify(s));
    assert.equal(s.spinning, 1, JSON.stringify(s));
    await assert.rejects(callFunction(client, "spin", null), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(err.details, /offload queue full \(1 waiting\)/);
      return true;
    });
    // The worker answers 50 calls while the thread spins; time each for the record.
    const latencies: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      assert.equal(await callFunction(client, "ping", null), "pong");
      latencies.push(performance.now() - t0);
    }
    s = await stats();
    assert.equal(s.completed, 0, "no task finished: every ping was answered while the pool was busy");
    assert.equal(s.running, 2);
    assert.equal(s.spinning, 1);
    latencies.sort((a, b) => a - b);
    t.diagnostic(
      `ping p50 ${latencies[24]!.toFixed(1)} ms, p99 ${latencies[48]!.toFixed(1)} ms while the pool spun`,
    );
    await callFunction(client, "release", null);
    const rounds = await Promise.all(spins);
    // The task that ran spun until released; the one that waited may have found the gate open.
    assert.ok(Math.max(...rounds) > 0);
    s = await stats();
    assert.equal(s.completed, 2);
    assert.equal(s.refused, 1);
  });

  it("cancels a running task when its call is cancelled", async () => {
    await callFunction(client, "reset", null);
    const before = await stats();
    const abort = new AbortController();
    const call = callFunctionStream(client, "spin", null, { signal: abort.signal });
    let s = before;
    for (const until = Date.now() + 20_000; s.spinning < 1 && Date.now() < until; s = await stats()) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(s.spinning, 1);
    abort.abort();
    await assert.rejects(call, { code: grpc.status.CANCELLED });
    // The gate was never released: the task ended because its thread was stopped.
    for (const until = Date.now() + 20_000; s.running > 0 && Date.now() < until; s = await stats()) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(s.running, 0);
    // The thread was terminated mid-spin, so the fixture's own count was never taken back.
    assert.equal(s.cancelled, before.cancelled + 1);
    assert.equal(s.completed, before.completed);
    // The pool still works after the thread was replaced.
    await callFunction(client, "release", null);
    assert.ok((await callFunction<number>(client, "spin", null)) >= 0);
  });
});
