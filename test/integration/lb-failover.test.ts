// Failures behind `roster lb` over real sockets: a backend killed under load, backends that refuse
// connections or streams, a backend draining with GOAWAY, none reachable at all, and a backend resetting
// a stream. Every call has a deadline and every test checks that every call it issued ended.
import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type Endpoint, staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { type Lb, type LbOptions, startLb } from "../../src/proxy/lb.ts";
import {
  type ChildScript,
  closedPort,
  type EchoBackend,
  EchoClient,
  spawnEchoBackend,
  startEchoBackend,
  waitFor,
} from "../support/echo-backend.ts";

const children: ChildScript[] = [];
const closers: (() => Promise<void> | void)[] = [];

after(async () => {
  // Newest first: clients, then balancers, then backends.
  for (const close of closers.reverse()) await close();
  for (const c of children) await c.kill();
});

function endpoint(port: number): Endpoint {
  return staticEndpoint({ kind: "tcp", host: "127.0.0.1", port });
}

async function balancer(
  policy: string,
  ports: readonly number[],
  extra: Partial<LbOptions> = {},
): Promise<Lb> {
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: ports.map(endpoint),
    policy: createDefaultRegistry().resolve(policy, {}),
    ...extra,
  });
  closers.push(() => lb.close(1000));
  return lb;
}

function client(lb: Lb): EchoClient {
  const c = new EchoClient(lb.server.address);
  closers.push(() => c.close());
  return c;
}

async function backend(id: string, delayMs = 0): Promise<EchoBackend> {
  const b = await startEchoBackend({ id, delayMs });
  closers.push(() => b.close());
  return b;
}

interface CallRecord {
  readonly startedAt: number;
  endedAt?: number;
  code?: number;
  details?: string;
  servedBy?: string;
}

/**
 * Closed-loop load: `concurrency` workers each issue one call at a time until `stop()` says so (checked
 * before each call) or `maxCalls` were issued. Resolves when every call has ended, or rejects if any is
 * still open `guardMs` after the loop stopped issuing — a hung call.
 */
async function load(
  c: EchoClient,
  o: { concurrency: number; deadlineMs: number; maxCalls: number; guardMs: number; stop: () => boolean },
  records: CallRecord[],
): Promise<void> {
  const worker = async () => {
    while (!o.stop() && records.length < o.maxCalls) {
      const r: CallRecord = { startedAt: performance.now() };
      records.push(r);
      try {
        r.servedBy = (await c.echo({}, { deadlineMs: o.deadlineMs })).served_by;
        r.code = Status.OK;
      } catch (err) {
        r.code = (err as grpc.ServiceError).code;
        r.details = (err as grpc.ServiceError).details;
      }
      r.endedAt = performance.now();
    }
  };
  const all = Promise.all(Array.from({ length: o.concurrency }, worker));
  let guard: NodeJS.Timeout | undefined;
  const stopped = waitFor(() => o.stop() || records.length >= o.maxCalls, 60_000, "the load to stop");
  const hung = stopped.then(
    () =>
      new Promise<never>((_, reject) => {
        guard = setTimeout(() => {
          const open = records.filter((r) => r.endedAt === undefined).length;
          reject(new Error(`${open} calls still open ${o.guardMs} ms after the load stopped`));
        }, o.guardMs);
      }),
  );
  try {
    await Promise.race([all, hung]);
  } finally {
    clearTimeout(guard);
  }
}

function codes(records: readonly CallRecord[]): string {
  const byCode = new Map<string, number>();
  for (const r of records) {
    const k = r.code === Status.OK ? "OK" : `${r.code}: ${r.details}`;
    byCode.set(k, (byCode.get(k) ?? 0) + 1);
  }
  return [...byCode].map(([k, n]) => `${n}× ${k}`).join("; ");
}

