// `roster bench`'s load engine against a real grpc-js server on 127.0.0.1 (in this process, so no CLI start-up
// cost): the four call kinds, messages per stream, --metadata, errors by status name, backend identity from
// the header or from a response field, separate connections, and --calls in both load models.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { type BenchFlags, parseBenchFlags } from "../../src/bench/options.ts";
import { buildReport, type TargetReport } from "../../src/bench/report.ts";
import { runBenchmark } from "../../src/bench/run.ts";
import { BENCH_ECHO_PROTO, type BenchEchoServer, startBenchEcho } from "../support/bench-echo-server.ts";

let server: BenchEchoServer;
let target: string;

before(async () => {
  server = await startBenchEcho({ id: "s1", header: true });
  target = `127.0.0.1:${server.port}`;
});
after(() => server.close());

async function bench(flags: BenchFlags): Promise<TargetReport> {
  const settings = parseBenchFlags({
    target,
    proto: BENCH_ECHO_PROTO,
    warmup: "0",
    calls: "30",
    concurrency: "3",
    ...flags,
  });
  const report = buildReport(await runBenchmark(settings));
  return report.targets[0]!;
}

/** Established TCP connections (IPv4) from any local port to 127.0.0.1:`port`, from /proc/net/tcp. */
function connectionsTo(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .filter((line) => {
      const f = line.trim().split(/\s+/);
      return f[2] === `0100007F:${hex}` && f[3] === "01";
    }).length;
}

describe("roster bench call kinds", { timeout: 30_000 }, () => {
  it("makes unary calls and reads the backend header, with --metadata reaching the server", async () => {
    const t = await bench({
      call: "roster.benchtest.Echo/Unary",
      metadata: ["x-bench-tag=m1"],
      connections: "2",
    });
    assert.equal(t.calls, 30);
    assert.equal(t.ok, 30);
    assert.equal(t.messages, 30);
    assert.deepEqual(t.backends, [{ backend: "s1:m1", calls: 30, share: 1 }]);
  });

  it("opens --connections separate HTTP/2 connections", async () => {
    let most = 0;
    const poll = setInterval(() => {
      most = Math.max(most, connectionsTo(server.port));
    }, 20);
    try {
      await bench({
        call: "roster.benchtest.Echo/Unary",
        connections: "3",
        calls: undefined,
        duration: "300ms",
      });
    } finally {
      clearInterval(poll);
    }
    assert.equal(most, 3);
  });

  it("counts every message of a server stream", async () => {
    const t = await bench({ call: "roster.benchtest.Echo/ServerStream", data: '{"count":4}' });
    assert.equal(t.ok, 30);
    assert.equal(t.messages, 120);
  });

  it("sends --stream-messages requests per client-streaming call", async () => {
    const t = await bench({
      call: "roster.benchtest.Echo/ClientStream",
      streamMessages: "5",
      // The reply's `count` is the number of requests the server read: as a "backend" it shows here.
      backendField: "count",
    });
    assert.equal(t.ok, 30);
    assert.deepEqual(
      t.backends.map((b) => [b.backend, b.calls]),
      [["5", 30]],
    );
  });

  it("streams both ways and reads the backend from a response field", async () => {
    const t = await bench({
      call: "roster.benchtest.Echo/Bidi",
      streamMessages: "3",
      backendField: "backend",
    });
    assert.equal(t.ok, 30);
    assert.equal(t.messages, 90);
    assert.deepEqual(
      t.backends.map((b) => [b.backend, b.calls]),
      [["s1", 30]],
    );
  });

  it("counts errors by gRPC status name", async () => {
    const t = await bench({ call: "roster.benchtest.Echo/Unary", data: '{"fail_code":8}' });
    assert.equal(t.calls, 30);
    assert.equal(t.ok, 0);
    assert.deepEqual(t.errors, { RESOURCE_EXHAUSTED: 30 });
    assert.deepEqual(t.backends, [{ backend: "s1", calls: 30, share: 1 }], "trailers-only answers too");
  });

  it("makes exactly --calls calls in the open loop, on schedule", async () => {
    const started = Date.now();
    const t = await bench({
      call: "roster.benchtest.Echo/Unary",
      concurrency: undefined,
      rate: "200",
      calls: "40",
    });
    assert.equal(t.calls, 40);
    assert.equal(t.ok, 40);
    const ms = Date.now() - started;
    assert.ok(ms >= 190, `40 calls at 200/s take about 200 ms, took ${ms}`);
    assert.ok(t.startLagMs !== undefined && t.startLagMs.count === 40);
  });
});
