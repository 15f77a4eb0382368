import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { ScriptedRandom, SeededRandom } from "../../../test/support/seeded-random.ts";
import type { Random } from "../clock.ts";
import { staticEndpoint } from "../endpoint.ts";
import { ConfigError } from "../errors.ts";
import { PendingRequests } from "../load/pending-requests.ts";
import type { Candidate, LoadReport, PickContext, Picker } from "../picker.ts";
import { createDefaultRegistry } from "./registry.ts";
import {
  defaultWeightedRoundRobinConfig,
  EdfScheduler,
  fillWeights,
  type WeightedRoundRobinBalancer,
  type WeightedRoundRobinConfig,
  weightedRoundRobin,
  weightFromReport,
} from "./weighted-round-robin.ts";

const registry = createDefaultRegistry();

/** A candidate whose load report the test replaces, as the channel does. */
type TestCandidate = Candidate & { loadReport?: unknown };

function candidate(key: string): TestCandidate {
  const endpoint = { ...staticEndpoint({ kind: "tcp", host: "10.0.0.1", port: 1000 }), key };
  return { key, endpoint, load: new PendingRequests() };
}

function report(at: number, fields: Partial<LoadReport>): LoadReport {
  return { at, qps: 0, eps: 0, cpuUtilization: 0, applicationUtilization: 0, ...fields };
}

const ctx = (exclude?: string[]): PickContext => ({
  path: "/pkg.Svc/M",
  header: () => undefined,
  ...(exclude ? { exclude: new Set(exclude) } : {}),
});

function keyOf(picker: Picker, c = ctx()): string {
  const r = picker.pick(c);
  assert.equal(r.kind, "pick");
  return r.kind === "pick" ? r.candidate.key : "";
}

function picks(picker: Picker, n: number): string[] {
  return Array.from({ length: n }, () => keyOf(picker));
}

function counts(keys: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of keys) out[k] = (out[k] ?? 0) + 1;
  return out;
}

/** EDF gives each backend its share of any run of picks to within one pick. */
function assertNear(actual: Record<string, number>, expected: Record<string, number>): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), JSON.stringify(actual));
  for (const [k, n] of Object.entries(expected)) {
    assert.ok(
      Math.abs(actual[k]! - n) <= 1,
      `${k}: ${actual[k]} picks, expected ${n} ± 1 (${JSON.stringify(actual)})`,
    );
  }
}

function balancer(
  config: Partial<WeightedRoundRobinConfig> = {},
  random: Random = new ScriptedRandom([0]),
): { b: WeightedRoundRobinBalancer; clock: FakeClock } {
  const clock = new FakeClock(1000);
  const b = weightedRoundRobin.create(
    { ...defaultWeightedRoundRobinConfig, ...config },
    { clock, random },
  ) as WeightedRoundRobinBalancer;
  return { b, clock };
}

/** Reports giving weights 1 : 2 : 4 (equal qps, utilization 1, 0.5, 0.25), arrived at `at`. */
function report124(cs: TestCandidate[], at: number): void {
  cs[0]!.loadReport = report(at, { qps: 100, cpuUtilization: 1 });
  cs[1]!.loadReport = report(at, { qps: 100, cpuUtilization: 0.5 });
  cs[2]!.loadReport = report(at, { qps: 100, cpuUtilization: 0.25 });
}

