import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeHistogram, mergeTargetRecords, summarize, TargetStats } from "./stats.ts";

describe("TargetStats", () => {
  it("counts calls, statuses, backends and per-interval latencies", () => {
    const s = new TargetStats("t");
    s.record(1000, "OK", "a", 0);
    s.record(2000, "OK", "b", 0);
    s.record(3000, "UNAVAILABLE", undefined, 2);
    s.record(0.2, "OK", "a", 2);
    const r = s.toRecord();
    assert.equal(r.calls, 4);
    assert.equal(r.ok, 3);
    assert.deepEqual(r.errors, { UNAVAILABLE: 1 });
    assert.deepEqual(r.backends, { a: 2, b: 1 });
    assert.deepEqual(
      r.intervals.map((i) => [i.index, i.errors, decodeHistogram(i.histogram).totalCount]),
      [
        [0, 0, 2],
        [2, 1, 2],
      ],
    );
    const h = decodeHistogram(r.latency);
    assert.equal(h.totalCount, 4);
    assert.equal(h.minNonZeroValue, 1, "sub-microsecond latencies count as 1 µs");
  });
});

describe("mergeTargetRecords", () => {
  it("adds counts and histograms of processes that ran side by side", () => {
    const a = new TargetStats("t");
    const b = new TargetStats("t");
    for (let i = 1; i <= 100; i++) a.record(i * 10, "OK", "x", 0);
    for (let i = 101; i <= 200; i++) b.record(i * 10, i % 2 === 0 ? "OK" : "DEADLINE_EXCEEDED", "y", 1);
    a.measuredMs = 1000;
    b.measuredMs = 1010;
    b.unsent = 3;
    const m = mergeTargetRecords([a.toRecord(), b.toRecord()]);
    assert.equal(m.calls, 200);
    assert.equal(m.ok, 150);
    assert.deepEqual(m.errors, { DEADLINE_EXCEEDED: 50 });
    assert.deepEqual(m.backends, { x: 100, y: 100 });
    assert.equal(m.measuredMs, 1010);
    assert.equal(m.unsent, 3);
    assert.deepEqual(
      m.intervals.map((i) => i.index),
      [0, 1],
    );
    const sum = summarize(decodeHistogram(m.latency));
    assert.equal(sum.count, 200);
    assert.ok(Math.abs(sum.p50 - 1.0) < 0.01, `p50 ${sum.p50}`);
    assert.ok(Math.abs(sum.max - 2.0) < 0.01, `max ${sum.max}`);
  });
});

describe("summarize", () => {
  it("reports zeros for an empty histogram and milliseconds otherwise", () => {
    const s = new TargetStats("t");
    assert.equal(summarize(s.latency).count, 0);
    for (let i = 1; i <= 1000; i++) s.record(i, "OK", undefined, 0);
    const sum = summarize(s.latency);
    assert.equal(sum.count, 1000);
    assert.ok(Math.abs(sum.p50 - 0.5) < 0.001);
    assert.ok(Math.abs(sum.p99 - 0.99) < 0.001);
    assert.ok(Math.abs(sum.p999 - 0.999) < 0.001);
    assert.ok(Math.abs(sum.max - 1.0) < 0.001);
  });
});
