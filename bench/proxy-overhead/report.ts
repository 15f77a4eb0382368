// Medians and the Markdown report of bench/proxy-overhead.
import type { PathName } from "./paths.ts";

export interface RunRecord {
  path: PathName;
  round: number;
  attempt: number;
  durationS: number;
  wallS: number;
  succeeded: number;
  failed: number;
  errored: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** Proxy utime+stime per successful call; null for the direct path. */
  proxyCpuUsPerCall: number | null;
  /** The kernel's part of it (stime): socket reads and writes, page faults. */
  proxySysUsPerCall: number | null;
  backendCpuUsPerCall: number;
  h2loadCpuUsPerCall: number;
  /** Echo calls each backend of the path answered during the measured run. */
  served: number[];
  servedMatches: boolean;
  /**
   * TCP connections closed during the measured run (new TIME_WAIT entries) between the proxy and
   * the backends, and on the proxy's listening port; h2load's own closes at its end are included.
   */
  backendConnectionsClosed: number;
  frontConnectionsClosed: number;
  /** Hypervisor steal during the run, in cores (1 = one whole vCPU stolen). */
  stealCores: number;
  /** CPU used by processes other than ours during the run, in cores. */
  otherCores: number;
  noisy: boolean;
}

export interface PathCheck {
  ok: boolean;
  detail: string;
}

export interface PathSummary {
  path: PathName;
  available: boolean;
  reason: string | undefined;
  check: PathCheck | undefined;
  runs: RunRecord[];
  median: Median | undefined;
}

export interface Median {
  /** Runs the medians are over (one per round) and how many of them were noisy all the same. */
  runs: number;
  noisyRuns: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  proxyCpuUsPerCall: number | null;
  proxySysUsPerCall: number | null;
  backendCpuUsPerCall: number;
  stealCores: number;
  otherCores: number;
  /** Share of calls each backend served, summed over the runs. */
  split: number[];
  servedMismatches: number;
  /** The most CPU other processes used during a kept run, in cores. */
  maxOtherCores: number;
  backendConnectionsClosed: number;
}

export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Medians over one run per round: the quietest attempt of that round (least CPU used by processes
 * not ours), so a busy machine costs re-runs and, at worst, noisy figures marked as such.
 */
export function summarize(runs: readonly RunRecord[]): Median | undefined {
  if (runs.length === 0) return undefined;
  const best = new Map<number, RunRecord>();
  for (const run of runs) {
    const kept = best.get(run.round);
    if (kept === undefined || run.otherCores < kept.otherCores) best.set(run.round, run);
  }
  const used = [...best.values()];
  const m = (pick: (run: RunRecord) => number): number => median(used.map(pick));
  const proxy = used.map((run) => run.proxyCpuUsPerCall);
  const proxySys = used.map((run) => run.proxySysUsPerCall ?? null);
  const servedTotals = used[0]!.served.map((_, i) =>
    used.reduce((sum, run) => sum + (run.served[i] ?? 0), 0),
  );
  const servedSum = servedTotals.reduce((a, b) => a + b, 0);
  return {
    runs: used.length,
    noisyRuns: used.filter((run) => run.noisy).length,
    rps: m((run) => run.rps),
    p50Ms: m((run) => run.p50Ms),
    p99Ms: m((run) => run.p99Ms),
    p999Ms: m((run) => run.p999Ms),
    proxyCpuUsPerCall: proxy.every((v) => v === null) ? null : median(proxy.map((v) => v ?? Number.NaN)),
    proxySysUsPerCall: proxySys.every((v) => v === null)
      ? null
      : median(proxySys.map((v) => v ?? Number.NaN)),
    backendCpuUsPerCall: m((run) => run.backendCpuUsPerCall),
    stealCores: m((run) => run.stealCores),
    otherCores: m((run) => run.otherCores),
    split: servedTotals.map((n) => (servedSum > 0 ? n / servedSum : 0)),
    servedMismatches: runs.filter((run) => !run.servedMatches).length,
    maxOtherCores: Math.max(...used.map((run) => run.otherCores)),
    backendConnectionsClosed: m((run) => run.backendConnectionsClosed),
  };
}

const LABELS: Record<PathName, string> = {
  direct: "direct to one backend",
  roster: "roster lb, round_robin",
  nginx: "nginx, 1 worker, grpc_pass",
  haproxy: "HAProxy, 1 thread, h2 both sides",
};

