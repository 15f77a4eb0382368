import assert from "node:assert/strict";
import { it } from "node:test";
import { HedgeDelay } from "./hedge-delay.ts";

const config = { percentile: 95, initialDelayMs: 50, minDelayMs: 2, maxDelayMs: 300 };

it("uses the initial delay until enough attempts were seen, then the observed p95", () => {
  const d = new HedgeDelay(config, 100, 20, 10);
  for (let i = 1; i <= 19; i++) d.record(i);
  assert.equal(d.delayMs, 50);
  // From the 20th sample on, the percentile is recomputed every 10th.
  for (let i = 20; i <= 28; i++) d.record(i);
  assert.equal(d.delayMs, 50);
  d.record(29); // 1..29: the ceil(0.95 × 29) = 28th smallest
  assert.equal(d.delayMs, 28);
});

it("follows the recent window, not all history, and stays within its bounds", () => {
  const d = new HedgeDelay(config, 100, 20, 1);
  for (let i = 0; i < 100; i++) d.record(1000);
  assert.equal(d.delayMs, 300);
  for (let i = 0; i < 100; i++) d.record(i % 10 === 0 ? 40 : 1);
  // 10 of the last 100 are 40 ms: p95 is 40.
  assert.equal(d.delayMs, 40);
  for (let i = 0; i < 100; i++) d.record(0.5);
  assert.equal(d.delayMs, 2);
});

it("rejects a percentile or bounds that cannot hold", () => {
  assert.throws(() => new HedgeDelay({ ...config, percentile: 100 }), /hedging\.percentile/);
  assert.throws(() => new HedgeDelay({ ...config, maxDelayMs: 1 }), /hedging\.maxDelayMs/);
});