describe("weighted_round_robin config", () => {
  it("has A58's defaults, and reports on at the asked interval", () => {
    const spec = registry.resolve("weighted_round_robin", {});
    assert.deepEqual(spec.loadReports, { reportIntervalMs: 10_000 });
    assert.deepEqual(weightedRoundRobin.parseConfig({}), {
      enableOobLoadReport: true,
      oobReportingPeriodMs: 10_000,
      blackoutPeriodMs: 10_000,
      weightExpirationPeriodMs: 180_000,
      weightUpdatePeriodMs: 1000,
      errorUtilizationPenalty: 1,
    });
  });

  it("reads durations as strings with a unit or as milliseconds, and raises weightUpdatePeriod to 100 ms", () => {
    const c = weightedRoundRobin.parseConfig({
      oobReportingPeriod: "1.5s",
      blackoutPeriod: "250ms",
      weightExpirationPeriod: 60_000,
      weightUpdatePeriod: "20ms",
      errorUtilizationPenalty: 0,
      enableOobLoadReport: false,
    });
    assert.deepEqual(c, {
      enableOobLoadReport: false,
      oobReportingPeriodMs: 1500,
      blackoutPeriodMs: 250,
      weightExpirationPeriodMs: 60_000,
      weightUpdatePeriodMs: 100,
      errorUtilizationPenalty: 0,
    });
    assert.equal(weightedRoundRobin.loadReports?.(c), undefined, "no reports when OOB is off");
    assert.equal(weightedRoundRobin.parseConfig({ blackoutPeriod: "0s" }).blackoutPeriodMs, 0);
  });

  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ blackoutPeriod: "ten seconds" }, /^policy\.blackoutPeriod: must be a duration/],
    [{ blackoutPeriod: "10" }, /^policy\.blackoutPeriod: must be a duration/],
    [{ blackoutPeriod: -1 }, /^policy\.blackoutPeriod: must be at least 0 ms/],
    [{ blackoutPeriod: true }, /^policy\.blackoutPeriod: must be a duration/],
    [{ weightExpirationPeriod: "0s" }, /^policy\.weightExpirationPeriod: must be greater than 0/],
    [{ weightUpdatePeriod: Number.NaN }, /^policy\.weightUpdatePeriod: must be a finite duration/],
    [{ oobReportingPeriod: 0 }, /^policy\.oobReportingPeriod: must be greater than 0/],
    [{ oobReportingPeriod: "100000000s" }, /^policy\.oobReportingPeriod: must be at most/],
    [{ errorUtilizationPenalty: -0.5 }, /^policy\.errorUtilizationPenalty: must be at least 0/],
    [{ errorUtilizationPenalty: "1" }, /^policy\.errorUtilizationPenalty: must be a number/],
    [{ enableOobLoadReport: "yes" }, /^policy\.enableOobLoadReport: must be true or false/],
    [{ blackout_period: "1s" }, /^policy\.blackout_period: unknown setting/],
  ];
  for (const [raw, message] of bad) {
    it(`rejects ${JSON.stringify(raw)} naming the field`, () => {
      assert.throws(
        () => registry.resolve("weighted_round_robin", raw),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
      );
    });
  }

  it("names the field where the policy was configured (a route's policy)", () => {
    assert.throws(
      () => registry.resolve("weighted_round_robin", { blackoutPeriod: "x" }, "clusters.a.policy"),
      /clusters\.a\.policy\.blackoutPeriod/,
    );
  });

  it("turns load reports on for resume too (the ORCA client's default interval)", () => {
    assert.deepEqual(registry.resolve("resume", {}).loadReports, {});
    assert.equal(registry.resolve("round_robin", {}).loadReports, undefined);
  });
});

describe("weightFromReport (A58's formula)", () => {
  const table: Array<[string, Partial<LoadReport>, number, number]> = [
    ["qps / cpu utilization", { qps: 100, cpuUtilization: 0.5 }, 1, 200],
    [
      "application utilization wins when > 0",
      { qps: 100, cpuUtilization: 0.5, applicationUtilization: 0.25 },
      1,
      400,
    ],
    ["errors add eps/qps × penalty to utilization", { qps: 100, eps: 50, cpuUtilization: 0.5 }, 1, 100],
    ["penalty 2 doubles it", { qps: 100, eps: 50, cpuUtilization: 0.5 }, 2, 100 / 1.5],
    ["penalty 0 ignores errors", { qps: 100, eps: 50, cpuUtilization: 0.5 }, 0, 200],
    ["qps 0: unusable", { qps: 0, cpuUtilization: 0.5 }, 1, 0],
    ["utilization 0: unusable", { qps: 100 }, 1, 0],
    ["NaN qps", { qps: Number.NaN, cpuUtilization: 0.5 }, 1, 0],
    ["NaN utilization", { qps: 10, cpuUtilization: Number.NaN }, 1, 0],
    ["NaN application utilization", { qps: 10, cpuUtilization: 1, applicationUtilization: Number.NaN }, 1, 0],
    ["negative qps", { qps: -5, cpuUtilization: 0.5 }, 1, 0],
    ["negative eps", { qps: 5, eps: -1, cpuUtilization: 0.5 }, 1, 0],
    ["negative utilization", { qps: 5, cpuUtilization: -0.5 }, 1, 0],
    ["Infinity qps", { qps: Number.POSITIVE_INFINITY, cpuUtilization: 0.5 }, 1, 0],
    ["Infinity eps", { qps: 5, eps: Number.POSITIVE_INFINITY, cpuUtilization: 0.5 }, 1, 0],
    ["absurd qps 1e300", { qps: 1e300, cpuUtilization: 1 }, 1, 0],
    ["absurd utilization 1e300", { qps: 5, cpuUtilization: 1e300 }, 1, 0],
    ["a weight that overflows", { qps: 1e9, cpuUtilization: 1e-320 }, 1, 0],
  ];
  for (const [what, fields, penalty, expected] of table) {
    it(what, () => {
      assert.equal(weightFromReport(report(0, fields), penalty), expected);
    });
  }

  it("does not throw on a report of the wrong shape", () => {
    const odd = { at: 0, qps: "100", eps: null, cpuUtilization: {}, applicationUtilization: [] };
    assert.equal(weightFromReport(odd as unknown as LoadReport, 1), 0);
  });
});

