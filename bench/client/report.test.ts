import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  compareWithPlain,
  fixedLabel,
  median,
  momentoTargetMs,
  plainTable,
  poolTable,
  poolVerdict,
  type RunRecord,
  summarize,
  usedRuns,
} from "./report.ts";

function run(over: Partial<RunRecord>): RunRecord {
  return {
    scenario: "c50",
    concurrency: 50,
    label: "plain grpc-js",
    round: 1,
    attempt: 1,
    callsPerS: 1000,
    calls: 8000,
    errors: 0,
    firstError: undefined,
    badPayloads: 0,
    servedBy: { b1: 2000, b2: 2000, b3: 2000, b4: 2000 },
    p50Ms: 5,
    p99Ms: 10,
    p999Ms: 20,
    maxMs: 30,
    clientUsPerCall: 200,
    clientCores: 0.2,
    backendCores: 0.3,
    backendUsPerCall: 300,
    otherCores: 0,
    stealCores: 0,
    noisy: false,
    ...over,
  };
}

describe("bench/client report", () => {
  it("median of odd and even counts; NaN for none", () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
  });

  it("uses the quiet runs, or all of them when every run was noisy", () => {
    const quiet = run({ callsPerS: 1 });
    const noisy = run({ callsPerS: 2, noisy: true });
    assert.deepEqual(usedRuns([quiet, noisy]), [quiet]);
    assert.deepEqual(usedRuns([noisy, noisy]), [noisy, noisy]);
  });

  it("summarizes the quiet runs: medians, errors of every run, the busiest backend's share", () => {
    const s = summarize([
      run({ callsPerS: 900, p999Ms: 30, servedBy: { b1: 3, b2: 1 } }),
      run({ callsPerS: 1100, p999Ms: 10, servedBy: { b1: 3, b2: 1 } }),
      run({ callsPerS: 5000, noisy: true, errors: 2, firstError: "UNAVAILABLE: x" }),
    ]);
    assert.ok(s !== undefined);
    assert.equal(s.usedRuns, 2);
    assert.equal(s.noisyRuns, 1);
    assert.equal(s.callsPerS, 1000);
    assert.equal(s.p999Ms, 20);
    assert.equal(s.errors, 2);
    assert.equal(s.firstError, "UNAVAILABLE: x");
    assert.equal(s.busiestShare, 0.75);
    assert.equal(summarize([]), undefined);
  });

  it("compares each roster client with plain grpc-js at the same concurrency, per round too", () => {
    const records = [
      run({ round: 1, callsPerS: 1000, p999Ms: 20 }),
      run({ round: 2, callsPerS: 1000, p999Ms: 20 }),
      run({ label: "roster rr", round: 1, callsPerS: 1100, p999Ms: 10 }),
      run({ label: "roster rr", round: 2, callsPerS: 900, p999Ms: 30 }),
      run({ scenario: "c5", concurrency: 5, round: 1, callsPerS: 500, p999Ms: 4 }),
      run({ scenario: "c5", concurrency: 5, label: "roster rr", round: 1, callsPerS: 400, p999Ms: 6 }),
    ];
    const summaries = ["c50", "c5"].flatMap((sc) =>
      ["plain grpc-js", "roster rr"].map(
        (l) => summarize(records.filter((r) => r.scenario === sc && r.label === l))!,
      ),
    );
    const vs = compareWithPlain(summaries, records, "plain grpc-js");
    assert.equal(vs.length, 2);
    const c50 = vs.find((v) => v.concurrency === 50)!;
    assert.equal(c50.callsRatio, 1);
    assert.equal(c50.p999Ratio, 1);
    assert.deepEqual(c50.callsRatioPerRound, [1.1, 0.9]);
    assert.ok(c50.callsMet && c50.p999Met);
    const c5 = vs.find((v) => v.concurrency === 5)!;
    assert.equal(c5.callsRatio, 0.8);
    assert.ok(!c5.callsMet && !c5.p999Met);
    const table = plainTable(summaries, vs, "plain grpc-js");
    assert.match(table, /\| 5 \| roster rr \| 1 \| 400 \| 0\.80 \(\*\*not met\*\*\)/);
    assert.match(table, /≤ 5 ms: \*\*not met\*\*/);
    assert.match(table, /≤ 20 ms: met/);
  });

  it("Momento's targets: 5 ms at 5 calls in flight, 20 ms at 50, none elsewhere", () => {
    assert.equal(momentoTargetMs(5), 5);
    assert.equal(momentoTargetMs(50), 20);
    assert.equal(momentoTargetMs(5000), undefined);
  });

  it("the automatic pool against the best fixed count: within 10 % is met", () => {
    const pool = (label: string, callsPerS: number, end?: number) =>
      summarize([
        run({
          scenario: "pool",
          concurrency: 5000,
          label,
          callsPerS,
          ...(end === undefined ? {} : { pool: { end, max: end, mean: end, opened: end } }),
        }),
      ])!;
    const fixed = [pool(fixedLabel(1), 1000, 1), pool(fixedLabel(2), 2000, 2), pool(fixedLabel(3), 1500, 3)];
    const met = poolVerdict([pool("auto", 1850, 8), ...fixed]);
    assert.ok(met !== undefined);
    assert.equal(met.bestLabel, "fixed-2");
    assert.equal(met.ratio, 0.925);
    assert.ok(met.met);
    assert.deepEqual(met.autoPoolEnd, [8]);
    const missed = poolVerdict([pool("auto", 1700, 8), ...fixed]);
    assert.ok(missed !== undefined && !missed.met);
    assert.equal(poolVerdict(fixed), undefined);
    const table = poolTable([pool("auto", 1850, 8), ...fixed], met);
    assert.match(table, /\| auto \| 8 \| 1 \| 1850 \| 0\.93 \|/);
    assert.match(table, /target ≥ 0\.90×: met/);
  });
});
