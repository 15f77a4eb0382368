// The pure part of bench/client: medians over runs, the ratios against the peers, the verdicts against
// the issue's targets, and the Markdown tables. No I/O, no clock.

/** What run.ts keeps of one measured run. */
export interface RunRecord {
  /** "c5", "c50", "pool" */
  scenario: string;
  concurrency: number;
  label: string;
  round: number;
  attempt: number;
  callsPerS: number;
  calls: number;
  errors: number;
  firstError: string | undefined;
  badPayloads: number;
  servedBy: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  clientUsPerCall: number;
  /** CPU of the client process in the window, cores. */
  clientCores: number;
  /** CPU of all backends in the window, cores, and per call, µs. */
  backendCores: number;
  backendUsPerCall: number;
  /** CPU used by processes not ours (not this script, not its children), cores; hypervisor steal, cores. */
  otherCores: number;
  stealCores: number;
  noisy: boolean;
  /** roster only: pool size at the window's end, largest, time-weighted mean; channels opened. */
  pool?: { end: number; max: number; mean: number; opened: number };
}

export interface Summary {
  scenario: string;
  concurrency: number;
  label: string;
  runs: number;
  /** Runs the medians are over: the quiet ones, or all when every run was noisy. */
  usedRuns: number;
  noisyRuns: number;
  callsPerS: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  clientUsPerCall: number;
  backendUsPerCall: number;
  otherCores: number;
  errors: number;
  firstError: string | undefined;
  badPayloads: number;
  /** Largest backend share of the calls over the used runs' total (1/backends = even). */
  busiestShare: number;
  /** Pool size at the window's end, per used run (roster only). */
  poolEnd: number[];
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The quiet runs, or every run when none was quiet. */
export function usedRuns<R extends { noisy: boolean }>(runs: readonly R[]): R[] {
  const quiet = runs.filter((r) => !r.noisy);
  return quiet.length > 0 ? quiet : [...runs];
}

export function summarize(runs: readonly RunRecord[]): Summary | undefined {
  const first = runs[0];
  if (first === undefined) return undefined;
  const used = usedRuns(runs);
  const served: Record<string, number> = {};
  for (const r of used) for (const [k, v] of Object.entries(r.servedBy)) served[k] = (served[k] ?? 0) + v;
  const total = Object.values(served).reduce((a, b) => a + b, 0);
  const busiest = total > 0 ? Math.max(...Object.values(served)) / total : Number.NaN;
  return {
    scenario: first.scenario,
    concurrency: first.concurrency,
    label: first.label,
    runs: runs.length,
    usedRuns: used.length,
    noisyRuns: runs.filter((r) => r.noisy).length,
    callsPerS: median(used.map((r) => r.callsPerS)),
    p50Ms: median(used.map((r) => r.p50Ms)),
    p99Ms: median(used.map((r) => r.p99Ms)),
    p999Ms: median(used.map((r) => r.p999Ms)),
    clientUsPerCall: median(used.map((r) => r.clientUsPerCall)),
    backendUsPerCall: median(used.map((r) => r.backendUsPerCall)),
    otherCores: median(used.map((r) => r.otherCores)),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    firstError: runs.find((r) => r.firstError !== undefined)?.firstError,
    badPayloads: runs.reduce((a, r) => a + r.badPayloads, 0),
    busiestShare: busiest,
    poolEnd: used.flatMap((r) => (r.pool === undefined ? [] : [r.pool.end])),
  };
}

/** Momento's published p99.9 targets: ≤ 5 ms at 5 concurrent calls, ≤ 20 ms at 50. */
export function momentoTargetMs(concurrency: number): number | undefined {
  if (concurrency === 5) return 5;
  if (concurrency === 50) return 20;
  return undefined;
}

export interface VsPlain {
  concurrency: number;
  label: string;
  /** Ratio of medians: roster ÷ plain. */
  callsRatio: number;
  p999Ratio: number;
  /** Per round in which both ran (the runs kept for that round, quiet or not): roster ÷ plain. */
  callsRatioPerRound: number[];
  p999RatioPerRound: number[];
  /** calls/s ≥ 1.0× plain, p99.9 ≤ 1.0× plain. */
  callsMet: boolean;
  p999Met: boolean;
}

export function compareWithPlain(
  summaries: readonly Summary[],
  records: readonly RunRecord[],
  plainLabel: string,
): VsPlain[] {
  const out: VsPlain[] = [];
  for (const plain of summaries.filter((s) => s.label === plainLabel)) {
    for (const s of summaries) {
      if (s.scenario !== plain.scenario || s.label === plainLabel) continue;
      const callsRatio = s.callsPerS / plain.callsPerS;
      const p999Ratio = s.p999Ms / plain.p999Ms;
      const perRound = pairByRound(
        records.filter((r) => r.scenario === s.scenario && r.label === s.label),
        records.filter((r) => r.scenario === s.scenario && r.label === plainLabel),
      );
      out.push({
        concurrency: s.concurrency,
        label: s.label,
        callsRatio,
        p999Ratio,
        callsRatioPerRound: perRound.map(([a, b]) => a.callsPerS / b.callsPerS),
        p999RatioPerRound: perRound.map(([a, b]) => a.p999Ms / b.p999Ms),
        callsMet: callsRatio >= 1.0,
        p999Met: p999Ratio <= 1.0,
      });
    }
  }
  return out;
}

function pairByRound(a: readonly RunRecord[], b: readonly RunRecord[]): Array<[RunRecord, RunRecord]> {
  const pairs: Array<[RunRecord, RunRecord]> = [];
  for (const x of a) {
    const y = b.find((r) => r.round === x.round);
    if (y !== undefined) pairs.push([x, y]);
  }
  return pairs;
}

export interface PoolVerdict {
  autoCallsPerS: number;
  bestLabel: string;
  bestCallsPerS: number;
  /** auto ÷ best fixed. */
  ratio: number;
  /** Within 10 % of the best fixed count: ratio ≥ 0.9. */
  met: boolean;
  autoPoolEnd: number[];
}

/** Labels of the pool scenario: "auto" and "fixed-N". */
export function fixedLabel(n: number): string {
  return `fixed-${n}`;
}

export function poolVerdict(summaries: readonly Summary[]): PoolVerdict | undefined {
  const auto = summaries.find((s) => s.scenario === "pool" && s.label === "auto");
  const fixed = summaries.filter((s) => s.scenario === "pool" && s.label.startsWith("fixed-"));
  if (auto === undefined || fixed.length === 0) return undefined;
  const best = fixed.reduce((a, b) => (b.callsPerS > a.callsPerS ? b : a));
  const ratio = auto.callsPerS / best.callsPerS;
  return {
    autoCallsPerS: auto.callsPerS,
    bestLabel: best.label,
    bestCallsPerS: best.callsPerS,
    ratio,
    met: ratio >= 0.9,
    autoPoolEnd: auto.poolEnd,
  };
}

export function fmt(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return value.toFixed(digits);
}

function runsText(s: Summary): string {
  if (s.noisyRuns === 0) return `${s.runs}`;
  if (s.usedRuns === s.runs) return `${s.runs}, all noisy`;
  return `${s.usedRuns} quiet of ${s.runs}`;
}

function errorsText(s: Summary): string {
  if (s.errors === 0 && s.badPayloads === 0) return "0";
  return `${s.errors}${s.badPayloads > 0 ? ` (+${s.badPayloads} bad payloads)` : ""}${s.firstError ? ` (${s.firstError})` : ""}`;
}

const yesNo = (met: boolean): string => (met ? "met" : "**not met**");

/** Table 1: each client against plain grpc-js at each concurrency; Momento's p99.9 target. */
export function plainTable(
  summaries: readonly Summary[],
  vs: readonly VsPlain[],
  plainLabel: string,
): string {
  const lines = [
    "| concurrent calls | client | runs used | calls/s | × plain | × plain per round | p50 ms | p99 ms | p99.9 ms | p99.9 × plain | Momento p99.9 target | client CPU µs/call | busiest backend | errors |",
    "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---|",
  ];
  for (const s of summaries) {
    if (s.scenario === "pool") continue;
    const v = vs.find((x) => x.label === s.label && x.concurrency === s.concurrency);
    const target = momentoTargetMs(s.concurrency);
    const targetText =
      target === undefined ? "—" : `≤ ${target} ms: ${s.p999Ms <= target ? "met" : "**not met**"}`;
    const isPlain = s.label === plainLabel;
    lines.push(
      `| ${s.concurrency} | ${s.label} | ${runsText(s)} | ${fmt(s.callsPerS)} | ${isPlain ? "1.00" : `${fmt(v?.callsRatio, 2)} (${yesNo(v?.callsMet ?? false)})`} | ` +
        `${isPlain ? "—" : (v?.callsRatioPerRound.map((x) => fmt(x, 2)).join(", ") ?? "—")} | ` +
        `${fmt(s.p50Ms, 2)} | ${fmt(s.p99Ms, 2)} | ${fmt(s.p999Ms, 2)} | ` +
        `${isPlain ? "1.00" : `${fmt(v?.p999Ratio, 2)} (${yesNo(v?.p999Met ?? false)})`} | ${targetText} | ` +
        `${fmt(s.clientUsPerCall)} | ${fmt(s.busiestShare * 100)} % | ${errorsText(s)} |`,
    );
  }
  return lines.join("\n");
}

/** Table 2: the automatic pool against fixed channel counts. */
export function poolTable(summaries: readonly Summary[], verdict: PoolVerdict | undefined): string {
  const pool = summaries.filter((s) => s.scenario === "pool");
  if (pool.length === 0) return "";
  const lines = [
    "| client | pool size at end of window (per run) | runs used | calls/s | × best fixed | p50 ms | p99 ms | p99.9 ms | client CPU µs/call | errors |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
  ];
  for (const s of pool) {
    const ratio = verdict === undefined ? Number.NaN : s.callsPerS / verdict.bestCallsPerS;
    const size = s.poolEnd.length > 0 ? s.poolEnd.join(", ") : "—";
    lines.push(
      `| ${s.label} | ${size} | ${runsText(s)} | ${fmt(s.callsPerS)} | ${fmt(ratio, 2)} | ${fmt(s.p50Ms, 1)} | ` +
        `${fmt(s.p99Ms, 1)} | ${fmt(s.p999Ms, 1)} | ${fmt(s.clientUsPerCall)} | ${errorsText(s)} |`,
    );
  }
  if (verdict !== undefined) {
    lines.push(
      "",
      `Automatic pool: ${fmt(verdict.autoCallsPerS)} calls/s = ${fmt(verdict.ratio, 2)}× the best fixed count ` +
        `(${verdict.bestLabel}, ${fmt(verdict.bestCallsPerS)} calls/s); target ≥ 0.90×: ${yesNo(verdict.met)}. ` +
        `Pool size chosen: ${verdict.autoPoolEnd.join(", ") || "—"} channel(s) at the end of each used run.`,
    );
  }
  return lines.join("\n");
}