describe("fillWeights", () => {
  it("gives backends without a weight the mean of the usable ones", () => {
    const out = new Float64Array(4);
    assert.equal(fillWeights([2, 0, 4, 0], out), 2);
    assert.deepEqual([...out], [2, 3, 4, 3]);
  });

  it("makes every weight equal when fewer than two are usable", () => {
    const out = new Float64Array(3);
    assert.equal(fillWeights([0, 7, 0], out), 1);
    assert.deepEqual([...out], [1, 1, 1]);
    assert.equal(fillWeights([0, 0, 0], out), 0);
    assert.deepEqual([...out], [1, 1, 1]);
  });
});

describe("EdfScheduler", () => {
  const names = (s: EdfScheduler, n: number) =>
    Array.from({ length: n }, () => "abcdefgh"[s.next()]!).join("");

  it("weights 1:2:4 with deadlines starting at 0 give exactly a b c c b c c, cycle after cycle", () => {
    const s = new EdfScheduler([1, 2, 4], [0, 0, 0]);
    assert.equal(names(s, 21), "abccbcc".repeat(3));
  });

  it("weights 1:2:4 with deadlines half a period in interleave c b c a c b c", () => {
    const s = new EdfScheduler([1, 2, 4], [0.5, 0.5, 0.5]);
    assert.equal(names(s, 14), "cbcacbc".repeat(2));
  });

  it("scales weights: 100:200:400 picks as 1:2:4", () => {
    const s = new EdfScheduler([100, 200, 400], [0, 0, 0]);
    assert.equal(names(s, 7), "abccbcc");
  });

  it("equal weights are round robin", () => {
    assert.equal(names(new EdfScheduler([5, 5, 5], [0, 0, 0]), 9), "abcabcabc");
  });

  it("with random initial deadlines, every cycle of 7 picks still holds exactly 1, 2 and 4", () => {
    const random = new SeededRandom(7);
    for (let trial = 0; trial < 20; trial++) {
      const s = new EdfScheduler([1, 2, 4], [random.next(), random.next(), random.next()]);
      for (let cycle = 0; cycle < 50; cycle++) {
        const c = counts(names(s, 7).split(""));
        assert.deepEqual(c, { a: 1, b: 2, c: 4 }, `trial ${trial} cycle ${cycle}`);
      }
    }
  });

  it("follows uneven weights 3:5:11 to within one pick per backend", () => {
    const s = new EdfScheduler([3, 5, 11], [0.3, 0.9, 0.1]);
    const c = counts(names(s, 19 * 100).split(""));
    assert.ok(
      Math.abs(c.a! - 300) <= 1 && Math.abs(c.b! - 500) <= 1 && Math.abs(c.c! - 1100) <= 1,
      JSON.stringify(c),
    );
  });

  it("steps over rejected entries without taking their turn, and picks anyway when all are rejected", () => {
    const s = new EdfScheduler([1, 1, 1], [0, 0, 0]);
    assert.equal(
      s.nextExcept((i) => i === 0),
      1,
    );
    assert.equal(s.next(), 0, "a kept its turn");
    assert.equal(
      s.nextExcept(() => true),
      2,
    );
  });

  it("keeps each entry's place in its period when the weights change", () => {
    const s = new EdfScheduler([1, 1], [0, 0]);
    assert.equal(names(s, 1), "a");
    s.reweight([1, 4]);
    // b was due now (nothing of its period left); a had its whole period left, now 4 of b's.
    assert.equal(names(s, 10), "bbbbabbbba");
  });

  it("stays finite and keeps picking whatever the weights", () => {
    const s = new EdfScheduler([1e-300, 1e300, 0, Number.NaN, -1], [0, 0, 2, Number.NaN, -1]);
    for (let i = 0; i < 1000; i++) {
      const k = s.next();
      assert.ok(k >= 0 && k < 5);
    }
    for (let i = 0; i < 5; i++) assert.ok(s.weight(i) > 0 && Number.isFinite(s.weight(i)));
  });
});

