/**
 * The `--html` report: one self-contained file (uPlot's script and stylesheet inlined, data embedded as
 * JSON, no network) with the summary table and three charts: latency over time (p50/p99/max per
 * interval, log scale), the latency distribution (percentile spectrum on a log "nines" axis) and
 * throughput over time.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { type BenchReport, formatMs } from "./report.ts";
import { decodeHistogram, type Histogram } from "./stats.ts";

export interface ChartAssets {
  readonly js: string;
  readonly css: string;
}

/** uPlot 1.6's minified IIFE build and stylesheet, from node_modules. */
export function readUplotAssets(): ChartAssets {
  const require = createRequire(import.meta.url);
  return {
    js: readFileSync(require.resolve("uplot/dist/uPlot.iife.min.js"), "utf8"),
    css: readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8"),
  };
}

/** Series colours, one per target (the report test looks for the first one in the drawn pixels). */
export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"] as const;

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/** Percentiles of the distribution chart: 1 − 10^(−k/20), k = 0.., while resolvable by the call count. */
export function spectrumGrid(maxCount: number): number[] {
  const out: number[] = [];
  for (let k = 0; k <= 120; k++) {
    const q = 1 - 10 ** (-k / 20);
    if (maxCount > 0 && q > 1 - 1 / maxCount) break;
    out.push(q);
  }
  return out;
}

interface ChartData {
  readonly colors: readonly string[];
  readonly targets: readonly string[];
  /** Seconds; the union of every target's interval starts. */
  readonly times: readonly number[];
  /** Per target, aligned with `times`: null where the target had no calls (e.g. the other's slice). */
  readonly p50: readonly (readonly (number | null)[])[];
  readonly p99: readonly (readonly (number | null)[])[];
  readonly max: readonly (readonly (number | null)[])[];
  readonly rps: readonly (readonly (number | null)[])[];
  readonly errors: readonly (readonly (number | null)[])[];
  /** x = 1 / (1 − q) for the distribution chart, the last point standing for the maximum. */
  readonly nines: readonly number[];
  readonly spectrum: readonly (readonly (number | null)[])[];
}

/** Latency (ms) at percentile `q` of an encoded histogram; decodes each histogram once. */
function spectrumReader(): (histogram: string, q: number) => number {
  const cache = new Map<string, Histogram>();
  return (text, q) => {
    let h = cache.get(text);
    if (h === undefined) {
      h = decodeHistogram(text);
      cache.set(text, h);
    }
    return h.getValueAtPercentile(q) / 1000;
  };
}

export function chartData(report: BenchReport): ChartData {
  const spectrumOf = spectrumReader();
  const times = [...new Set(report.targets.flatMap((t) => t.timeline.map((p) => p.t)))].sort((a, b) => a - b);
  const aligned = (pick: (p: BenchReport["targets"][number]["timeline"][number]) => number) =>
    report.targets.map((t) => {
      const byT = new Map(t.timeline.map((p) => [p.t, pick(p)]));
      return times.map((x) => byT.get(x) ?? null);
    });
  const maxCount = Math.max(0, ...report.targets.map((t) => t.calls));
  const grid = spectrumGrid(maxCount);
  const nines = [...grid.map((q) => 1 / (1 - q)), maxCount > 0 ? 2 * maxCount : 1];
  const spectrum = report.targets.map((t) => [
    ...grid.map((q) => (t.calls > 0 && q <= 1 - 1 / t.calls ? spectrumOf(t.histogram, q * 100) : null)),
    t.calls > 0 ? t.latencyMs.max : null,
  ]);
  // Zero is not on a log axis: the histogram's lowest value is 1 µs.
  const positive = (v: number | null) => (v === null ? null : Math.max(v, 0.001));
  return {
    colors: report.targets.map((_, i) => PALETTE[i % PALETTE.length]!),
    targets: report.targets.map((t) => t.target),
    times,
    p50: aligned((p) => p.p50).map((s) => s.map(positive)),
    p99: aligned((p) => p.p99).map((s) => s.map(positive)),
    max: aligned((p) => p.max).map((s) => s.map(positive)),
    rps: aligned((p) => p.rps),
    errors: aligned((p) => p.errors / (report.intervalMs / 1000)),
    nines,
    spectrum: spectrum.map((s) => s.map(positive)),
  };
}

