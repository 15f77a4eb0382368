import assert from "node:assert/strict";
import { it } from "node:test";
import { parseRetryThrottleConfig, RetryThrottle } from "./retry-throttle.ts";

it("stops retries once failures have taken half the tokens, and lets successes earn them back", () => {
  const t = new RetryThrottle({ maxTokens: 10, tokenRatio: 0.5 });
  const seq: boolean[] = [];
  for (let i = 0; i < 6; i++) {
    t.record(true);
    seq.push(t.allows());
  }
  // 10 → 9, 8, 7, 6 allow (> 5); 5 and 4 do not.
  assert.deepEqual(seq, [true, true, true, true, false, false]);
  t.record(false); // 4.5
  t.record(false); // 5
  assert.equal(t.allows(), false);
  t.record(false); // 5.5
  assert.equal(t.allows(), true);
  for (let i = 0; i < 100; i++) t.record(false);
  assert.equal(t.tokens, 10);
});

it("validates its settings with field names", () => {
  assert.deepEqual(parseRetryThrottleConfig({}), { maxTokens: 10, tokenRatio: 0.1 });
  assert.throws(
    () => parseRetryThrottleConfig({ maxTokens: 0 }),
    /retry\.throttle\.maxTokens: must be at least 1/,
  );
  assert.throws(() => parseRetryThrottleConfig({ ratio: 1 }), /retry\.throttle\.ratio: unknown setting/);
});
