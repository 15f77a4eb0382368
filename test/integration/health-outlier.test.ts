// Passive outlier ejection (gRFC A50) behind `roster lb`, over real sockets against grpc-js servers: a
// backend failing every call with UNAVAILABLE is ejected after an interval, gets no calls while ejected
// and returns after its ejection time; client-error statuses do not eject; the max ejection percentage
// holds; success-rate ejection finds the one bad backend among five.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { ChannelEvent } from "../../src/channel/channel.ts";
import { type Endpoint, staticEndpoint } from "../../src/core/endpoint.ts";
import { parseOutlierConfig } from "../../src/core/health/outlier-detection.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import {
  EchoClient,
  type EchoReply,
  type EchoRequest,
  echoService,
  waitFor,
} from "../support/echo-backend.ts";

const closers: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const close of closers.reverse()) await close();
});

interface Backend {
  readonly id: string;
  readonly endpoint: Endpoint;
  readonly key: string;
  /** performance.now() of each Echo call received. */
  readonly calls: number[];
}

/** A grpc-js roster.test.Echo backend answering OK with its id, or `failWith` to every call. */
async function startBackend(id: string, failWith?: number): Promise<Backend> {
  const server = new grpc.Server();
  const calls: number[] = [];
  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) {
      calls.push(performance.now());
      if (failWith !== undefined) callback({ code: failWith, details: `${id} always fails` });
      else
        callback(null, {
          message: call.request.message,
          payload: Buffer.alloc(0),
          served_by: id,
          deadline_budget_ms: -1,
        });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  closers.push(() => server.forceShutdown());
  const endpoint = staticEndpoint({ kind: "tcp", host: "127.0.0.1", port });
  return { id, endpoint, key: endpoint.key, calls };
}

interface Timed {
  readonly at: number;
  readonly event: ChannelEvent;
}

async function balancer(
  backends: readonly Backend[],
  outlierDetection: unknown,
  events: Timed[],
): Promise<Lb> {
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: backends.map((b) => b.endpoint),
    policy: createDefaultRegistry().resolve("round_robin", {}),
    outlierDetection: parseOutlierConfig(outlierDetection),
    onChannelEvent: (event) => events.push({ at: performance.now(), event }),
  });
  closers.push(() => lb.close(1000));
  await waitFor(() => lb.channel.status().every((s) => s.state === "ready"), 5000, "every backend ready");
  return lb;
}

