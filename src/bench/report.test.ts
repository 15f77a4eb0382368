import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseBenchFlags } from "./options.ts";
import { buildReport, cpuWarning, formatMs, formatSummary } from "./report.ts";
import type { BenchRun } from "./run.ts";
import { TargetStats } from "./stats.ts";

function run(
  flags: Record<string, string>,
  fill: (t: number, s: TargetStats) => void,
  cpuShare = 0.2,
): BenchRun {
  const settings = parseBenchFlags({ proto: "p.proto", call: "pkg.Echo/Echo", ...flags });
  return {
    settings,
    method: {
      path: "/pkg.Echo/Echo",
      kind: "unary",
      requestType: "Req",
      responseType: "Rep",
      requestBytes: 9,
    },
    startedAt: "2026-11-23T00:00:00.000Z",
    intervalMs: 100,
    targets: settings.targets.map((target, t) => {
      const s = new TargetStats(target);
      fill(t, s);
      return s.toRecord();
    }),
    processes: [{ cpuMs: 100, wallMs: 100 / cpuShare, cpuShare }],
    interrupted: false,
  };
}

describe("buildReport", () => {
  it("computes rps, percentiles, error counts and backend shares", () => {
    const r = buildReport(
      run({ target: "127.0.0.1:1", rate: "100" }, (_, s) => {
        for (let i = 0; i < 100; i++)
          s.record(1000, i < 98 ? "OK" : "UNAVAILABLE", i % 4 === 0 ? "b" : "a", i % 10);
        s.measuredMs = 2000;
      }),
    );
    const t = r.targets[0]!;
    assert.equal(t.calls, 100);
    assert.equal(t.rps, 50);
    assert.equal(t.errorCount, 2);
    assert.deepEqual(t.errors, { UNAVAILABLE: 2 });
    assert.deepEqual(
      t.backends.map((b) => [b.backend, b.calls, b.share]),
      [
        ["a", 75, 0.75],
        ["b", 25, 0.25],
      ],
    );
    assert.ok(Math.abs(t.latencyMs.p50 - 1) < 0.001);
    assert.equal(t.timeline.length, 10);
    assert.equal(t.timeline[1]!.t, 0.1);
    assert.equal(t.timeline[1]!.rps, 100);
    assert.notEqual(t.startLagMs, undefined, "open loop reports the start lag");
    assert.deepEqual(r.ratios, []);
    assert.equal(r.generator.warning, undefined);
  });

  it("adds ratio columns against the first target with --compare", () => {
    const r = buildReport(
      run({ compare: "127.0.0.1:1,127.0.0.1:2" }, (t, s) => {
        for (let i = 0; i < 10; i++) s.record(t === 0 ? 1000 : 3000, "OK", undefined, 0);
        s.measuredMs = t === 0 ? 1000 : 2000;
      }),
    );
    assert.equal(r.ratios.length, 1);
    const ratio = r.ratios[0]!;
    assert.equal(ratio.target, "127.0.0.1:2");
    assert.equal(ratio.baseline, "127.0.0.1:1");
    assert.ok(Math.abs(ratio.p50 - 3) < 0.01);
    assert.equal(ratio.rps, 0.5);
    const text = formatSummary(r);
    assert.match(
      text,
      /^roster bench: \/pkg\.Echo\/Echo \(unary, 9-byte request\), closed loop, 16 in flight/,
    );
    assert.match(text, /127\.0\.0\.1:1\s+127\.0\.0\.1:2\s+ratio/);
    assert.match(text, /p50 ms\s+1\.000\s+3\.00\d\s+3\.00x/);
    assert.match(text, /rps\s+10\.0\s+5\.0\s+0\.50x/);
  });

  it("lists errors by status and backends under the table", () => {
    const text = formatSummary(
      buildReport(
        run({ target: "127.0.0.1:1" }, (_, s) => {
          s.record(500, "OK", "w1", 0);
          s.record(500, "DEADLINE_EXCEEDED", undefined, 0);
          s.measuredMs = 1000;
        }),
      ),
    );
    assert.match(text, /errors by status: DEADLINE_EXCEEDED 1/);
    assert.match(text, /backends: w1 50\.0% \(1\), unidentified 1/);
    assert.match(text, /generator CPU: 20% of one core/);
  });
});

describe("cpuWarning", () => {
  it("warns loudly at 90% of a core and suggests more workers", () => {
    const p = (cpuShare: number) => ({ cpuMs: 0, wallMs: 1, cpuShare });
    assert.equal(cpuWarning([p(0.89)], 1), undefined);
    const w = cpuWarning([p(0.5), p(0.95)], 2);
    assert.match(w ?? "", /^WARNING: a load-generator process used 95% of a CPU core/);
    assert.match(w ?? "", /--workers 4/);
  });
});

describe("formatMs", () => {
  it("keeps about three significant figures", () => {
    assert.equal(formatMs(0.4123), "0.412");
    assert.equal(formatMs(12.345), "12.35");
    assert.equal(formatMs(1234.56), "1234.6");
    assert.equal(formatMs(Number.NaN), "-");
  });
});
