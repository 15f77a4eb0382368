import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PoolSizer } from "./pool-sizing.ts";

describe("PoolSizer", () => {
  const config = { min: 1, max: 3, streamsPerConnection: 100, idleMs: 1000 };

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
    const s = new PoolSizer({ min: 2, max: 2, streamsPerConnection: 1, idleMs: 0 });
    assert.equal(s.decide(0, 0, 0, 0), "grow");
    assert.equal(s.decide(1, 0, 0, 0), "grow");
    assert.equal(s.decide(2, 9, 5, 0), "keep");
    assert.throws(
      () => new PoolSizer({ min: 2, max: 1, streamsPerConnection: 1, idleMs: 0 }),
      /pool\.max: must be/,
    );
    assert.throws(
      () => new PoolSizer({ min: 0, max: 1, streamsPerConnection: 1, idleMs: 0 }),
      /pool\.min: must be/,
    );
  });

  it("counts a channel full at the stream limit times its READY connections (one per backend)", () => {
    const s = new PoolSizer(config);
    // [size, inFlight, leastLoaded, connections] → decision. 4 backends: a channel holds 4 × 100.
    const table: [number, number, number, number, string][] = [
      [1, 100, 100, 4, "keep"], // 25 calls per connection: far from the servers' limit
      [1, 399, 399, 4, "keep"],
      [1, 400, 400, 4, "grow"], // every connection of the only channel at 100
      [2, 450, 50, 4, "keep"],
      [2, 800, 400, 4, "grow"],
      [1, 100, 100, 0, "grow"], // still connecting: counted as one connection
      [1, 100, 100, 1, "grow"],
      [2, 150, 50, 2, "keep"],
    ];
    for (const [size, inFlight, least, connections, want] of table) {
      assert.equal(
        s.decide(size, inFlight, least, 0, connections),
        want,
        `size ${size}, ${inFlight} in flight, ${connections} connections per channel`,
      );
    }
  });

  it("shrinks by the same capacity: one channel fewer must hold twice the calls in flight", () => {
    const s = new PoolSizer({ ...config, idleMs: 0 });
    // 3 channels of 4 connections: 2 channels hold 800; half of that is 400.
    assert.equal(s.decide(3, 401, 0, 0, 4), "keep");
    assert.equal(s.decide(3, 400, 0, 1, 4), "shrink");
    // The same calls with one connection per channel would have shrunk only at 100.
    const one = new PoolSizer({ ...config, idleMs: 0 });
    assert.equal(one.decide(3, 101, 0, 0, 1), "keep");
    assert.equal(one.decide(3, 100, 0, 1, 1), "shrink");
  });
});