function summaryTable(report: BenchReport): string {
  const t = report.targets;
  const head = [
    "",
    ...t.map((x) => escapeHtml(x.target)),
    ...report.ratios.map((_, i) => `ratio ${i + 2}/1`),
  ];
  const ratio = (r: number) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : "–");
  const rows: string[][] = [
    ["calls", ...t.map((x) => String(x.calls)), ...report.ratios.map(() => "")],
    ["rps", ...t.map((x) => x.rps.toFixed(1)), ...report.ratios.map((r) => ratio(r.rps))],
    [
      "errors",
      ...t.map(
        (x) => `${x.errorCount}${x.calls > 0 ? ` (${((100 * x.errorCount) / x.calls).toFixed(1)}%)` : ""}`,
      ),
      ...report.ratios.map(() => ""),
    ],
    ["p50 ms", ...t.map((x) => formatMs(x.latencyMs.p50)), ...report.ratios.map((r) => ratio(r.p50))],
    ["p90 ms", ...t.map((x) => formatMs(x.latencyMs.p90)), ...report.ratios.map((r) => ratio(r.p90))],
    ["p99 ms", ...t.map((x) => formatMs(x.latencyMs.p99)), ...report.ratios.map((r) => ratio(r.p99))],
    ["p99.9 ms", ...t.map((x) => formatMs(x.latencyMs.p999)), ...report.ratios.map((r) => ratio(r.p999))],
    ["max ms", ...t.map((x) => formatMs(x.latencyMs.max)), ...report.ratios.map((r) => ratio(r.max))],
  ];
  if (report.settings.load.kind === "open") {
    rows.push([
      "start lag p99 ms",
      ...t.map((x) => formatMs(x.startLagMs?.p99 ?? 0)),
      ...report.ratios.map(() => ""),
    ]);
  }
  const body = rows.map(
    (r) => `<tr>${r.map((c, i) => (i === 0 ? `<th>${c}</th>` : `<td>${c}</td>`)).join("")}</tr>`,
  );
  const extras = t.flatMap((x) => {
    const lines: string[] = [];
    const errors = Object.entries(x.errors);
    if (errors.length > 0) {
      lines.push(
        `<p>${escapeHtml(x.target)} errors by status: ${errors.map(([k, v]) => `${escapeHtml(k)} ${v}`).join(", ")}</p>`,
      );
    }
    if (x.backends.length > 0) {
      lines.push(
        `<p>${escapeHtml(x.target)} backends: ${x.backends
          .map((b) => `${escapeHtml(b.backend)} ${(100 * b.share).toFixed(1)}% (${b.calls})`)
          .join(", ")}</p>`,
      );
    }
    return lines;
  });
  return `<table class="summary"><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${body.join(
    "",
  )}</tbody></table>${extras.join("")}`;
}

