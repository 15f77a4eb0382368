import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Registry } from "prom-client";
import { Status } from "../core/status.ts";
import { CALL_DURATION_BUCKETS, createProxyMetrics, type ProxyMetrics } from "./metrics.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (the subset prom-client writes): `name{a="x",b="y"} value`. */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!;
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

function pick(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

/** The value of the one sample matching, or undefined when there is none. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = pick(samples, name, labels);
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

async function scrape(m: ProxyMetrics): Promise<Sample[]> {
  return parse(await m.registry.metrics());
}

const quiet = () => createProxyMetrics({ defaultMetrics: false });

describe("createProxyMetrics", () => {
  it("counts ended calls per cluster, backend and gRPC status name", async () => {
    const m = quiet();
    m.callEnded("users", "10.0.0.1:50051", Status.OK, 0.002);
    m.callEnded("users", "10.0.0.1:50051", Status.OK, 0.003);
    m.callEnded("users", "10.0.0.1:50051", Status.UNAVAILABLE, 0.0001);
    m.callEnded("users", "10.0.0.2:50051", Status.DEADLINE_EXCEEDED, 5);
    m.callEnded("orders", "10.0.0.1:50051", Status.OK, 0.01);
    const s = await scrape(m);
    const calls = "roster_backend_calls_total";
    assert.equal(value(s, calls, { cluster: "users", backend: "10.0.0.1:50051", code: "OK" }), 2);
    assert.equal(value(s, calls, { cluster: "users", backend: "10.0.0.1:50051", code: "UNAVAILABLE" }), 1);
    assert.equal(
      value(s, calls, { cluster: "users", backend: "10.0.0.2:50051", code: "DEADLINE_EXCEEDED" }),
      1,
    );
    assert.equal(value(s, calls, { cluster: "orders", backend: "10.0.0.1:50051", code: "OK" }), 1);
    assert.equal(pick(s, calls).length, 4);
  });

  it("names codes outside the gRPC table CODE_n instead of throwing", async () => {
    const m = quiet();
    m.callEnded("c", "b", 99, 0.001);
    m.callEnded("c", "b", -1, 0.001);
    m.callEnded("c", "b", 99, 0.001);
    const s = await scrape(m);
    assert.equal(value(s, "roster_backend_calls_total", { code: "CODE_99" }), 2);
    assert.equal(value(s, "roster_backend_calls_total", { code: "CODE_-1" }), 1);
  });

  it("observes durations in a histogram with cumulative buckets from 0.1 ms to 30 s", async () => {
    const m = quiet();
    for (const seconds of [0.00005, 0.0001, 0.0008, 0.2, 29, 31]) m.callEnded("c", "b", Status.OK, seconds);
    const s = await scrape(m);
    const name = "roster_backend_call_duration_seconds";
    const buckets = pick(s, `${name}_bucket`, { cluster: "c", backend: "b" });
    assert.deepEqual(
      buckets.map((b) => b.labels["le"]),
      [...CALL_DURATION_BUCKETS.map(String), "+Inf"],
    );
    const at = (le: string) => buckets.find((b) => b.labels["le"] === le)?.value;
    assert.equal(at("0.0001"), 2, "le is inclusive");
    assert.equal(at("0.00025"), 2);
    assert.equal(at("0.001"), 3);
    assert.equal(at("0.25"), 4);
    assert.equal(at("10"), 4);
    assert.equal(at("30"), 5);
    assert.equal(at("+Inf"), 6);
    assert.equal(value(s, `${name}_count`, { cluster: "c", backend: "b" }), 6);
    const sum = value(s, `${name}_sum`, { cluster: "c", backend: "b" })!;
    assert.ok(Math.abs(sum - 60.20095) < 1e-9, `sum ${sum}`);
  });

  it("records NaN, negative and infinite durations as 0 without throwing", async () => {
    const m = quiet();
    for (const bad of [Number.NaN, -1, Number.POSITIVE_INFINITY]) m.callEnded("c", "b", Status.OK, bad);
    const s = await scrape(m);
    assert.equal(value(s, "roster_backend_call_duration_seconds_bucket", { le: "0.0001" }), 3);
    assert.equal(value(s, "roster_backend_call_duration_seconds_sum"), 0);
  });

  it("keeps counters monotonic across scrapes and adds only what happened in between", async () => {
    const m = quiet();
    m.callEnded("c", "b", Status.OK, 0.001);
    m.retried("c", "b");
    assert.equal(value(await scrape(m), "roster_backend_calls_total"), 1);
    const again = await scrape(m);
    assert.equal(value(again, "roster_backend_calls_total"), 1);
    assert.equal(value(again, "roster_backend_retries_total"), 1);
    m.callEnded("c", "b", Status.OK, 0.001);
    m.callEnded("c", "b", Status.OK, 0.001);
    m.retried("c", "b");
    const third = await scrape(m);
    assert.equal(value(third, "roster_backend_calls_total"), 3);
    assert.equal(value(third, "roster_backend_retries_total", { cluster: "c", backend: "b" }), 2);
    assert.equal(value(third, "roster_backend_call_duration_seconds_count"), 3);
  });

  it("counts calls the balancer answered itself, without a backend label", async () => {
    const m = quiet();
    m.callFailedAtBalancer("users", Status.UNAVAILABLE);
    m.callFailedAtBalancer("users", Status.UNAVAILABLE);
    m.callFailedAtBalancer("users", Status.DEADLINE_EXCEEDED);
    m.callFailedAtBalancer("users", 77);
    const s = await scrape(m);
    const name = "roster_balancer_errors_total";
    assert.equal(value(s, name, { cluster: "users", code: "UNAVAILABLE" }), 2);
    assert.equal(value(s, name, { cluster: "users", code: "DEADLINE_EXCEEDED" }), 1);
    assert.equal(value(s, name, { cluster: "users", code: "CODE_77" }), 1);
    assert.deepEqual(
      pick(s, name).filter((x) => x.labels["backend"] !== undefined),
      [],
    );
    assert.equal(pick(s, "roster_backend_calls_total").length, 0);
  });

  it("fills in-flight and up gauges from the source at scrape time and drops vanished backends", async () => {
    const m = quiet();
    let backends = [
      { cluster: "c", backend: "a:1", inFlight: 3, state: "ready" },
      { cluster: "c", backend: "b:1", inFlight: 0, state: "connecting" },
    ];
    let calls = 0;
    m.setInFlightSource(() => {
      calls++;
      return backends;
    });
    assert.equal(calls, 0, "nothing is read before a scrape");
    let s = await scrape(m);
    assert.equal(value(s, "roster_backend_in_flight", { cluster: "c", backend: "a:1" }), 3);
    assert.equal(value(s, "roster_backend_in_flight", { cluster: "c", backend: "b:1" }), 0);
    assert.equal(value(s, "roster_backend_up", { backend: "a:1" }), 1);
    assert.equal(value(s, "roster_backend_up", { backend: "b:1" }), 0);

    backends = [{ cluster: "c", backend: "b:1", inFlight: 7, state: "ready" }];
    s = await scrape(m);
    assert.equal(value(s, "roster_backend_in_flight", { backend: "a:1" }), undefined);
    assert.equal(value(s, "roster_backend_up", { backend: "a:1" }), undefined);
    assert.equal(value(s, "roster_backend_in_flight", { backend: "b:1" }), 7);
    assert.equal(value(s, "roster_backend_up", { backend: "b:1" }), 1);
  });

  it("survives a throwing source: the scrape succeeds, the gauges are empty and the failure is counted", async () => {
    const m = quiet();
    m.callEnded("c", "b", Status.OK, 0.001);
    m.setInFlightSource(() => {
      throw new Error("channel gone");
    });
    const s = await scrape(m);
    assert.equal(pick(s, "roster_backend_in_flight").length, 0);
    assert.equal(pick(s, "roster_backend_up").length, 0);
    const errors = value(s, "roster_metrics_source_errors_total") ?? 0;
    assert.ok(errors >= 1, `source errors ${errors}`);
    assert.equal(value(s, "roster_backend_calls_total"), 1);
  });

  it("tracks front connections and streams", async () => {
    const m = quiet();
    m.frontConnections.inc();
    m.frontConnections.inc();
    m.frontConnections.dec();
    for (let i = 0; i < 5; i++) m.frontStreamsTotal.inc();
    let s = await scrape(m);
    assert.equal(value(s, "roster_front_connections"), 1);
    assert.equal(value(s, "roster_front_streams_total"), 5);
    m.frontConnections.dec();
    m.frontStreamsTotal.inc();
    s = await scrape(m);
    assert.equal(value(s, "roster_front_connections"), 0);
    assert.equal(value(s, "roster_front_streams_total"), 6);
  });

  it("forgets every series of a backend on request and starts afresh if it comes back", async () => {
    const m = quiet();
    m.callEnded("c", "gone:1", Status.OK, 0.001);
    m.callEnded("c", "gone:1", Status.INTERNAL, 0.001);
    m.retried("c", "gone:1");
    m.callEnded("c", "stays:1", Status.OK, 0.001);
    await scrape(m);
    m.callEnded("c", "gone:1", Status.OK, 0.001);
    m.forgetBackend("c", "gone:1");
    m.forgetBackend("c", "never-seen:1");
    let s = await scrape(m);
    assert.equal(pick(s, "roster_backend_calls_total", { backend: "gone:1" }).length, 0);
    assert.equal(pick(s, "roster_backend_retries_total", { backend: "gone:1" }).length, 0);
    assert.equal(pick(s, "roster_backend_call_duration_seconds_count", { backend: "gone:1" }).length, 0);
    assert.equal(value(s, "roster_backend_calls_total", { backend: "stays:1" }), 1);
    m.callEnded("c", "gone:1", Status.OK, 0.001);
    s = await scrape(m);
    assert.equal(value(s, "roster_backend_calls_total", { backend: "gone:1" }), 1);
    assert.equal(value(s, "roster_backend_call_duration_seconds_count", { backend: "gone:1" }), 1);
  });

  it("lets registry.resetMetrics() zero counters and the histogram", async () => {
    const m = quiet();
    m.callEnded("c", "b", Status.OK, 0.001);
    m.frontStreamsTotal.inc();
    await scrape(m);
    m.registry.resetMetrics();
    let s = await scrape(m);
    assert.equal(pick(s, "roster_backend_calls_total").length, 0);
    assert.equal(pick(s, "roster_backend_call_duration_seconds_count").length, 0);
    assert.equal(value(s, "roster_front_streams_total"), 0);
    m.callEnded("c", "b", Status.OK, 0.001);
    s = await scrape(m);
    assert.equal(value(s, "roster_backend_calls_total"), 1);
    assert.equal(value(s, "roster_backend_call_duration_seconds_count"), 1);
  });

  it("registers the process metrics with the same prefix into a given registry", async () => {
    const registry = new Registry();
    const m = createProxyMetrics({ registry, prefix: "edge_" });
    assert.equal(m.registry, registry);
    m.callEnded("c", "b", Status.OK, 0.001);
    const s = parse(await registry.metrics());
    assert.equal(pick(s, "edge_process_cpu_user_seconds_total").length, 1);
    assert.equal(pick(s, "edge_nodejs_heap_size_used_bytes").length, 1);
    assert.equal(value(s, "edge_backend_calls_total"), 1);
    assert.equal(pick(s, "roster_backend_calls_total").length, 0);
    // A second instance on its own registry does not collide with the first.
    const other = createProxyMetrics();
    assert.match(await other.registry.metrics(), /^roster_process_cpu_user_seconds_total /m);
  });

  it("writes HELP and TYPE lines and serves the JSON form too", async () => {
    const m = quiet();
    m.callEnded("c", "b", Status.OK, 0.001);
    const text = await m.registry.metrics();
    assert.match(text, /^# TYPE roster_backend_calls_total counter$/m);
    assert.match(text, /^# TYPE roster_backend_call_duration_seconds histogram$/m);
    assert.match(text, /^# HELP roster_backend_call_duration_seconds \S/m);
    assert.match(text, /^# TYPE roster_backend_in_flight gauge$/m);
    const json = await m.registry.getMetricsAsJSON();
    const histogram = json.find((x) => x.name === "roster_backend_call_duration_seconds");
    assert.ok(histogram, "histogram missing from getMetricsAsJSON");
    assert.equal(histogram.values.length, CALL_DURATION_BUCKETS.length + 3);
  });

  it("escapes label values from configuration", async () => {
    const m = quiet();
    m.callEnded('we"ird\\cluster', "b", Status.OK, 0.001);
    const text = await m.registry.metrics();
    assert.ok(text.includes('cluster="we\\"ird\\\\cluster"'), text);
  });

  it("counts calls per request class, folding classes past the cap into _other", async () => {
    const m = createProxyMetrics({ defaultMetrics: false, maxClasses: 2 });
    for (const c of ["a", "a", "b", "c", "d", "a"]) m.classCall("default", c);
    const text = await m.registry.metrics();
    assert.match(text, /roster_class_calls_total\{cluster="default",class="a"\} 3/);
    assert.match(text, /roster_class_calls_total\{cluster="default",class="b"\} 1/);
    assert.match(text, /roster_class_calls_total\{cluster="default",class="_other"\} 2/);
    assert.doesNotMatch(text, /class="c"/);
  });
});
