import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { ScriptedRandom, SeededRandom } from "../../../test/support/seeded-random.ts";
import type { Random } from "../clock.ts";
import {
  createOutlierDetector,
  defaultOutlierDetection,
  type OutlierDetector,
  parseOutlierConfig,
} from "./outlier-detection.ts";

function detector(raw: unknown, keys: string[], random: Random = new SeededRandom(1)): OutlierDetector {
  const d = createOutlierDetector(parseOutlierConfig(raw), { clock: new FakeClock(), random });
  d.setEndpoints(keys);
  return d;
}

function feed(d: OutlierDetector, key: string, successes: number, failures: number): void {
  for (let i = 0; i < successes; i++) d.record(key, true);
  for (let i = 0; i < failures; i++) d.record(key, false);
}

const five = ["a", "b", "c", "d", "e"];

/** Healthy traffic for every key but `bad`, which gets `badSuccesses`/`badFailures`. */
function interval(d: OutlierDetector, keys: string[], bad: string[], ok: number, badS: number, badF: number) {
  for (const k of keys) {
    if (bad.includes(k)) feed(d, k, badS, badF);
    else feed(d, k, ok, 0);
  }
}

describe("outlier detection config", () => {
  it("fills A50's defaults and leaves an algorithm off unless its section is present", () => {
    const off = parseOutlierConfig(undefined);
    assert.deepEqual(off, {
      intervalMs: 10_000,
      baseEjectionTimeMs: 30_000,
      maxEjectionTimeMs: 300_000,
      maxEjectionPercent: 10,
      successRateEjection: null,
      failurePercentageEjection: null,
    });
    assert.equal(createOutlierDetector(off, { random: new SeededRandom(1) }).enabled, false);
    const on = parseOutlierConfig({ successRateEjection: {}, failurePercentageEjection: {} });
    assert.deepEqual(on.successRateEjection, defaultOutlierDetection.successRateEjection);
    assert.deepEqual(on.failurePercentageEjection, defaultOutlierDetection.failurePercentageEjection);
  });

  it("names the field at fault", () => {
    const table: Array<[unknown, RegExp]> = [
      ["10s", /outlierDetection: must be an object/],
      [{ interval: 5 }, /outlierDetection\.interval: unknown setting/],
      [{ intervalMs: 0 }, /outlierDetection\.intervalMs: must be at least 1/],
      [{ baseEjectionTimeMs: -1 }, /outlierDetection\.baseEjectionTimeMs: must be at least 0/],
      [{ maxEjectionPercent: 101 }, /outlierDetection\.maxEjectionPercent: must be at most 100/],
      [{ successRateEjection: 3 }, /outlierDetection\.successRateEjection: must be an object/],
      [
        { successRateEjection: { stdevFactor: 1.9 } },
        /successRateEjection\.stdevFactor: must be a whole number/,
      ],
      [
        { successRateEjection: { enforcementPercentage: 150 } },
        /successRateEjection\.enforcementPercentage: must be at most 100/,
      ],
      [
        { failurePercentageEjection: { threshold: -1 } },
        /failurePercentageEjection\.threshold: must be at least 0/,
      ],
      [
        { failurePercentageEjection: { minHosts: 3 } },
        /failurePercentageEjection\.minHosts: unknown setting/,
      ],
    ];
    for (const [raw, message] of table)
      assert.throws(() => parseOutlierConfig(raw), message, JSON.stringify(raw));
    assert.throws(
      () => parseOutlierConfig({ intervalMs: "1s" }, "clusters.api.outlierDetection"),
      /clusters\.api\.outlierDetection\.intervalMs: must be a number/,
    );
  });
});