/** Closed-loop Echo calls through the balancer until `stop()`; every call has a 2 s deadline. */
function load(lb: Lb, concurrency: number) {
  const c = new EchoClient(lb.server.address);
  closers.push(() => c.close());
  const codes = new Map<number, number>();
  let stopped = false;
  const worker = async () => {
    // Bounded by `stop()` and each call's deadline.
    while (!stopped) {
      let code: number = Status.OK;
      try {
        await c.echo({}, { deadlineMs: 2000 });
      } catch (err) {
        code = (err as grpc.ServiceError).code;
      }
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
  };
  const workers = Promise.all(Array.from({ length: concurrency }, worker));
  return {
    codes,
    async stop(): Promise<void> {
      stopped = true;
      await workers;
    },
  };
}

function times(
  events: readonly Timed[],
  kind: "backend-ejected" | "backend-returned",
  key: string,
): number[] {
  return events
    .filter((e) => e.event.kind === kind && "key" in e.event && e.event.key === key)
    .map((e) => e.at);
}

describe("outlier ejection", () => {
  test("a backend answering UNAVAILABLE to every call is ejected, gets no calls while ejected, and returns after its ejection time", async () => {
    const good = await startBackend("good");
    const bad = await startBackend("bad", Status.UNAVAILABLE);
    const picky = await startBackend("picky", Status.INVALID_ARGUMENT);
    const events: Timed[] = [];
    const lb = await balancer(
      [good, bad, picky],
      {
        intervalMs: 500,
        baseEjectionTimeMs: 1500,
        maxEjectionPercent: 100,
        failurePercentageEjection: { threshold: 50, minimumHosts: 3, requestVolume: 10 },
      },
      events,
    );
    const run = load(lb, 3);
    try {
      await waitFor(
        () => times(events, "backend-ejected", bad.key).length > 0,
        3000,
        "the bad backend's ejection",
      );
      assert.equal(
        lb.channel.status().find((s) => s.key === bad.key)?.ejected,
        true,
        "/status shows the ejection",
      );
      await waitFor(() => times(events, "backend-returned", bad.key).length > 0, 4000, "its return");
      const ejectedAt = times(events, "backend-ejected", bad.key)[0]!;
      const returnedAt = times(events, "backend-returned", bad.key)[0]!;
      const ejectedFor = returnedAt - ejectedAt;
      assert.ok(
        ejectedFor >= 1500 - 20 && ejectedFor <= 1500 + 500 + 400,
        `ejected for its base ejection time, to the next tick (${Math.round(ejectedFor)} ms)`,
      );
      // Calls picked just before the ejection may still arrive a moment after it.
      const during = bad.calls.filter((t) => t > ejectedAt + 100 && t < returnedAt);
      assert.equal(during.length, 0, "no calls reached the ejected backend");
      await waitFor(
        () => bad.calls.some((t) => t > returnedAt),
        2000,
        "calls to reach it again after its return",
      );
    } finally {
      await run.stop();
    }
    assert.deepEqual(times(events, "backend-ejected", good.key), [], "the good backend was never ejected");
    assert.deepEqual(
      times(events, "backend-ejected", picky.key),
      [],
      "INVALID_ARGUMENT is the caller's failure, not the backend's",
    );
    assert.ok((run.codes.get(Status.OK) ?? 0) > 0);
  });

  test("no more backends are ejected at once than the max ejection percent allows", async () => {
    const backends = [
      await startBackend("ok"),
      await startBackend("bad-1", Status.UNAVAILABLE),
      await startBackend("bad-2", Status.INTERNAL),
      await startBackend("bad-3", Status.UNKNOWN),
    ];
    const events: Timed[] = [];
    const lb = await balancer(
      backends,
      {
        intervalMs: 300,
        baseEjectionTimeMs: 10_000,
        maxEjectionPercent: 50,
        failurePercentageEjection: { threshold: 50, minimumHosts: 4, requestVolume: 5 },
      },
      events,
    );
    const run = load(lb, 4);
    let most = 0;
    try {
      const until = performance.now() + 2000;
      // Bounded by the clock.
      while (performance.now() < until) {
        most = Math.max(most, lb.channel.status().filter((s) => s.ejected).length);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      await run.stop();
    }
    const ejected = events
      .filter((e) => e.event.kind === "backend-ejected")
      .map((e) => (e.event as { key: string }).key);
    assert.equal(ejected.length, 2, `two of four ejected at 50% (${ejected.join(", ")})`);
    assert.equal(most, 2);
    assert.ok(!ejected.includes(backends[0]!.key), "the good backend stays");
    const left = backends.find((b) => b.id !== "ok" && !ejected.includes(b.key))!;
    const lastEjection = Math.max(
      ...events.filter((e) => e.event.kind === "backend-ejected").map((e) => e.at),
    );
    assert.ok(
      left.calls.some((t) => t > lastEjection + 100),
      "the bad backend over the cap still gets calls",
    );
  });

  test("success-rate ejection picks out the one failing backend among five", async () => {
    const backends = [
      ...(await Promise.all([0, 1, 2, 3].map((i) => startBackend(`ok-${i}`)))),
      await startBackend("bad", Status.UNAVAILABLE),
    ];
    const bad = backends[4]!;
    const events: Timed[] = [];
    const lb = await balancer(
      backends,
      {
        intervalMs: 400,
        baseEjectionTimeMs: 10_000,
        successRateEjection: { minimumHosts: 5, requestVolume: 10 },
      },
      events,
    );
    const run = load(lb, 5);
    try {
      await waitFor(
        () => times(events, "backend-ejected", bad.key).length > 0,
        3000,
        "the bad backend's ejection",
      );
    } finally {
      await run.stop();
    }
    const ejected = events.filter((e) => e.event.kind === "backend-ejected");
    assert.equal(ejected.length, 1, "only the failing backend");
  });
});
