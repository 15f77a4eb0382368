import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { chartData, escapeHtml, readUplotAssets, renderHtml, spectrumGrid } from "./html.ts";
import { parseBenchFlags } from "./options.ts";
import { buildReport } from "./report.ts";
import { TargetStats } from "./stats.ts";

function report(targets: string[]) {
  const settings = parseBenchFlags(
    targets.length > 1
      ? { compare: targets.join(","), proto: "p.proto", call: "a.B/C" }
      : { target: targets[0]!, proto: "p.proto", call: "a.B/C" },
  );
  return buildReport({
    settings,
    method: { path: "/a.B/C", kind: "unary", requestType: "R", responseType: "R", requestBytes: 0 },
    startedAt: "2026-11-23T00:00:00.000Z",
    intervalMs: 100,
    targets: targets.map((target, t) => {
      const s = new TargetStats(target);
      for (let i = 0; i < 1000; i++)
        s.record(100 + i + t * 500, "OK", undefined, t === 0 ? i % 5 : 5 + (i % 5));
      s.measuredMs = 500;
      return s.toRecord();
    }),
    processes: [{ cpuMs: 1, wallMs: 10, cpuShare: 0.1 }],
    interrupted: false,
  });
}

describe("spectrumGrid", () => {
  it("stops at the last percentile the call count resolves", () => {
    const g = spectrumGrid(1000);
    assert.equal(g[0], 0);
    assert.ok(g.at(-1)! <= 0.999 + 1e-12);
    assert.ok(g.length > 50);
  });
});

describe("chartData", () => {
  it("aligns targets on the union of interval times, with gaps where a target had no calls", () => {
    const d = chartData(report(["127.0.0.1:1", "127.0.0.1:2"]));
    assert.deepEqual(d.times, [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
    assert.deepEqual(d.p50[0]!.slice(5), [null, null, null, null, null]);
    assert.deepEqual(d.p50[1]!.slice(0, 5), [null, null, null, null, null]);
    assert.equal(d.spectrum[0]!.length, d.nines.length);
    assert.ok(Math.abs(d.spectrum[0]!.at(-1)! - 1.099) < 0.01, "the last point is the maximum");
  });
});

describe("renderHtml", () => {
  it("is one self-contained page: uPlot inlined, data embedded, nothing fetched", () => {
    const html = renderHtml(report(["127.0.0.1:1"]), readUplotAssets());
    assert.match(html, /^<!doctype html>/);
    assert.match(html, /var uPlot=/);
    assert.match(html, /id="roster-data"/);
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=|@import|url\(http/);
    assert.equal((html.match(/<\/script>/g) ?? []).length, 3);
  });
  it("escapes text taken from the run", () => {
    assert.equal(escapeHtml(`<a href="x">&'`), "&#60;a href=&#34;x&#34;&#62;&#38;&#39;");
  });
});