function fixed(value: number | null | undefined, digits: number): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return value.toFixed(digits);
}

function kilo(value: number): string {
  return Number.isFinite(value) ? `${(value / 1000).toFixed(1)}k` : "—";
}

function ratio(value: number | null, base: number | null | undefined): string {
  if (value === null || !Number.isFinite(value) || base === null || base === undefined || !(base > 0)) {
    return "—";
  }
  return `${(value / base).toFixed(2)}×`;
}

export interface ReportContext {
  title: string;
  unloaded: boolean;
  /** Cores of CPU other processes may use before a run counts as noisy. */
  maxOther: number;
}

export function markdown(summaries: readonly PathSummary[], context: ReportContext): string {
  const lines: string[] = [`### ${context.title}`, ""];
  const byPath = new Map(summaries.map((s) => [s.path, s.median]));
  const nginxCpu = byPath.get("nginx")?.proxyCpuUsPerCall;
  const haproxyCpu = byPath.get("haproxy")?.proxyCpuUsPerCall;
  const directP50 = byPath.get("direct")?.p50Ms;
  const header = [
    "path",
    "rps",
    "p50 ms",
    ...(context.unloaded ? ["p50 added ms"] : []),
    "p99 ms",
    "p99.9 ms",
    "proxy CPU µs/call",
    "of which kernel",
    "backend CPU µs/call",
    "proxy CPU ÷ nginx",
    "proxy CPU ÷ HAProxy",
    "steal (cores)",
  ];
  lines.push(`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`);
  for (const s of summaries) {
    const m = s.median;
    if (!s.available || m === undefined || m.runs === 0) continue;
    const added = directP50 !== undefined && s.path !== "direct" ? m.p50Ms - directP50 : Number.NaN;
    const row = [
      LABELS[s.path],
      kilo(m.rps),
      fixed(m.p50Ms, 2),
      ...(context.unloaded ? [s.path === "direct" ? "—" : `+${fixed(added, 2)}`] : []),
      fixed(m.p99Ms, 1),
      fixed(m.p999Ms, 1),
      fixed(m.proxyCpuUsPerCall, 0),
      fixed(m.proxySysUsPerCall, 0),
      fixed(m.backendCpuUsPerCall, 0),
      ratio(m.proxyCpuUsPerCall, nginxCpu),
      ratio(m.proxyCpuUsPerCall, haproxyCpu),
      fixed(m.stealCores, 2),
    ];
    lines.push(`| ${row.join(" | ")} |`);
  }
  lines.push("");
  for (const s of summaries) {
    if (!s.available) lines.push(`- ${s.path}: not available (${s.reason ?? "unknown reason"})`);
  }
  const noisy = summaries.reduce((n, s) => n + (s.available ? (s.median?.noisyRuns ?? 0) : 0), 0);
  if (noisy > 0) {
    lines.push(
      `- noisy: in ${noisy} of the runs kept, processes not started by this benchmark used more than ` +
        `${context.maxOther} cores even in the quietest retry; compare ratios within this run only.`,
    );
  }
  lines.push("", "Checks:", "");
  const checkHeader = [
    "path",
    "grpc-js sample call",
    "runs kept (noisy) / measured",
    "served = succeeded",
    "backend split",
    "backend conns closed/run",
    "other CPU, median / max (cores)",
  ];
  lines.push(`| ${checkHeader.join(" | ")} |`, `|${checkHeader.map(() => "---").join("|")}|`);
  for (const s of summaries) {
    if (!s.available || s.median === undefined) continue;
    const m = s.median;
    const served =
      m.servedMismatches === 0
        ? `yes, ${s.runs.length}/${s.runs.length}`
        : `NO in ${m.servedMismatches} run(s)`;
    const row = [
      s.path,
      s.check?.detail ?? "—",
      `${m.runs} (${m.noisyRuns}) / ${s.runs.length}`,
      served,
      m.split.map((share) => `${(share * 100).toFixed(0)}%`).join(" / "),
      fixed(m.backendConnectionsClosed, 0),
      `${fixed(m.otherCores, 2)} / ${fixed(m.maxOtherCores, 2)}`,
    ];
    lines.push(`| ${row.join(" | ")} |`);
  }
  return lines.join("\n");
}
