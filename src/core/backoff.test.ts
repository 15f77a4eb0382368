import assert from "node:assert/strict";
import { it } from "node:test";
import { ScriptedRandom } from "../../test/support/seeded-random.ts";
import { Backoff } from "./backoff.ts";

it("grows delays by the multiplier up to the cap, with jitter either side, and resets", () => {
  const b = new Backoff(new ScriptedRandom([0.5]), {
    initialMs: 100,
    maxMs: 300,
    multiplier: 2,
    jitter: 0.2,
  });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next()], [100, 200, 300, 300]);
  b.reset();
  assert.equal(b.next(), 100);
  const low = new Backoff(new ScriptedRandom([0]), {
    initialMs: 100,
    maxMs: 300,
    multiplier: 2,
    jitter: 0.2,
  });
  assert.equal(low.next(), 80);
});
