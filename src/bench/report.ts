/**
 * The figures of a bench run as one JSON-able object (`--json`, the HTML report, the summary table), and
 * the summary table itself. Pure: no I/O.
 */
import { formatDuration } from "./duration.ts";
import type { BenchSettings } from "./options.ts";
import { totalConnections } from "./plan.ts";
import type { BenchRun, ProcessCost } from "./run.ts";
import { decodeHistogram, type LatencySummary, summarize } from "./stats.ts";

/** The generator is warned about at this share of one core. */
export const CPU_WARNING_SHARE = 0.9;

export interface TimelinePoint {
  /** Seconds since measuring began (start of the interval). */
  readonly t: number;
  readonly calls: number;
  /** Calls per second over the interval. */
  readonly rps: number;
  readonly errors: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export interface BackendShare {
  readonly backend: string;
  readonly calls: number;
  /** Of the target's measured calls, 0..1. */
  readonly share: number;
}

export interface TargetReport {
  readonly target: string;
  readonly calls: number;
  readonly ok: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly errorCount: number;
  readonly rps: number;
  readonly measuredMs: number;
  readonly messages: number;
  readonly unsent: number;
  readonly latencyMs: LatencySummary;
  /** Open loop: how late calls started after their intended time. */
  readonly startLagMs: LatencySummary | undefined;
  readonly backends: readonly BackendShare[];
  readonly timeline: readonly TimelinePoint[];
  /** HDR histogram of latencies in µs, compressed base64 (hdr-histogram-js encodeIntoCompressedBase64). */
  readonly histogram: string;
}

export interface RatioReport {
  /** "target/baseline". */
  readonly target: string;
  readonly baseline: string;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export interface BenchReport {
  readonly tool: "roster bench";
  readonly version: 1;
  readonly startedAt: string;
  readonly call: string;
  readonly kind: string;
  readonly requestBytes: number;
  readonly description: string;
  readonly settings: {
    readonly targets: readonly string[];
    readonly load: BenchSettings["load"];
    readonly stop: BenchSettings["stop"];
    readonly warmupMs: number;
    readonly timeoutMs: number;
    readonly connections: number;
    readonly workers: number;
    readonly streamMessages: number;
    readonly sliceMs: number | undefined;
    readonly metadataKeys: readonly string[];
    readonly backendHeader: string;
    readonly backendField: string | undefined;
  };
  readonly intervalMs: number;
  readonly interrupted: boolean;
  readonly targets: readonly TargetReport[];
  readonly ratios: readonly RatioReport[];
  readonly generator: {
    readonly processes: readonly ProcessCost[];
    /** Highest share of one core any generator process used. */
    readonly maxCpuShare: number;
    readonly warning: string | undefined;
  };
}

export function describeRun(run: Pick<BenchRun, "settings" | "method">): string {
  const s = run.settings;
  const load =
    s.load.kind === "closed"
      ? `closed loop, ${s.load.concurrency} in flight`
      : `open loop, ${s.load.rate} calls/s`;
  const stop =
    s.stop.kind === "duration"
      ? `${formatDuration(s.stop.ms)}${s.compare ? " per target" : ""}`
      : `${s.stop.count} calls${s.compare ? " per target" : ""}`;
  const warm = s.warmupMs > 0 ? ` after ${formatDuration(s.warmupMs)} warm-up` : "";
  const conns = totalConnections(s);
  const parts = [
    `${run.method.path} (${run.method.kind}, ${run.method.requestBytes}-byte request${
      s.streamMessages > 1 ? ` ×${s.streamMessages}` : ""
    })`,
    load,
    `${stop}${warm}`,
    `${conns} connection${conns === 1 ? "" : "s"}${s.compare ? " per target" : ""}`,
  ];
  if (s.workers > 1) parts.push(`${s.workers} workers`);
  if (s.compare) parts.push(`alternating ${formatDuration(s.sliceMs)} slices`);
  return parts.join(", ");
}

export function buildReport(run: BenchRun): BenchReport {
  const s = run.settings;
  const targets = run.targets.map((r): TargetReport => {
    const latency = decodeHistogram(r.latency);
    const lag = decodeHistogram(r.startLag);
    const errorCount = Object.values(r.errors).reduce((a, b) => a + b, 0);
    const timeline = r.intervals.map((i): TimelinePoint => {
      const h = summarize(decodeHistogram(i.histogram));
      return {
        t: (i.index * run.intervalMs) / 1000,
        calls: h.count,
        rps: h.count / (run.intervalMs / 1000),
        errors: i.errors,
        p50: h.p50,
        p90: h.p90,
        p99: h.p99,
        max: h.max,
      };
    });
    const identified = Object.values(r.backends).reduce((a, b) => a + b, 0);
    return {
      target: r.target,
      calls: r.calls,
      ok: r.ok,
      errors: r.errors,
      errorCount,
      rps: r.measuredMs > 0 ? r.calls / (r.measuredMs / 1000) : 0,
      measuredMs: r.measuredMs,
      messages: r.messages,
      unsent: r.unsent,
      latencyMs: summarize(latency),
      startLagMs: s.load.kind === "open" ? summarize(lag) : undefined,
      backends:
        identified === 0
          ? []
          : Object.entries(r.backends)
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
              .map(([backend, calls]) => ({ backend, calls, share: r.calls > 0 ? calls / r.calls : 0 })),
      timeline,
      histogram: r.latency,
    };
  });
  const base = targets[0];
  const ratio = (a: number, b: number) => (b > 0 ? a / b : Number.NaN);
  const ratios =
    base === undefined
      ? []
      : targets.slice(1).map((t) => ({
          target: t.target,
          baseline: base.target,
          rps: ratio(t.rps, base.rps),
          p50: ratio(t.latencyMs.p50, base.latencyMs.p50),
          p90: ratio(t.latencyMs.p90, base.latencyMs.p90),
          p99: ratio(t.latencyMs.p99, base.latencyMs.p99),
          p999: ratio(t.latencyMs.p999, base.latencyMs.p999),
          max: ratio(t.latencyMs.max, base.latencyMs.max),
        }));
  const maxCpuShare = Math.max(0, ...run.processes.map((p) => p.cpuShare));
  return {
    tool: "roster bench",
    version: 1,
    startedAt: run.startedAt,
    call: run.method.path,
    kind: run.method.kind,
    requestBytes: run.method.requestBytes,
    description: describeRun(run),
    settings: {
      targets: s.targets,
      load: s.load,
      stop: s.stop,
      warmupMs: s.warmupMs,
      timeoutMs: s.timeoutMs,
      connections: totalConnections(s),
      workers: s.workers,
      streamMessages: s.streamMessages,
      sliceMs: s.compare ? s.sliceMs : undefined,
      metadataKeys: s.metadata.map(([k]) => k),
      backendHeader: s.backendHeader,
      backendField: s.backendField,
    },
    intervalMs: run.intervalMs,
    interrupted: run.interrupted,
    targets,
    ratios,
    generator: {
      processes: run.processes,
      maxCpuShare,
      warning: cpuWarning(run.processes, s.workers),
    },
  };
}

/** The loud warning when a generator process was near a full core, or undefined. */
export function cpuWarning(processes: readonly ProcessCost[], workers: number): string | undefined {
  const worst = Math.max(0, ...processes.map((p) => p.cpuShare));
  if (worst < CPU_WARNING_SHARE) return undefined;
  const pct = Math.round(worst * 100);
  const who = processes.length > 1 ? "a load-generator process" : "the load generator";
  return (
    `WARNING: ${who} used ${pct}% of a CPU core. Its own queueing is now part of the latencies and the ` +
    `rate it reached; the figures understate the target. Spread the load with --workers ${Math.max(2, workers * 2)} ` +
    `(and make sure the machine has the cores).`
  );
}

/** "0.412", "12.35", "1234.5": three significant-ish figures for milliseconds. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  if (ms < 10) return ms.toFixed(3);
  if (ms < 100) return ms.toFixed(2);
  return ms.toFixed(1);
}

function formatRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : "-";
}

/** The summary table: metrics as rows, targets as columns, then ratio columns against the first target. */
export function formatSummary(report: BenchReport): string {
  const t = report.targets;
  const open = report.settings.load.kind === "open";
  const rows: [string, ...string[]][] = [];
  const header: [string, ...string[]] = ["", ...t.map((x) => x.target)];
  const ratioHeads = report.ratios.map((_, i) => (t.length > 2 ? `ratio ${i + 2}/1` : "ratio"));
  header.push(...ratioHeads);
  const row = (label: string, values: string[], ratios: string[] = report.ratios.map(() => "")) =>
    rows.push([label, ...values, ...ratios]);
  row(
    "calls",
    t.map((x) => String(x.calls)),
  );
  row(
    "rps",
    t.map((x) => x.rps.toFixed(1)),
    report.ratios.map((r) => formatRatio(r.rps)),
  );
  row(
    "errors",
    t.map((x) => (x.calls > 0 ? `${x.errorCount} (${((100 * x.errorCount) / x.calls).toFixed(1)}%)` : "0")),
  );
  const lat: [string, keyof LatencySummary, keyof RatioReport | undefined][] = [
    ["p50 ms", "p50", "p50"],
    ["p90 ms", "p90", "p90"],
    ["p99 ms", "p99", "p99"],
    ["p99.9 ms", "p999", "p999"],
    ["max ms", "max", "max"],
  ];
  for (const [label, key, rkey] of lat) {
    row(
      label,
      t.map((x) => formatMs(x.latencyMs[key])),
      report.ratios.map((r) => (rkey === undefined ? "" : formatRatio(r[rkey] as number))),
    );
  }
  if (open) {
    row(
      "start lag p99 ms",
      t.map((x) => formatMs(x.startLagMs?.p99 ?? 0)),
    );
    if (t.some((x) => x.unsent > 0)) {
      row(
        "not sent",
        t.map((x) => String(x.unsent)),
      );
    }
  }
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join("  ")
      .trimEnd();
  const out: string[] = [`roster bench: ${report.description}`];
  if (report.interrupted) out.push("(interrupted: figures cover the calls made before Ctrl-C)");
  out.push("", line(header), ...rows.map(line));
  for (const x of t) {
    const prefix = t.length > 1 ? `${x.target}: ` : "";
    const errors = Object.entries(x.errors).sort(([, a], [, b]) => b - a);
    if (errors.length > 0) {
      out.push("", `${prefix}errors by status: ${errors.map(([k, v]) => `${k} ${v}`).join(", ")}`);
    }
    if (x.backends.length > 0) {
      const unidentified = x.calls - x.backends.reduce((a, b) => a + b.calls, 0);
      const list = x.backends.map((b) => `${b.backend} ${(100 * b.share).toFixed(1)}% (${b.calls})`);
      if (unidentified > 0) list.push(`unidentified ${unidentified}`);
      out.push("", `${prefix}backends: ${list.join(", ")}`);
    }
  }
  const procs = report.generator.processes;
  const cpu = procs.map((p) => `${Math.round(p.cpuShare * 100)}%`).join(", ");
  out.push("", `generator CPU: ${cpu} of one core${procs.length > 1 ? ` (${procs.length} processes)` : ""}`);
  return `${out.join("\n")}\n`;
}