describe("weighted_round_robin balancer", () => {
  it("without reports spreads calls equally (round robin)", () => {
    const { b } = balancer();
    const cs = ["a", "b", "c"].map(candidate);
    const p = b.update(cs);
    assert.deepEqual(counts(picks(p, 300)), { a: 100, b: 100, c: 100 });
    assert.equal(b.status().mode, "equal");
    assert.deepEqual(
      [...b.weights()],
      [
        ["a", 1],
        ["b", 1],
        ["c", 1],
      ],
    );
  });

  it("uses reported weights only after the blackout, then picks a b c c b c c", () => {
    const { b, clock } = balancer({ blackoutPeriodMs: 10_000 });
    const cs = ["a", "b", "c"].map(candidate);
    const p = b.update(cs);
    report124(cs, clock.now());
    clock.advance(1000); // the next pick recomputes: reports seen, in blackout
    assert.deepEqual(counts(picks(p, 30)), { a: 10, b: 10, c: 10 });
    assert.deepEqual(
      b.status().backends.map((x) => x.state),
      ["blackout", "blackout", "blackout"],
    );
    clock.advance(8999); // 9.999 s after the reports: still in blackout
    assert.equal(b.status().mode, "equal");
    clock.advance(1); // the blackout is over, but weights change only at the next update
    assert.equal(b.status().mode, "equal");
    clock.advance(999);
    assert.equal(b.status().mode, "weighted");
    assert.deepEqual(
      b.status().backends.map((x) => [x.key, x.weight, x.state]),
      [
        ["a", 100, "weighted"],
        ["b", 200, "weighted"],
        ["c", 400, "weighted"],
      ],
    );
    // The running picker follows the weights; a new one (phases 0) gives the exact pattern.
    assertNear(counts(picks(p, 700)), { a: 100, b: 200, c: 400 });
    assert.deepEqual(picks(b.update(cs), 14), [..."abccbccabccbcc"]);
  });

  it("takes a changed report into account only at the next weight update", () => {
    const { b, clock } = balancer({ blackoutPeriodMs: 0, weightUpdatePeriodMs: 1000 });
    const cs = ["a", "b", "c"].map(candidate);
    report124(cs, clock.now());
    const p = b.update(cs);
    assert.deepEqual(picks(p, 7), [..."abccbcc"]);
    cs[2]!.loadReport = report(clock.now(), { qps: 100, cpuUtilization: 1 }); // c now weighs 100
    clock.advance(999);
    assert.deepEqual(counts(picks(p, 7)), { a: 1, b: 2, c: 4 }, "old weights until the period is over");
    clock.advance(1);
    assertNear(counts(picks(p, 400)), { a: 100, b: 200, c: 100 });
  });

  it("drops a weight not refreshed for weightExpirationPeriod, and blacks it out again when reports return", () => {
    const { b, clock } = balancer({ blackoutPeriodMs: 10_000, weightExpirationPeriodMs: 60_000 });
    const cs = ["a", "b", "c"].map(candidate);
    const p = b.update(cs);
    report124(cs, clock.now());
    clock.advance(10_000);
    assert.equal(b.status().mode, "weighted");
    // a and b keep reporting; c falls silent.
    clock.advance(49_999);
    cs[0]!.loadReport = report(clock.now(), { qps: 100, cpuUtilization: 1 });
    cs[1]!.loadReport = report(clock.now(), { qps: 100, cpuUtilization: 0.5 });
    clock.advance(1); // 60 s after c's last report
    const s = b.status().backends;
    assert.deepEqual(
      s.map((x) => [x.key, x.state, x.weight]),
      [
        ["a", "weighted", 100],
        ["b", "weighted", 200],
        ["c", "expired", 150],
      ],
      "c gets the mean of the usable weights",
    );
    assertNear(counts(picks(p, 450)), { a: 100, b: 200, c: 150 });
    // c reports again: a new blackout before its weight counts.
    cs[2]!.loadReport = report(clock.now(), { qps: 100, cpuUtilization: 0.25 });
    clock.advance(1000);
    assert.equal(b.status().backends[2]!.state, "blackout");
    clock.advance(9000);
    assert.deepEqual(
      b.status().backends.map((x) => x.state),
      ["weighted", "weighted", "weighted"],
    );
  });

  it("falls back to equal weights when fewer than two backends have usable weights", () => {
    const { b, clock } = balancer({ blackoutPeriodMs: 0 });
    const cs = ["a", "b", "c"].map(candidate);
    cs[2]!.loadReport = report(clock.now(), { qps: 100, cpuUtilization: 0.1 });
    const p = b.update(cs);
    assert.equal(b.status().mode, "equal");
    assert.deepEqual(counts(picks(p, 300)), { a: 100, b: 100, c: 100 });
  });

  it("a backend that leaves and comes back starts a new blackout; a new one gets the mean", () => {
    const { b, clock } = balancer({ blackoutPeriodMs: 5000 });
    const [a, bb, c] = ["a", "b", "c"].map(candidate) as [TestCandidate, TestCandidate, TestCandidate];
    report124([a, bb, c], clock.now());
    b.update([a, bb, c]);
    clock.advance(5000);
    assert.equal(b.status().mode, "weighted");
    b.update([a, bb]); // c not ready
    clock.advance(1000);
    c.loadReport = report(clock.now(), { qps: 100, cpuUtilization: 0.25 });
    const d = candidate("d"); // a new backend, no report yet
    const p = b.update([a, bb, c, d]);
    assert.deepEqual(
      b.status().backends.map((x) => [x.key, x.state, x.weight]),
      [
        ["a", "weighted", 100],
        ["b", "weighted", 200],
        ["c", "blackout", 150],
        ["d", "no-report", 150],
      ],
    );
    assert.deepEqual(counts(picks(p, 600)), { a: 100, b: 200, c: 150, d: 150 });
    clock.advance(4999);
    assert.equal(b.status().backends[2]!.state, "blackout");
    clock.advance(1000); // the next weight update after the blackout
    assert.deepEqual(
      b.status().backends.map((x) => [x.key, x.weight]),
      [
        ["a", 100],
        ["b", 200],
        ["c", 400],
        ["d", 700 / 3],
      ],
    );
  });

  it("ignores malformed and hostile reports without throwing: the last good weight stays", () => {
    const { b, clock } = balancer({ blackoutPeriodMs: 0 });
    const cs = ["a", "b", "c"].map(candidate);
    report124(cs, clock.now());
    const p = b.update(cs);
    const hostile: unknown[] = [
      report(clock.now(), { qps: Number.NaN, cpuUtilization: 0.01 }),
      report(clock.now(), { qps: 100, cpuUtilization: -1 }),
      report(clock.now(), { qps: Number.POSITIVE_INFINITY, cpuUtilization: 0.5 }),
      report(clock.now(), { qps: 1e300, cpuUtilization: 1e-300 }),
      report(clock.now(), { qps: 100, eps: Number.NaN, cpuUtilization: 0.5 }),
      report(clock.now(), { qps: 0, cpuUtilization: 0 }),
      report(Number.NaN, { qps: 1e12, cpuUtilization: 1 }),
      { ...report(clock.now(), { qps: 100, cpuUtilization: 1 }), at: "soon" }, // same weight, odd time
      "not a report",
      42,
      null,
      {},
    ];
    for (const bad of hostile) {
      cs[0]!.loadReport = bad;
      clock.advance(1000);
      assert.doesNotThrow(() => picks(p, 7));
      const w = b.status().backends.map((x) => x.weight);
      assert.deepEqual(w, [100, 200, 400], `after ${JSON.stringify(bad)}`);
    }
    // A report arriving "in the future" (another clock) counts as arriving now.
    cs[0]!.loadReport = report(clock.now() + 1e9, { qps: 300, cpuUtilization: 1 });
    clock.advance(1000);
    assert.deepEqual(
      b.status().backends.map((x) => x.weight),
      [300, 200, 400],
    );
  });

  it("avoids backends a retried call already tried", () => {
    const { b } = balancer();
    const p = b.update(["a", "b", "c"].map(candidate));
    assert.equal(keyOf(p, ctx(["a"])), "b");
    assert.equal(keyOf(p, ctx(["b", "c"])), "a");
    assert.ok(["a", "b", "c"].includes(keyOf(p, ctx(["a", "b", "c"]))));
  });

  it("starts each balancer at a random place (A58: random initial deadlines)", () => {
    const first = new Set<string>();
    const random = new SeededRandom(3);
    for (let i = 0; i < 20; i++) {
      const { b } = balancer({}, random);
      first.add(keyOf(b.update(["a", "b", "c"].map(candidate))));
    }
    assert.equal(first.size, 3);
  });
});