describe("failure-percentage ejection", () => {
  it("ejects above the threshold, for base time × times ejected, and returns the endpoint when time is up", () => {
    const d = detector({ failurePercentageEjection: { threshold: 50, requestVolume: 10 } }, five);
    // [tick time, healthy traffic for e in the interval before?, ejected, returned]
    const table: Array<[number, boolean, string[], string[]]> = [
      [10_000, false, ["e"], []], // 80% failures > 50%
      [20_000, true, [], []],
      [30_000, true, [], []],
      [40_000, true, [], ["e"]], // 10 000 + 30 000 × 1
      [50_000, true, [], []],
    ];
    for (const [now, healthy, ejected, returned] of table) {
      interval(d, five, ["e"], 10, healthy ? 10 : 2, healthy ? 0 : 8);
      assert.deepEqual(d.tick(now), { ejected, returned }, `at ${now}`);
      assert.equal(d.isEjected("e"), now >= 10_000 && now < 40_000, `isEjected at ${now}`);
    }
    assert.deepEqual(d.ejectedKeys(), []);
  });

  it("grows the ejection time with the multiplier, caps it at maxEjectionTimeMs, and lets the multiplier decay", () => {
    const d = detector(
      { maxEjectionTimeMs: 45_000, failurePercentageEjection: { threshold: 50, requestVolume: 10 } },
      five,
    );
    const failingBefore = new Set([10_000, 50_000, 130_000]);
    // [tick, ejected, returned]
    const expected = new Map<number, [string[], string[]]>([
      [10_000, [["e"], []]], // multiplier 1: 30 s
      [40_000, [[], ["e"]]], // returned; the multiplier stays 1 this tick
      [50_000, [["e"], []]], // multiplier 2: min(60 s, 45 s) = 45 s → back at 95 s
      [100_000, [[], ["e"]]], // first tick at or after 95 s
      // 110 s: multiplier 2 → 1; 120 s: 1 → 0
      [130_000, [["e"], []]], // multiplier 1 again: 30 s
      [160_000, [[], ["e"]]],
    ]);
    for (let now = 10_000; now <= 170_000; now += 10_000) {
      const failing = failingBefore.has(now);
      interval(d, five, ["e"], 10, failing ? 2 : 10, failing ? 8 : 0);
      const [ejected, returned] = expected.get(now) ?? [[], []];
      assert.deepEqual(d.tick(now), { ejected, returned }, `at ${now}`);
    }
  });

  it("needs minimumHosts endpoints (with or without traffic) and requestVolume calls", () => {
    const four = ["a", "b", "c", "d"];
    const small = detector({ failurePercentageEjection: { threshold: 50, requestVolume: 10 } }, four);
    interval(small, four, ["d"], 10, 0, 10);
    assert.deepEqual(small.tick(10_000).ejected, [], "4 endpoints < minimumHosts 5");

    const quiet = detector({ failurePercentageEjection: { threshold: 50, requestVolume: 10 } }, five);
    interval(quiet, five, ["e"], 10, 0, 9);
    assert.deepEqual(quiet.tick(10_000).ejected, [], "9 calls < requestVolume 10");
    interval(quiet, five, ["e"], 10, 5, 5);
    assert.deepEqual(quiet.tick(20_000).ejected, [], "50% is not above a 50% threshold");
  });

  it("ejects an outlier only when the random draw is below enforcementPercentage", () => {
    const raw = {
      failurePercentageEjection: { threshold: 50, requestVolume: 10, enforcementPercentage: 50 },
    };
    // randomInt(100): 0.6 → 60 (not < 50), then 0.4 → 40 (< 50).
    const d = detector(raw, five, new ScriptedRandom([0.6, 0.4]));
    interval(d, five, ["e"], 10, 0, 10);
    assert.deepEqual(d.tick(10_000).ejected, []);
    interval(d, five, ["e"], 10, 0, 10);
    assert.deepEqual(d.tick(20_000).ejected, ["e"]);
  });
});