// Runs in the browser: builds the uPlot charts from the embedded data. Plain ES2017, no modules.
const CHART_SCRIPT = `
(function () {
  var data = JSON.parse(document.getElementById("roster-data").textContent);
  var width = Math.max(480, Math.min(1100, document.body.clientWidth - 40));
  function fmtMs(v) { return v == null ? "" : v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : v.toFixed(0); }
  function series(kind, i, dash) {
    return { label: data.targets[i] + " " + kind, stroke: data.colors[i], width: 2, dash: dash, spanGaps: false,
      value: function (u, v) { return fmtMs(v); } };
  }
  var n = data.targets.length;
  var s1 = [{ label: "s" }], d1 = [data.times];
  for (var i = 0; i < n; i++) {
    s1.push(series("p50", i, undefined)); d1.push(data.p50[i]);
    s1.push(series("p99", i, [6, 4])); d1.push(data.p99[i]);
    s1.push(series("max", i, [2, 3])); d1.push(data.max[i]);
  }
  new uPlot({ width: width, height: 320, scales: { x: { time: false }, y: { distr: 3, log: 10 } },
    series: s1, axes: [{ label: "seconds since measuring began" }, { label: "latency ms", size: 60,
      values: function (u, vals) { return vals.map(fmtMs); } }] }, d1, document.getElementById("over-time"));

  var last = data.nines[data.nines.length - 1];
  var s2 = [{ label: "percentile", value: function (u, v) { return pct(v); } }], d2 = [data.nines];
  function pct(x) {
    if (x == null || !(x >= 1)) return "";
    var q = 100 * (1 - 1 / x);
    return x === last ? "max" : (Math.round(q * 1000) / 1000) + "%";
  }
  for (var j = 0; j < n; j++) {
    var sj = series("", j, undefined); sj.spanGaps = true; s2.push(sj); d2.push(data.spectrum[j]);
  }
  var splits = [1, 2, 10, 100, 1000, 10000, 100000, 1000000].filter(function (x) { return x < last / 3; });
  splits.push(last);
  new uPlot({ width: width, height: 320, scales: { x: { time: false, distr: 3, log: 10 }, y: { distr: 3, log: 10 } },
    series: s2, axes: [{ label: "percentile", splits: function () { return splits; },
      filter: function (u, vals) { return vals; },
      values: function (u, vals) { return vals.map(function (v) { return pct(v); }); } },
      { label: "latency ms", size: 60, values: function (u, vals) { return vals.map(fmtMs); } }] },
    d2, document.getElementById("distribution"));

  var s3 = [{ label: "s" }], d3 = [data.times];
  for (var k = 0; k < n; k++) {
    s3.push({ label: data.targets[k] + " calls/s", stroke: data.colors[k], width: 2, spanGaps: false }); d3.push(data.rps[k]);
    s3.push({ label: data.targets[k] + " errors/s", stroke: data.colors[k], width: 1, dash: [2, 3], spanGaps: false }); d3.push(data.errors[k]);
  }
  new uPlot({ width: width, height: 240, scales: { x: { time: false } }, series: s3,
    axes: [{ label: "seconds since measuring began" }, { label: "calls/s", size: 60 }] }, d3, document.getElementById("throughput"));
  document.body.setAttribute("data-charts", "drawn");
})();
`;

const PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 6px; }
.desc { color: #555; margin: 0 0 12px; }
table.summary { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.summary th, table.summary td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
table.summary th:first-child { text-align: left; }
.warning { background: #fff3cd; border: 1px solid #e0b400; padding: 8px 12px; font-weight: 600; }
.note { color: #666; font-size: 12px; }
`;

export function renderHtml(report: BenchReport, assets: ChartAssets): string {
  const data = chartData(report);
  const title = `roster bench: ${report.call}`;
  const warning =
    report.generator.warning === undefined
      ? ""
      : `<p class="warning">${escapeHtml(report.generator.warning)}</p>`;
  const cpu = report.generator.processes.map((p) => `${Math.round(p.cpuShare * 100)}%`).join(", ");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${assets.css}</style>
<style>${PAGE_CSS}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="desc">${escapeHtml(report.description)} · started ${escapeHtml(report.startedAt)}${
    report.interrupted ? " · interrupted" : ""
  }</p>
${warning}
${summaryTable(report)}
<p class="note">Generator CPU: ${cpu} of one core. Latency is measured from each call's ${
    report.settings.load.kind === "open"
      ? "intended start (open loop, no coordinated omission)"
      : "start (closed loop)"
  }.</p>
<h2>Latency over time</h2>
<div id="over-time"></div>
<h2>Latency distribution</h2>
<div id="distribution"></div>
<h2>Throughput</h2>
<div id="throughput"></div>
<script>${assets.js}</script>
<script type="application/json" id="roster-data">${scriptJson(data)}</script>
<script>${CHART_SCRIPT}</script>
</body>
</html>
`;
}
