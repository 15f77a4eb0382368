/**
 * What a bench run records per target, and how records from several processes merge.
 *
 * Latencies are kept in microseconds in HDR histograms (hdr-histogram-js, 3 significant digits, 1 µs to
 * 1 h), overall and per timeline interval. A `TargetRecord` is the serialisable form (histograms as
 * compressed base64) that worker processes send to the coordinator and that `--json` writes.
 */
import * as hdr from "hdr-histogram-js";

export type Histogram = hdr.Histogram;

const HIGHEST_US = 3_600_000_000;

export function newHistogram(): Histogram {
  return hdr.build({
    bitBucketSize: 32,
    autoResize: true,
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: 3,
  });
}

export function encodeHistogram(h: Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

export function decodeHistogram(text: string): Histogram {
  return hdr.decodeFromCompressedBase64(text, 32, false);
}

/** One interval of the latency-over-time series (index = floor(ms since measuring began / interval)). */
export interface IntervalRecord {
  readonly index: number;
  readonly errors: number;
  /** Latencies of the calls that started (or were due to start) in this interval. */
  readonly histogram: string;
}

export interface TargetRecord {
  readonly target: string;
  /** Calls measured (warm-up excluded), whatever their status. */
  readonly calls: number;
  readonly ok: number;
  /** gRPC status name → calls. */
  readonly errors: Readonly<Record<string, number>>;
  /** Backend identity → calls; empty when responses carried none. */
  readonly backends: Readonly<Record<string, number>>;
  /** Response messages received by measured calls. */
  readonly messages: number;
  /** Milliseconds the target was under measured load (summed over slices with --compare). */
  readonly measuredMs: number;
  /** Open loop only: calls due in the measured window that were never started (generator behind). */
  readonly unsent: number;
  readonly latency: string;
  /** Open loop only: how late the generator started calls after their intended time. */
  readonly startLag: string;
  readonly intervals: readonly IntervalRecord[];
}

/** Live, mutable statistics of one target in one process. */
export class TargetStats {
  readonly target: string;
  calls = 0;
  ok = 0;
  messages = 0;
  measuredMs = 0;
  unsent = 0;
  readonly errors = new Map<string, number>();
  readonly backends = new Map<string, number>();
  readonly latency = newHistogram();
  readonly startLag = newHistogram();
  readonly #intervals = new Map<number, { histogram: Histogram; errors: number }>();

  constructor(target: string) {
    this.target = target;
  }

  /** Hot path: one finished, measured call. `status` is "OK" or a gRPC status name. */
  record(latencyUs: number, status: string, backend: string | undefined, interval: number): void {
    const us = latencyUs < 1 ? 1 : latencyUs > HIGHEST_US ? HIGHEST_US : Math.round(latencyUs);
    this.calls++;
    this.latency.recordValue(us);
    let slot = this.#intervals.get(interval);
    if (slot === undefined) {
      slot = { histogram: newHistogram(), errors: 0 };
      this.#intervals.set(interval, slot);
    }
    slot.histogram.recordValue(us);
    if (status === "OK") this.ok++;
    else {
      slot.errors++;
      this.errors.set(status, (this.errors.get(status) ?? 0) + 1);
    }
    if (backend !== undefined) this.backends.set(backend, (this.backends.get(backend) ?? 0) + 1);
  }

  recordStartLag(lagUs: number): void {
    this.startLag.recordValue(lagUs < 1 ? 1 : lagUs > HIGHEST_US ? HIGHEST_US : Math.round(lagUs));
  }

  toRecord(): TargetRecord {
    return {
      target: this.target,
      calls: this.calls,
      ok: this.ok,
      errors: Object.fromEntries(this.errors),
      backends: Object.fromEntries(this.backends),
      messages: this.messages,
      measuredMs: this.measuredMs,
      unsent: this.unsent,
      latency: encodeHistogram(this.latency),
      startLag: encodeHistogram(this.startLag),
      intervals: [...this.#intervals.entries()]
        .sort(([a], [b]) => a - b)
        .map(([index, s]) => ({ index, errors: s.errors, histogram: encodeHistogram(s.histogram) })),
    };
  }
}

function addCounts(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>) {
  const out: Record<string, number> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}

function addHistograms(a: string, b: string): string {
  const h = decodeHistogram(a);
  h.add(decodeHistogram(b));
  return encodeHistogram(h);
}

/**
 * Merges the records of the same target from several worker processes that ran side by side: counts and
 * histograms add up; the measured time is the longest of them (they ran over the same wall-clock window).
 */
export function mergeTargetRecords(records: readonly TargetRecord[]): TargetRecord {
  const first = records[0];
  if (first === undefined) throw new Error("mergeTargetRecords needs at least one record");
  return records.slice(1).reduce<TargetRecord>((a, b) => {
    const intervals = new Map<number, IntervalRecord>(a.intervals.map((i) => [i.index, i]));
    for (const i of b.intervals) {
      const prev = intervals.get(i.index);
      intervals.set(
        i.index,
        prev === undefined
          ? i
          : {
              index: i.index,
              errors: prev.errors + i.errors,
              histogram: addHistograms(prev.histogram, i.histogram),
            },
      );
    }
    return {
      target: a.target,
      calls: a.calls + b.calls,
      ok: a.ok + b.ok,
      errors: addCounts(a.errors, b.errors),
      backends: addCounts(a.backends, b.backends),
      messages: a.messages + b.messages,
      measuredMs: Math.max(a.measuredMs, b.measuredMs),
      unsent: a.unsent + b.unsent,
      latency: addHistograms(a.latency, b.latency),
      startLag: addHistograms(a.startLag, b.startLag),
      intervals: [...intervals.values()].sort((x, y) => x.index - y.index),
    };
  }, first);
}

/** Latency figures in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly min: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export function summarize(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  const ms = (us: number) => us / 1000;
  return {
    count: h.totalCount,
    min: ms(h.minNonZeroValue),
    mean: ms(h.mean),
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
  };
}
