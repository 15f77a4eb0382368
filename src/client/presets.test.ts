import assert from "node:assert/strict";
import { it } from "node:test";
import { inRegion, laptop, lowLatency, presets } from "./presets.ts";

it("gives each place its own deadline, limit and hedging", () => {
  assert.deepEqual(
    [laptop(), inRegion(), lowLatency()].map((p) => [
      p.name,
      p.deadlineMs,
      p.limiter.maxConcurrent,
      p.hedging !== false,
    ]),
    [
      ["laptop", 5000, 100, false],
      ["inRegion", 1100, 100, false],
      ["lowLatency", 500, 50, true],
    ],
  );
  assert.equal(presets.inRegion, inRegion);
});

it("overrides any field, nested groups field by field, without touching the next preset made", () => {
  const p = inRegion({ deadlineMs: 300, limiter: { maxConcurrent: 20 }, pool: { max: 2 } });
  assert.equal(p.deadlineMs, 300);
  assert.deepEqual(p.limiter, { maxConcurrent: 20, maxQueue: 5000, maxQueueWaitMs: Infinity });
  assert.deepEqual(p.pool, { min: 1, max: 2, streamsPerConnection: 100, idleMs: 30_000 });
  assert.equal(inRegion().deadlineMs, 1100);
  assert.equal(inRegion().limiter.maxConcurrent, 100);
});

it("turns retry and hedging off with false and on with defaults for the fields not given", () => {
  assert.equal(lowLatency({ hedging: false, retry: false }).hedging, false);
  assert.equal(lowLatency({ retry: false }).retry, false);
  const h = inRegion({ hedging: { initialDelayMs: 7 } }).hedging;
  assert.deepEqual(h, { maxAttempts: 2, percentile: 95, initialDelayMs: 7, minDelayMs: 5, maxDelayMs: 200 });
});
