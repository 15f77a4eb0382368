// Per-call balancing through `roster lb` over real sockets: one client connection (one grpc-js channel)
// spread over four grpc-js backends, each reply naming the backend that served it.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import { type EchoBackend, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";

const BACKENDS = 4;

/** Runs `total` calls of `call`, `concurrency` at a time (closed loop); bounded by `total`. */
async function closedLoop(
  total: number,
  concurrency: number,
  call: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < total) await call(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

function shares(counts: Map<string, number>, total: number): string {
  return [...counts].map(([k, n]) => `${k}=${(n / total).toFixed(4)}`).join(" ");
}

async function startBalancer(policy: string, backends: readonly EchoBackend[]): Promise<Lb> {
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: backends.map((b) => staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: b.port })),
    policy: createDefaultRegistry().resolve(policy, {}),
  });
  await waitFor(
    () => lb.channel.status().filter((s) => s.state === "ready").length === backends.length,
    5000,
    "every backend to be ready",
  );
  return lb;
}

describe("balancing every call of one client connection", () => {
  const backends: EchoBackend[] = [];

  before(async () => {
    for (let i = 0; i < BACKENDS; i++) backends.push(await startEchoBackend({ id: `b${i}`, delayMs: 2 }));
  });

  after(async () => {
    for (const b of backends) await b.close();
  });

  test("least_request gives every backend a quarter (±5%) of 4000 calls made 32 at a time over one channel", async (t) => {
    const lb = await startBalancer("least_request", backends);
    const client = new EchoClient(lb.server.address);
    try {
      const counts = new Map<string, number>(backends.map((b) => [b.id, 0]));
      const total = 4000;
      let inFlight = 0;
      let maxInFlight = 0;
      const started = performance.now();
      await closedLoop(total, 32, async (i) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          const reply = await client.echo({ message: `m${i}` }, { deadlineMs: 10_000 });
          assert.equal(reply.message, `m${i}`);
          counts.set(reply.served_by, (counts.get(reply.served_by) ?? 0) + 1);
        } finally {
          inFlight--;
        }
      });
      const ms = performance.now() - started;
      const summary = `${shares(counts, total)} in ${ms.toFixed(0)} ms`;
      t.diagnostic(summary);
      assert.equal(maxInFlight, 32);
      assert.equal(counts.size, BACKENDS, `a reply named an unknown backend: ${summary}`);
      for (const [id, n] of counts) {
        const share = n / total;
        assert.ok(share >= 0.2375 && share <= 0.2625, `backend ${id} got ${share} of calls (${summary})`);
      }
      // The balancer's own per-backend counters agree with what the client saw.
      for (const s of lb.channel.status()) {
        const b = backends.find((x) => x.port === Number(s.address.split(":")[1]));
        assert.ok(b !== undefined);
        assert.equal(s.calls, counts.get(b.id), `balancer counted ${s.calls} calls for ${b.id}`);
        assert.equal(s.failures, 0);
        assert.equal(s.inFlight, 0, `balancer still counts ${s.inFlight} calls in flight on ${b.id}`);
      }
      // All of it went over one client connection.
      assert.equal(lb.server.connections(), 1);
    } finally {
      client.close();
      await lb.close(1000);
    }
  });

  test("round_robin gives every backend an equal share (±1) of sequential calls", async (t) => {
    const lb = await startBalancer("round_robin", backends);
    const client = new EchoClient(lb.server.address);
    try {
      const total = 402;
      const order: string[] = [];
      for (let i = 0; i < total; i++) order.push((await client.echo({}, { deadlineMs: 5000 })).served_by);
      const counts = new Map<string, number>(backends.map((b) => [b.id, 0]));
      for (const id of order) counts.set(id, (counts.get(id) ?? 0) + 1);
      const summary = [...counts].map(([k, n]) => `${k}=${n}`).join(" ");
      t.diagnostic(summary);
      assert.equal(counts.size, BACKENDS, summary);
      for (const [id, n] of counts) {
        assert.ok(Math.abs(n - total / BACKENDS) <= 1, `backend ${id} served ${n} of ${total} (${summary})`);
      }
      // And strictly in turn: each window of four consecutive calls visits every backend once.
      for (let i = 0; i + BACKENDS <= total; i++) {
        assert.equal(
          new Set(order.slice(i, i + BACKENDS)).size,
          BACKENDS,
          `calls ${i}..${i + 3} repeat a backend`,
        );
      }
    } finally {
      client.close();
      await lb.close(1000);
    }
  });
});