describe("success-rate ejection", () => {
  it("ejects below mean − stdev × stdevFactor / 1000, exactly at the boundary", () => {
    // Rates 1, 1, 1, 1, 0.5: mean 0.9, population stdev 0.2.
    const table: Array<[number, string[]]> = [
      [1900, ["e"]], // threshold 0.9 − 0.38 = 0.52 > 0.5
      [2000, []], // threshold 0.5: not below
      [2500, []],
    ];
    for (const [stdevFactor, ejected] of table) {
      const d = detector({ successRateEjection: { stdevFactor } }, five);
      interval(d, five, ["e"], 100, 50, 50);
      assert.deepEqual(d.tick(10_000).ejected, ejected, `stdevFactor ${stdevFactor}`);
    }
  });

  it("judges only endpoints with requestVolume calls, and only when minimumHosts of them have it", () => {
    const few = detector({ successRateEjection: {} }, five);
    interval(few, five, ["e"], 100, 50, 50);
    few.record("a", true); // a: 101 calls; still five with volume
    assert.deepEqual(few.tick(10_000).ejected, ["e"]);

    const thin = detector({ successRateEjection: {} }, five);
    interval(thin, five, ["e"], 100, 50, 49); // e: 99 calls
    assert.deepEqual(thin.tick(10_000).ejected, [], "only 4 endpoints reach the volume: below minimumHosts");

    const lowered = detector({ successRateEjection: { minimumHosts: 4 } }, five);
    interval(lowered, five, ["e"], 100, 50, 49);
    assert.deepEqual(lowered.tick(10_000).ejected, [], "e is not judged with 99 calls");
  });
});

describe("ejection cap", () => {
  const ten = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];
  const failing = ["k2", "k3", "k5", "k8"];
  const fp = { threshold: 50, requestVolume: 10 };

  it("never goes past maxEjectionPercent, in endpoint order, across ticks", () => {
    const d = detector({ maxEjectionPercent: 20, failurePercentageEjection: fp }, ten);
    interval(d, ten, failing, 10, 0, 10);
    assert.deepEqual(d.tick(10_000).ejected, ["k2", "k3"], "2 of 10 = 20%; a third would be 30%");
    interval(d, ten, failing, 10, 0, 10);
    assert.deepEqual(d.tick(20_000).ejected, [], "the cap still holds");
    assert.deepEqual(d.ejectedKeys(), ["k2", "k3"]);
  });

  it("always allows one ejection, even when the cap rounds to none (A50)", () => {
    for (const maxEjectionPercent of [0, 5, 10]) {
      const d = detector({ maxEjectionPercent, failurePercentageEjection: fp }, ten);
      interval(d, ten, failing, 10, 0, 10);
      assert.deepEqual(d.tick(10_000).ejected, ["k2"], `${maxEjectionPercent}%`);
    }
    const all = detector({ maxEjectionPercent: 100, failurePercentageEjection: fp }, ten);
    interval(all, ten, failing, 10, 0, 10);
    assert.deepEqual(all.tick(10_000).ejected, failing);
  });

  it("frees a place when an ejected endpoint leaves the set", () => {
    const d = detector({ maxEjectionPercent: 20, failurePercentageEjection: fp }, ten);
    interval(d, ten, failing, 10, 0, 10);
    assert.deepEqual(d.tick(10_000).ejected, ["k2", "k3"]);
    d.setEndpoints(ten.filter((k) => k !== "k2").concat("k10"));
    assert.equal(d.isEjected("k2"), false);
    interval(d, ten, failing, 10, 0, 10);
    assert.deepEqual(d.tick(20_000).ejected, ["k5"], "k3 + k5 = 2 of 10");
  });
});

describe("outlier detector bookkeeping", () => {
  it("ignores unknown keys, and counts nothing when no algorithm is configured", () => {
    const d = detector({ failurePercentageEjection: { threshold: 50, requestVolume: 10 } }, five);
    feed(d, "zz", 0, 100);
    interval(d, five, [], 10, 0, 0);
    assert.deepEqual(d.tick(10_000), { ejected: [], returned: [] });
    const off = detector({}, five);
    interval(off, five, ["e"], 10, 0, 100);
    assert.deepEqual(off.tick(10_000), { ejected: [], returned: [] });
    assert.equal(off.enabled, false);
  });

  it("judges only the calls of the interval just ended", () => {
    const d = detector({ failurePercentageEjection: { threshold: 50, requestVolume: 10 } }, five);
    interval(d, five, ["e"], 10, 0, 6); // 6 failures: below volume
    assert.deepEqual(d.tick(10_000).ejected, []);
    interval(d, five, ["e"], 10, 0, 6); // the first 6 are forgotten: still 6
    assert.deepEqual(d.tick(20_000).ejected, []);
  });
});
