import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PeakEwma } from "./peak-ewma.ts";

function close(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) < 1e-9, `${what}: ${actual} ≠ ${expected}`);
}

describe("PeakEwma", () => {
  it("starts at the default RTT and lets it decay toward zero while nothing is measured (tower's default_decay)", () => {
    const t = new PeakEwma({ decayMs: 1000, defaultRttMs: 10 }, 0);
    close(t.rttEstimate(0), 10, "at 0");
    close(t.rttEstimate(100), 10 * Math.exp(-0.1), "at 100");
    close(t.rttEstimate(200), 10 * Math.exp(-0.2), "at 200");
    assert.equal(t.cost(0), 10);
    const fresh = new PeakEwma();
    close(fresh.rttEstimate(0), 30, "linkerd's default");
  });

  it("follows an exact sequence of samples: first replaces, higher jumps, lower blends by elapsed time", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    // [start, end, estimate right after, why]
    const table: Array<[number, number, number, string]> = [
      [0, 20, 20, "first sample replaces the 30 ms default"],
      [100, 150, 50, "50 > 20: peak, taken at once"],
      [1000, 1010, 46.70376924880604, "10 < 50: blended, 50·w + 10·(1 − w), w = e^(−860/10000)"],
      [5000, 5012, 35.2579801392514, "12: blended again, w = e^(−4002/10000)"],
    ];
    for (const [start, end, expected, why] of table) {
      t.begin(start)(end, "success");
      close(t.rttEstimate(end), expected, why);
    }
    close(t.rttEstimate(15_012), 35.2579801392514 * Math.exp(-1), "one time constant of quiet later");
  });

  it("jumps to a higher sample immediately, however recent the last one", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    t.begin(0)(5, "success");
    t.begin(5)(6, "success");
    t.begin(6)(406, "success");
    assert.equal(t.rttEstimate(406), 400);
  });

  it("decays toward lower samples with the time constant, never below them", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    t.begin(0)(100, "success"); // 100 ms peak
    let previous = t.rttEstimate(100);
    const at: Record<number, number> = {};
    for (let now = 200; now <= 30_100; now += 100) {
      t.begin(now - 10)(now, "success"); // steady 10 ms
      const e = t.rttEstimate(now);
      assert.ok(e < previous && e >= 10, `at ${now}: ${e}`);
      previous = e;
      at[now] = e;
    }
    // A continuous EWMA from 100 toward 10 is 10 + 90·e^(−t/τ); sampled every 100 ms it is the same.
    close(at[10_100]!, 10 + 90 * Math.exp(-1), "after one time constant");
    close(at[30_100]!, 10 + 90 * Math.exp(-3), "after three");
  });

  it("costs the estimate times the calls in flight plus one", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    const done = [t.begin(0), t.begin(0), t.begin(0)];
    assert.equal(t.inFlight, 3);
    assert.equal(t.cost(0), 120);
    done[0]!(40, "success"); // first sample: 40
    assert.equal(t.inFlight, 2);
    close(t.cost(40), 40 * 3, "40 ms × 3");
  });

  it("lets a failure raise the estimate but never lower it, and ignores cancelled calls", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    t.begin(0)(1, "failure");
    assert.equal(t.rttEstimate(1), 30 * Math.exp(-1 / 10_000), "a fast failure does not replace the default");
    t.begin(0)(2, "cancelled");
    assert.equal(t.inFlight, 0);
    t.begin(0)(20, "success");
    assert.equal(t.rttEstimate(20), 20);
    t.begin(20)(25, "failure");
    assert.equal(t.rttEstimate(25), 20 * Math.exp(-5 / 10_000), "a fast failure does not lower it");
    t.begin(25)(525, "failure");
    assert.equal(t.rttEstimate(525), 500, "a slow failure is a peak");
  });

  it("counts a call once when its completion is reported twice", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    const done = t.begin(0);
    t.begin(0);
    done(10, "success");
    done(900, "success");
    assert.equal(t.inFlight, 1);
    assert.equal(t.rttEstimate(10), 10);
  });

  it("never lets a zero-length call make the backend look free", () => {
    const t = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    t.begin(5)(5, "success");
    t.begin(5);
    t.begin(5);
    assert.ok(t.cost(5) > 0);
    assert.ok(t.cost(5) > t.rttEstimate(5) * 2.5);
  });

  it("rejects a non-positive decay or default RTT", () => {
    assert.throws(() => new PeakEwma({ decayMs: 0 }), /decayMs/);
    assert.throws(() => new PeakEwma({ defaultRttMs: 0 }), /defaultRttMs/);
  });
});