describe("failover", () => {
  test("a backend killed under load: calls go on, failures are UNAVAILABLE, none hangs, and every call after the balancer noticed succeeds", async (t) => {
    const started = await Promise.all([0, 1, 2, 3].map((i) => spawnEchoBackend(`k${i}`, 3)));
    children.push(...started);
    const victim = started[1]!;
    const victimKey = `127.0.0.1:${victim.port}`;
    let killStartedAt: number | undefined;
    let noticedAt: number | undefined;
    const lb = await balancer(
      "least_request",
      started.map((c) => c.port),
      {
        onChannelEvent: (e) => {
          if (
            killStartedAt !== undefined &&
            noticedAt === undefined &&
            e.kind === "backend-state" &&
            e.key === victimKey &&
            e.state.kind !== "ready"
          ) {
            noticedAt = performance.now();
          }
        },
      },
    );
    await waitFor(() => lb.channel.status().every((s) => s.state === "ready"), 5000, "all backends ready");
    const c = client(lb);
    const records: CallRecord[] = [];
    let stop = false;
    let killedAt = 0;
    const driver = (async () => {
      await waitFor(() => records.filter((r) => r.endedAt !== undefined).length >= 300, 10_000, "300 calls");
      killStartedAt = performance.now();
      await victim.kill();
      killedAt = performance.now();
      await waitFor(() => noticedAt !== undefined, 3000, "the balancer to notice the dead backend");
      await waitFor(
        () => records.filter((r) => r.startedAt > noticedAt!).length >= 600,
        10_000,
        "600 calls after the kill was noticed",
      );
    })().finally(() => {
      stop = true;
    });
    await Promise.all([
      driver,
      load(
        c,
        { concurrency: 32, deadlineMs: 5000, maxCalls: 20_000, guardMs: 7000, stop: () => stop },
        records,
      ),
    ]);

    assert.ok(noticedAt !== undefined && killStartedAt !== undefined);
    const ended = records.filter((r) => r.endedAt !== undefined);
    assert.equal(ended.length, records.length, "every call ended");
    const failed = records.filter((r) => r.code !== Status.OK);
    const window = records.filter((r) => r.startedAt >= killStartedAt! && r.startedAt <= noticedAt!);
    t.diagnostic(
      `${records.length} calls; ${failed.length} failed (${codes(failed)}); balancer noticed ` +
        `${(noticedAt - killStartedAt).toFixed(1)} ms after SIGKILL (exit seen after ` +
        `${(killedAt - killStartedAt).toFixed(1)} ms); ${window.length} calls started in between: ${codes(window)}`,
    );
    for (const r of failed) {
      assert.equal(r.code, Status.UNAVAILABLE, `a call failed with ${r.code}: ${r.details}`);
      assert.ok(r.startedAt < noticedAt, "a call started after the balancer noticed the dead backend failed");
    }
    // The victim served its share before, and nothing after the balancer noticed.
    assert.ok(records.some((r) => r.servedBy === "k1" && r.startedAt < killStartedAt!));
    const afterNotice = records.filter((r) => r.startedAt > noticedAt!);
    assert.ok(afterNotice.length >= 600);
    assert.ok(
      afterNotice.every((r) => r.code === Status.OK && r.servedBy !== "k1"),
      codes(afterNotice),
    );
    for (const id of ["k0", "k2", "k3"]) {
      assert.ok(
        afterNotice.some((r) => r.servedBy === id),
        `${id} served nothing after the kill`,
      );
    }
    // Only calls in flight on the victim may fail: at most the concurrency (plus those racing the kill).
    assert.ok(failed.length <= 32 + window.length, `${failed.length} calls failed`);
    const victimStatus = lb.channel.status().find((s) => s.key === victimKey);
    assert.notEqual(victimStatus?.state, "ready");
    assert.equal(
      lb.channel.status().reduce((n, s) => n + s.inFlight, 0),
      0,
      "the balancer still counts calls in flight",
    );
  });

  test("a backend refusing connections from the start, among healthy ones: 200 calls issued at once all succeed", async () => {
    const healthy = [await backend("h0"), await backend("h1"), await backend("h2")];
    const dead = await closedPort();
    const lb = await balancer("round_robin", [dead, ...healthy.map((b) => b.port)]);
    const c = client(lb);
    // No wait for readiness: the first calls queue until a backend is ready.
    const records: CallRecord[] = [];
    await load(
      c,
      { concurrency: 20, deadlineMs: 5000, maxCalls: 200, guardMs: 6000, stop: () => false },
      records,
    );
    assert.equal(records.length, 200);
    assert.ok(
      records.every((r) => r.code === Status.OK),
      codes(records),
    );
    const served = new Set(records.map((r) => r.servedBy));
    assert.deepEqual([...served].sort(), ["h0", "h1", "h2"]);
    const deadStatus = lb.channel.status().find((s) => s.key === `127.0.0.1:${dead}`);
    assert.ok(deadStatus !== undefined && deadStatus.state !== "ready");
  });

  test("a backend refusing every stream (RST_STREAM REFUSED_STREAM): calls are retried elsewhere and all 200 succeed", async () => {
    const refuser = http2.createServer();
    let refused = 0;
    refuser.on("stream", (s) => {
      refused++;
      s.on("error", () => {});
      s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    });
    await new Promise<void>((resolve) => refuser.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise<void>((resolve) => refuser.close(() => resolve())));
    const refuserPort = (refuser.address() as { port: number }).port;
    const healthy = [await backend("r0"), await backend("r1"), await backend("r2")];
    let retries = 0;
    const lb = await balancer("round_robin", [refuserPort, ...healthy.map((b) => b.port)], {
      onRetry: () => retries++,
    });
    await waitFor(() => lb.channel.status().every((s) => s.state === "ready"), 5000, "all backends ready");
    const c = client(lb);
    const records: CallRecord[] = [];
    await load(
      c,
      { concurrency: 8, deadlineMs: 5000, maxCalls: 200, guardMs: 6000, stop: () => false },
      records,
    );
    assert.ok(
      records.every((r) => r.code === Status.OK),
      codes(records),
    );
    // Round robin sends about a quarter of first attempts to the refuser; each is retried.
    assert.ok(refused >= 40, `the refusing backend saw only ${refused} streams`);
    assert.equal(retries, refused);
  });

  test("a backend draining with GOAWAY under load: no call fails and new calls go to the others", async (t) => {
    const backends = [await backend("g0", 10), await backend("g1", 10), await backend("g2", 10)];
    const lb = await balancer(
      "least_request",
      backends.map((b) => b.port),
    );
    await waitFor(() => lb.channel.status().every((s) => s.state === "ready"), 5000, "all backends ready");
    const c = client(lb);
    const records: CallRecord[] = [];
    let stop = false;
    let drainedAt = 0;
    const driver = (async () => {
      await waitFor(() => records.length >= 300, 10_000, "300 calls");
      await backends[1]!.shutdown(); // resolves when its open calls have finished
      drainedAt = performance.now();
      await waitFor(() => records.filter((r) => r.startedAt > drainedAt).length >= 300, 10_000, "300 more");
    })().finally(() => {
      stop = true;
    });
    await Promise.all([
      driver,
      load(
        c,
        { concurrency: 32, deadlineMs: 5000, maxCalls: 20_000, guardMs: 6000, stop: () => stop },
        records,
      ),
    ]);
    t.diagnostic(`${records.length} calls: ${codes(records)}; g1 ${JSON.stringify(backends[1]!.stats())}`);
    assert.ok(
      records.every((r) => r.code === Status.OK),
      codes(records),
    );
    assert.equal(backends[1]!.stats().cancelled, 0, "the draining backend saw calls cancelled");
    assert.ok(records.filter((r) => r.startedAt > drainedAt).every((r) => r.servedBy !== "g1"));
  });

  test("all backends unreachable: a call waits queueTimeoutMs, then fails with UNAVAILABLE and a message naming the backends", async () => {
    const ports = [await closedPort(), await closedPort(), await closedPort()];
    // Calls wait for a backend to come up (channel.ts, Readiness), bounded by queueTimeoutMs.
    const lb = await balancer("round_robin", ports, { forward: { queueTimeoutMs: 300 } });
    const c = client(lb);
    for (const pause of [0, 400]) {
      await new Promise((r) => setTimeout(r, pause));
      // A long deadline: a call that waited for a backend instead of failing would end with
      // DEADLINE_EXCEEDED after 30 s, so UNAVAILABLE (well before the deadline) is the "fast" observed.
      const t0 = performance.now();
      const err = await c.echo({}, { deadlineMs: 30_000 }).then(
        () => assert.fail("the call succeeded"),
        (e: grpc.ServiceError) => e,
      );
      const ms = performance.now() - t0;
      assert.equal(err.code, Status.UNAVAILABLE, err.details);
      assert.match(err.details, /queueTimeoutMs/, err.details);
      assert.ok(ms < 15_000, `the call took ${ms} ms to fail: it waited longer than queueTimeoutMs`);
      for (const p of ports) assert.match(err.details, new RegExp(`127\\.0\\.0\\.1:${p}\\b`), err.details);
    }
  });

  test("a backend resetting a stream (RST_STREAM ENHANCE_YOUR_CALM) gives the client the status a direct call gets, and the backend stays ready", async () => {
    const resetter = http2.createServer();
    resetter.on("stream", (s) => {
      s.on("error", () => {});
      setTimeout(() => s.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM), 5);
    });
    await new Promise<void>((resolve) => resetter.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise<void>((resolve) => resetter.close(() => resolve())));
    const port = (resetter.address() as { port: number }).port;
    const lb = await balancer("round_robin", [port]);
    await waitFor(() => lb.channel.status().every((s) => s.state === "ready"), 5000, "the backend ready");

    const direct = new EchoClient(`127.0.0.1:${port}`);
    closers.push(() => direct.close());
    const directErr = await direct.echo({}, { deadlineMs: 3000 }).then(
      () => assert.fail("the direct call succeeded"),
      (e: grpc.ServiceError) => e,
    );
    assert.equal(directErr.code, Status.RESOURCE_EXHAUSTED);

    const viaLb = await client(lb)
      .echo({}, { deadlineMs: 3000 })
      .then(
        () => assert.fail("the call through the balancer succeeded"),
        (e: grpc.ServiceError) => e,
      );
    assert.equal(
      viaLb.code,
      directErr.code,
      `through the balancer: ${viaLb.code} ${viaLb.details}; direct: ${directErr.code} ${directErr.details}`,
    );
    assert.equal(lb.channel.status()[0]?.state, "ready");
  });
});
