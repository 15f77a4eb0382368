import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseBenchFlags } from "./options.ts";
import { chooseIntervalMs, share, totalConnections, workerPlan } from "./plan.ts";

describe("share", () => {
  it("splits a total as evenly as whole numbers allow, remainder first", () => {
    assert.deepEqual(
      [0, 1, 2].map((i) => share(10, 3, i)),
      [4, 3, 3],
    );
    assert.deepEqual(
      [0, 1].map((i) => share(1, 2, i)),
      [1, 0],
    );
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => share(8, 4, i)),
      [2, 2, 2, 2],
    );
  });
});

describe("chooseIntervalMs", () => {
  it("aims at about 100 points between 100 ms and 1 s", () => {
    assert.equal(chooseIntervalMs({ stop: { kind: "duration", ms: 3000 } }), 100);
    assert.equal(chooseIntervalMs({ stop: { kind: "duration", ms: 30_000 } }), 300);
    assert.equal(chooseIntervalMs({ stop: { kind: "duration", ms: 600_000 } }), 1000);
    assert.equal(chooseIntervalMs({ stop: { kind: "calls", count: 10 } }), 250);
  });
});

describe("workerPlan", () => {
  const flags = { target: "127.0.0.1:1", proto: "p.proto", call: "a.B/C" };

  it("splits closed-loop lanes, calls and connections over the workers", () => {
    const s = parseBenchFlags({ ...flags, concurrency: "5", calls: "11", connections: "3", workers: "2" });
    const plans = [0, 1].map((i) => workerPlan(s, 2, i));
    assert.deepEqual(
      plans.map((p) => p.load),
      [
        { kind: "closed", concurrency: 3 },
        { kind: "closed", concurrency: 2 },
      ],
    );
    assert.deepEqual(
      plans.map((p) => p.stop),
      [
        { kind: "calls", count: 6 },
        { kind: "calls", count: 5 },
      ],
    );
    assert.deepEqual(
      plans.map((p) => p.connections),
      [2, 1],
    );
  });

  it("gives each open-loop worker the rate share and a phase that interleaves their schedules", () => {
    const s = parseBenchFlags({ ...flags, rate: "900", workers: "3" });
    const plans = [0, 1, 2].map((i) => workerPlan(s, 3, i));
    for (const p of plans) assert.deepEqual(p.load, { kind: "open", rate: 300, maxInFlight: 3334 });
    assert.deepEqual(
      plans.map((p) => p.phase),
      [0, 1 / 3, 2 / 3],
    );
    // Merged, the intended starts are evenly spaced at 1/900 s.
    const starts = plans
      .flatMap((p) => [0, 1, 2].map((k) => ((k + p.phase) / 300) * 1000))
      .sort((a, b) => a - b);
    for (let i = 1; i < starts.length; i++)
      assert.ok(Math.abs(starts[i]! - starts[i - 1]! - 1000 / 900) < 1e-9);
  });

  it("opens at least one connection per worker", () => {
    const s = parseBenchFlags({ ...flags, workers: "4", connections: "1" });
    assert.equal(workerPlan(s, 4, 3).connections, 1);
    assert.equal(totalConnections(s), 4);
  });
});
