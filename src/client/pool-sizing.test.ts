import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PoolSizer } from "./pool-sizing.ts";

describe("PoolSizer", () => {
  const config = { min: 1, max: 3, streamsPerChannel: 100, idleMs: 1000 };

  it("grows when every channel carries the stream limit, and never past max", () => {
    const s = new PoolSizer(config);
    // [size, inFlight, leastLoaded, now] → decision
    const table: [number, number, number, number, string][] = [
      [1, 0, 0, 0, "keep"],
      [1, 99, 99, 1, "keep"],
      [1, 100, 100, 2, "grow"],
      [2, 150, 50, 3, "keep"],
      [2, 200, 100, 4, "grow"],
      [3, 300, 100, 5, "keep"],
      [3, 5000, 1666, 6, "keep"],
    ];
    for (const [size, inFlight, least, now, want] of table) {
      assert.equal(s.decide(size, inFlight, least, now), want, `size ${size}, ${inFlight} in flight`);
    }
  });

  it("shrinks one channel at a time after demand fitted half a smaller pool for idleMs", () => {
    const s = new PoolSizer(config);
    const table: [number, number, number, string][] = [
      [3, 101, 0, "keep"], // fits 2 channels, not half of them (100)
      [3, 100, 10, "keep"], // low since 10
      [3, 90, 1009, "keep"],
      [3, 50, 1010, "shrink"],
      [2, 50, 1500, "keep"], // the next shrink waits another idleMs from 1010
      [2, 51, 1600, "keep"], // 51 > 50: not low; the wait starts over
      [2, 0, 1700, "keep"],
      [2, 0, 2699, "keep"],
      [2, 0, 2700, "shrink"],
      [1, 0, 9000, "keep"], // min
    ];
    for (const [size, inFlight, now, want] of table) {
      assert.equal(s.decide(size, inFlight, 0, now), want, `size ${size}, ${inFlight} in flight at ${now}`);
    }
  });

  it("grows to its minimum first and rejects bounds that cannot hold", () => {
    const s = new PoolSizer({ min: 2, max: 2, streamsPerChannel: 1, idleMs: 0 });
    assert.equal(s.decide(0, 0, 0, 0), "grow");
    assert.equal(s.decide(1, 0, 0, 0), "grow");
    assert.equal(s.decide(2, 9, 5, 0), "keep");
    assert.throws(
      () => new PoolSizer({ min: 2, max: 1, streamsPerChannel: 1, idleMs: 0 }),
      /pool\.max: must be/,
    );
    assert.throws(
      () => new PoolSizer({ min: 0, max: 1, streamsPerChannel: 1, idleMs: 0 }),
      /pool\.min: must be/,
    );
  });
});
