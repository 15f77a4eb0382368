import type { Balancer, BalancerDeps, BalancerFactory } from "../balancer.ts";
import type { Random } from "../clock.ts";
import { asRecord, readBoolean, readNumber, rejectUnknownKeys } from "../config.ts";
import { ConfigError } from "../errors.ts";
import type { Candidate, LoadReport, PickContext, Picker, PickResult } from "../picker.ts";
import { loadReportOf } from "../picker.ts";

/**
 * weighted_round_robin: round robin in proportion to weights the backends earn by their own load
 * reports, after gRFC A58 (client-side weighted round robin). We only have out-of-band reports (the
 * channel's ORCA client, `StreamCoreMetrics`), not per-call ones: the channel puts each backend's latest
 * report on its Candidate (`LoadReportCarrier`), and the policy reads it when it recomputes weights.
 *
 * Weight of a backend, from its latest report (A58):
 *
 *     weight = qps / (utilization + eps / qps × errorUtilizationPenalty)
 *
 * with utilization = application_utilization when > 0, else cpu_utilization. A report whose qps or
 * utilization is 0 — or with any value that is not a finite number ≥ 0, or past MAX_REPORTED_RATE /
 * MAX_REPORTED_UTILIZATION, or giving a weight that is not finite — is ignored: the previous weight stays
 * until it expires (A58's `UpdateWeight` returns early on a zero weight).
 *
 * Blackout and expiry (A58's `non_empty_since` / `last_updated`): a backend's weight is used only once it
 * has reported a usable weight continuously for `blackoutPeriod`, counted from the later of its first
 * usable report and its joining the ready set (a backend that comes back — reconnected, healthy again,
 * returned from ejection — starts a new blackout), and only while its last usable report is younger
 * than `weightExpirationPeriod`; once expired, the next usable report starts a new blackout.
 *
 * Backends without a usable weight get the mean of the usable ones (A58: "picked but with the average
 * weight"); with fewer than two usable weights every backend weighs the same, and the policy is plain
 * round robin (A58).
 *
 * Weights are recomputed every `weightUpdatePeriod` (at least 100 ms, as A58 caps it): lazily, by the
 * first pick after the period is over (and by `status()`), so the core needs no timer. A report
 * is seen at the first recomputation after it arrives; when several arrive between two, the blackout
 * starts at the latest one's arrival, at most one period late — never early.
 *
 * Scheduler: earliest deadline first (EDF), as A58's text specifies, over a binary heap — each backend is
 * a job with period 1/weight; the pick is the job with the earliest deadline, which then moves one period
 * on. We chose it over the static stride scheduler gRPC C-core ships because that one exists to let many
 * threads pick without a lock (a shared atomic counter), which a single-threaded Node picker does not
 * need, and it pays for that with skipped rounds (retries of the counter) and weights quantised to
 * 16 bits and capped at 10× the mean. EDF picks in O(log n) without allocating and never loops; over
 * any whole number of cycles it gives each backend exactly its share (weights 1:2:4 give exactly 1, 2 and
 * 4 of every 7 consecutive picks starting at a cycle), interleaved rather than in runs.
 * Initial deadlines are random within one period (A58), so balancers started together do not pick in
 * lockstep. When weights change, each backend keeps the fraction of its period it had left, so a weight
 * update does not restart the rotation (and favours no one).
 *
 * Deadlines are `(picks + phase) / weight`, computed by one division (not by adding periods up), so
 * equal deadlines compare equal exactly and ties go to the earlier candidate. Weights are scaled so the
 * largest is 1, and none is below MIN_RELATIVE_WEIGHT of it, so deadlines stay finite whatever the
 * reports said.
 *
 * Difference from `resume`: `resume` routes each class of call to workers with the skills for it (ORCA
 * `named_metrics`); weighted_round_robin ignores classes and spreads all calls by capacity.
 */
export interface WeightedRoundRobinConfig {
  /** Whether to read ORCA out-of-band reports. false: no reports, so plain round robin. Default true. */
  enableOobLoadReport: boolean;
  /** The report interval asked of backends. Default 10 s (A58). */
  oobReportingPeriodMs: number;
  /** How long a backend must report before its weight is used. Default 10 s; 0 = no blackout. */
  blackoutPeriodMs: number;
  /** A weight not refreshed by a report for this long is dropped. Default 3 min. */
  weightExpirationPeriodMs: number;
  /** How often weights are recomputed. Default 1 s; values under 100 ms are raised to 100 ms. */
  weightUpdatePeriodMs: number;
  /** Multiplier of the error rate (eps/qps) added to utilization. Default 1.0; ≥ 0. */
  errorUtilizationPenalty: number;
}

export const defaultWeightedRoundRobinConfig: Readonly<WeightedRoundRobinConfig> = {
  enableOobLoadReport: true,
  oobReportingPeriodMs: 10_000,
  blackoutPeriodMs: 10_000,
  weightExpirationPeriodMs: 180_000,
  weightUpdatePeriodMs: 1000,
  errorUtilizationPenalty: 1,
};

/** The shortest weight update period (A58). */
export const MIN_WEIGHT_UPDATE_PERIOD_MS = 100;
/** The longest duration any setting accepts (a day). */
export const MAX_DURATION_MS = 86_400_000;
/** Reports of more calls (or errors) per second than this from one backend are not believed. */
export const MAX_REPORTED_RATE = 1e9;
/** Reports of a utilization above this are not believed (1.0 = one core busy, for CPU). */
export const MAX_REPORTED_UTILIZATION = 1e6;
/** No backend's scheduler weight is below this fraction of the largest one. */
export const MIN_RELATIVE_WEIGHT = 1e-9;

const isRate = (v: number): boolean => typeof v === "number" && v >= 0 && v <= MAX_REPORTED_RATE;
const isUtilization = (v: number): boolean =>
  typeof v === "number" && v >= 0 && v <= MAX_REPORTED_UTILIZATION;

/**
 * A58's weight for one report, or 0 when the report is unusable (qps or utilization 0, or any value
 * not a believable finite number ≥ 0). NaN fails every comparison, so it is caught by the range checks.
 */
export function weightFromReport(r: LoadReport, errorUtilizationPenalty: number): number {
  const { qps, eps, cpuUtilization: cpu, applicationUtilization: app } = r;
  if (!isRate(qps) || !isRate(eps) || !isUtilization(cpu) || !isUtilization(app)) return 0;
  const utilization = app > 0 ? app : cpu;
  if (qps === 0 || utilization === 0) return 0;
  const weight = qps / (utilization + (eps / qps) * errorUtilizationPenalty);
  return Number.isFinite(weight) && weight > 0 ? weight : 0;
}

/** Why a backend's weight is or is not used, for /status. */
export type WeightState = "weighted" | "blackout" | "expired" | "no-report";

/** One backend's weight bookkeeping (A58's subchannel weight), kept by the balancer per key. */
class BackendWeight {
  /** The last report object looked at (identity: a new object is a new report). */
  #seen: LoadReport | undefined;
  /** When the current run of usable reports began (or the backend joined, if later); ∞: not begun. */
  #nonEmptySince = Number.POSITIVE_INFINITY;
  /** When the last usable report arrived; −∞: never. */
  #lastUpdated = Number.NEGATIVE_INFINITY;
  /** The weight of the last usable report. */
  #weight = 0;
  state: WeightState = "no-report";

  /** A backend joining the ready set at `now`; a report it already carries counts from `now`. */
  constructor(report: LoadReport | undefined, now: number, penalty: number) {
    this.#seen = report;
    if (report === undefined) return;
    const w = weightFromReport(report, penalty);
    if (w === 0) return;
    this.#weight = w;
    this.#lastUpdated = arrival(report, now);
    this.#nonEmptySince = now;
  }

  /** Takes in `report` if it is new since the last look (A58's `UpdateWeight`). */
  observe(report: LoadReport | undefined, now: number, penalty: number): void {
    if (report === this.#seen) return;
    this.#seen = report;
    if (report === undefined) return;
    const w = weightFromReport(report, penalty);
    if (w === 0) return;
    const at = arrival(report, now);
    if (this.#nonEmptySince === Number.POSITIVE_INFINITY) this.#nonEmptySince = at;
    this.#lastUpdated = at;
    this.#weight = w;
  }

  /** The weight to use at `now`, 0 when none (A58's `GetWeight`). Sets `state`. */
  current(now: number, c: WeightedRoundRobinConfig): number {
    if (this.#lastUpdated === Number.NEGATIVE_INFINITY) {
      this.state = "no-report";
      return 0;
    }
    if (now - this.#lastUpdated >= c.weightExpirationPeriodMs) {
      this.#nonEmptySince = Number.POSITIVE_INFINITY;
      this.state = "expired";
      return 0;
    }
    if (c.blackoutPeriodMs > 0 && now - this.#nonEmptySince < c.blackoutPeriodMs) {
      this.state = "blackout";
      return 0;
    }
    this.state = "weighted";
    return this.#weight;
  }

  /** The weight of the last usable report (0: none), used or not. */
  get reported(): number {
    return this.#weight;
  }
}

/** A report's arrival time, trusted only when it is a finite time not after `now`. */
function arrival(report: LoadReport, now: number): number {
  const at = report.at;
  return typeof at === "number" && Number.isFinite(at) && at <= now ? at : now;
}

/**
 * Fills `out` with the weights the scheduler should use: each usable weight (> 0) as it is, the others
 * the mean of the usable ones; every weight 1 when fewer than two are usable. Returns how many were
 * usable.
 */
export function fillWeights(raw: ArrayLike<number>, out: Float64Array): number {
  let usable = 0;
  let sum = 0;
  for (let i = 0; i < raw.length; i++) {
    const w = raw[i]!;
    if (w > 0 && Number.isFinite(w)) {
      usable++;
      sum += w;
    }
  }
  if (usable < 2) {
    out.fill(1, 0, raw.length);
    return usable;
  }
  const mean = sum / usable;
  for (let i = 0; i < raw.length; i++) {
    const w = raw[i]!;
    out[i] = w > 0 && Number.isFinite(w) ? w : mean;
  }
  return usable;
}

/**
 * Earliest-deadline-first over n entries with fixed weights (changed only by `reweight`). `next()` is
 * O(log n) and allocates nothing. Entry i's deadline is `(picks_i + phase_i) / weight_i`; ties go to the
 * lower index.
 */
export class EdfScheduler {
  readonly size: number;
  readonly #weight: Float64Array;
  readonly #phase: Float64Array;
  readonly #picks: Float64Array;
  readonly #deadline: Float64Array;
  /** A binary min-heap of entry indexes, and each entry's place in it. */
  readonly #heap: Int32Array;
  readonly #pos: Int32Array;

  /** `weights`: > 0 each (others are treated as the smallest allowed); `phases`: in [0, 1). */
  constructor(weights: ArrayLike<number>, phases: ArrayLike<number>) {
    const n = weights.length;
    this.size = n;
    this.#weight = new Float64Array(n);
    this.#phase = new Float64Array(n);
    this.#picks = new Float64Array(n);
    this.#deadline = new Float64Array(n);
    this.#heap = new Int32Array(n);
    this.#pos = new Int32Array(n);
    this.#setWeights(weights);
    for (let i = 0; i < n; i++) {
      const p = phases[i] ?? 0;
      this.#phase[i] = p >= 0 && p < 1 ? p : 0;
      this.#deadline[i] = this.#phase[i]! / this.#weight[i]!;
      this.#heap[i] = i;
    }
    this.#heapify();
  }

  /** The entry with the earliest deadline; it moves one period on. */
  next(): number {
    const i = this.#heap[0]!;
    this.#advance(i);
    return i;
  }

  /**
   * The entry with the earliest deadline among those `skip` does not reject (a linear scan, for calls
   * being retried); the earliest overall when `skip` rejects all.
   */
  nextExcept(skip: (index: number) => boolean): number {
    let best = -1;
    for (let i = 0; i < this.size; i++) {
      if (skip(i)) continue;
      if (best < 0 || this.#less(i, best)) best = i;
    }
    if (best < 0) return this.next();
    this.#advance(best);
    return best;
  }

  /** The scaled weight of entry i (the largest is 1). */
  weight(i: number): number {
    return this.#weight[i] ?? 0;
  }

  /**
   * New weights; each entry keeps the fraction of its period it had left, measured from the earliest
   * deadline, so the rotation goes on where it was.
   */
  reweight(weights: ArrayLike<number>): void {
    const n = this.size;
    if (n === 0) return;
    const now = this.#deadline[this.#heap[0]!]!;
    const left = this.#picks; // reused as scratch: picks restart at 0 below
    for (let i = 0; i < n; i++) {
      const fraction = (this.#deadline[i]! - now) * this.#weight[i]!;
      left[i] = fraction > 0 && Number.isFinite(fraction) ? fraction : 0;
    }
    this.#setWeights(weights);
    for (let i = 0; i < n; i++) {
      this.#phase[i] = left[i]!;
      this.#picks[i] = 0;
      this.#deadline[i] = this.#phase[i]! / this.#weight[i]!;
    }
    this.#heapify();
  }

  #setWeights(weights: ArrayLike<number>): void {
    let max = 0;
    for (let i = 0; i < this.size; i++) {
      const w = weights[i]!;
      if (w > max && Number.isFinite(w)) max = w;
    }
    for (let i = 0; i < this.size; i++) {
      const w = weights[i]!;
      const scaled = max > 0 && w > 0 && Number.isFinite(w) ? w / max : 0;
      this.#weight[i] = Math.max(scaled, MIN_RELATIVE_WEIGHT);
    }
  }

  #advance(i: number): void {
    this.#picks[i]! += 1;
    this.#deadline[i] = (this.#picks[i]! + this.#phase[i]!) / this.#weight[i]!;
    this.#down(this.#pos[i]!);
  }

  #less(a: number, b: number): boolean {
    const da = this.#deadline[a]!;
    const db = this.#deadline[b]!;
    return da < db || (da === db && a < b);
  }

  #heapify(): void {
    for (let k = 0; k < this.size; k++) this.#pos[this.#heap[k]!] = k;
    for (let k = (this.size >> 1) - 1; k >= 0; k--) this.#down(k);
  }

  /** Sifts the entry at heap place k down. Bounded by the heap's depth. */
  #down(k: number): void {
    const heap = this.#heap;
    const n = this.size;
    let at = k;
    for (;;) {
      const l = 2 * at + 1;
      if (l >= n) return;
      const r = l + 1;
      const child = r < n && this.#less(heap[r]!, heap[l]!) ? r : l;
      if (!this.#less(heap[child]!, heap[at]!)) return;
      const a = heap[at]!;
      const c = heap[child]!;
      heap[at] = c;
      heap[child] = a;
      this.#pos[c] = at;
      this.#pos[a] = child;
      at = child;
    }
  }
}

/** A snapshot for /status. */
export interface WeightedRoundRobinStatus {
  /** "weighted" when at least two backends have usable weights; else "equal" (plain round robin). */
  readonly mode: "weighted" | "equal";
  readonly backends: ReadonlyArray<{
    readonly key: string;
    /** The weight in use (qps per unit of utilization; the mean for backends without one; 1 when equal). */
    readonly weight: number;
    /** Its expected share of calls, 0..1. */
    readonly share: number;
    readonly state: WeightState;
    /** The weight of its last usable report, whether in use or not (0: none). */
    readonly reportedWeight: number;
  }>;
}

class WrrPicker implements Picker {
  readonly #candidates: readonly Candidate[];
  /** One result per candidate, made once: a pick allocates nothing. */
  readonly #results: readonly PickResult[];
  readonly #weights: readonly BackendWeight[];
  readonly #balancer: WeightedRoundRobinBalancer;
  readonly #raw: Float64Array;
  readonly #filled: Float64Array;
  readonly #previous: Float64Array;
  readonly #scheduler: EdfScheduler;
  #nextUpdateAt: number;
  #usable = 0;
  #exclude: ReadonlySet<string> | undefined;
  readonly #skip = (i: number): boolean => this.#exclude?.has(this.#candidates[i]!.key) === true;

  constructor(
    candidates: readonly Candidate[],
    weights: readonly BackendWeight[],
    balancer: WeightedRoundRobinBalancer,
    now: number,
    random: Random,
  ) {
    this.#candidates = candidates;
    this.#results = candidates.map((candidate) => ({ kind: "pick", candidate }));
    this.#weights = weights;
    this.#balancer = balancer;
    const n = candidates.length;
    this.#raw = new Float64Array(n);
    this.#filled = new Float64Array(n);
    this.#previous = new Float64Array(n);
    this.#computeWeights(now);
    const phases = new Float64Array(n);
    for (let i = 0; i < n; i++) phases[i] = random.next();
    this.#scheduler = new EdfScheduler(this.#filled, phases);
    this.#nextUpdateAt = now + balancer.config.weightUpdatePeriodMs;
  }

  pick(ctx: PickContext): PickResult {
    if (this.#candidates.length === 0) return { kind: "queue" }; // not reached: update() never gets none
    const now = this.#balancer.now();
    if (now >= this.#nextUpdateAt) this.refresh(now);
    const exclude = ctx.exclude;
    let i: number;
    if (exclude === undefined || exclude.size === 0) i = this.#scheduler.next();
    else {
      this.#exclude = exclude;
      i = this.#scheduler.nextExcept(this.#skip);
      this.#exclude = undefined;
    }
    return this.#results[i]!;
  }

  /** Recomputes the weights from the latest reports; the scheduler changes only when they changed. */
  refresh(now: number): void {
    this.#nextUpdateAt = now + this.#balancer.config.weightUpdatePeriodMs;
    this.#previous.set(this.#filled);
    this.#computeWeights(now);
    let changed = false;
    for (let i = 0; i < this.#filled.length; i++) if (this.#previous[i] !== this.#filled[i]) changed = true;
    if (changed) this.#scheduler.reweight(this.#filled);
  }

  refreshIfDue(now: number): void {
    if (now >= this.#nextUpdateAt) this.refresh(now);
  }

  #computeWeights(now: number): void {
    const c = this.#balancer.config;
    for (let i = 0; i < this.#candidates.length; i++) {
      const w = this.#weights[i]!;
      w.observe(loadReportOf(this.#candidates[i]!), now, c.errorUtilizationPenalty);
      this.#raw[i] = w.current(now, c);
    }
    this.#usable = fillWeights(this.#raw, this.#filled);
  }

  status(): WeightedRoundRobinStatus {
    let sum = 0;
    for (const w of this.#filled) sum += w;
    return {
      mode: this.#usable >= 2 ? "weighted" : "equal",
      backends: this.#candidates.map((c, i) => ({
        key: c.key,
        weight: this.#filled[i]!,
        share: sum > 0 ? this.#filled[i]! / sum : 0,
        state: this.#weights[i]!.state,
        reportedWeight: this.#weights[i]!.reported,
      })),
    };
  }
}

/** The weighted_round_robin balancer: per-backend weight state survives picker swaps. */
export class WeightedRoundRobinBalancer implements Balancer {
  readonly config: WeightedRoundRobinConfig;
  readonly #deps: BalancerDeps;
  #states = new Map<string, BackendWeight>();
  #picker: WrrPicker | undefined;

  constructor(config: WeightedRoundRobinConfig, deps: BalancerDeps) {
    this.config = config;
    this.#deps = deps;
  }

  now(): number {
    return this.#deps.clock.now();
  }

  update(candidates: readonly Candidate[]): Picker {
    const now = this.now();
    const next = new Map<string, BackendWeight>();
    const weights: BackendWeight[] = [];
    for (const c of candidates) {
      // A backend that left the ready set and came back is new: its blackout starts again (A58).
      let w = next.get(c.key) ?? this.#states.get(c.key);
      w ??= new BackendWeight(loadReportOf(c), now, this.config.errorUtilizationPenalty);
      next.set(c.key, w);
      weights.push(w);
    }
    this.#states = next;
    this.#picker = new WrrPicker(candidates, weights, this, now, this.#deps.random);
    return this.#picker;
  }

  weights(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const b of this.status().backends) out.set(b.key, b.weight);
    return out;
  }

  status(): WeightedRoundRobinStatus {
    const p = this.#picker;
    if (p === undefined) return { mode: "equal", backends: [] };
    p.refreshIfDue(this.now());
    return p.status();
  }
}

const DURATION = /^(\d+(?:\.\d*)?|\.\d+)(ms|s)$/;

/**
 * A duration setting: a string with a unit ("10s", "1.5s", "250ms" — gRPC service config writes
 * durations as "10s") or a number of milliseconds, as every other `…Ms` setting. Throws ConfigError
 * naming `policy.<key>`.
 */
function readDuration(r: Record<string, unknown>, key: string, dflt: number, min: number): number {
  const v = r[key];
  if (v === undefined) return dflt;
  let ms: number;
  if (typeof v === "number") ms = v;
  else if (typeof v === "string" && DURATION.test(v.trim())) {
    const m = DURATION.exec(v.trim())!;
    ms = Number(m[1]) * (m[2] === "s" ? 1000 : 1);
  } else {
    const shown = typeof v === "string" ? JSON.stringify(v.slice(0, 40)) : (JSON.stringify(v) ?? typeof v);
    throw new ConfigError(
      `policy.${key}`,
      `must be a duration such as "10s" or "250ms", or a number of milliseconds; got ${shown}`,
    );
  }
  if (!Number.isFinite(ms)) throw new ConfigError(`policy.${key}`, `must be a finite duration, got ${v}`);
  if (ms < min) throw new ConfigError(`policy.${key}`, `must be at least ${min} ms, got ${ms} ms`);
  if (ms > MAX_DURATION_MS)
    throw new ConfigError(`policy.${key}`, `must be at most ${MAX_DURATION_MS} ms (a day), got ${ms} ms`);
  return ms;
}

export const weightedRoundRobin: BalancerFactory<WeightedRoundRobinConfig> = {
  name: "weighted_round_robin",
  parseConfig(raw) {
    const r = asRecord(raw, "policy");
    rejectUnknownKeys(
      r,
      [
        "enableOobLoadReport",
        "oobReportingPeriod",
        "blackoutPeriod",
        "weightExpirationPeriod",
        "weightUpdatePeriod",
        "errorUtilizationPenalty",
      ],
      "policy",
    );
    const d = defaultWeightedRoundRobinConfig;
    const oobReportingPeriodMs = readDuration(r, "oobReportingPeriod", d.oobReportingPeriodMs, 0);
    if (oobReportingPeriodMs === 0)
      throw new ConfigError("policy.oobReportingPeriod", "must be greater than 0");
    const weightExpirationPeriodMs = readDuration(r, "weightExpirationPeriod", d.weightExpirationPeriodMs, 0);
    if (weightExpirationPeriodMs === 0)
      throw new ConfigError("policy.weightExpirationPeriod", "must be greater than 0");
    return {
      enableOobLoadReport: readBoolean(r, "enableOobLoadReport", d.enableOobLoadReport, "policy"),
      oobReportingPeriodMs,
      blackoutPeriodMs: readDuration(r, "blackoutPeriod", d.blackoutPeriodMs, 0),
      weightExpirationPeriodMs,
      // A58: values under 100 ms are raised to 100 ms (not rejected).
      weightUpdatePeriodMs: Math.max(
        readDuration(r, "weightUpdatePeriod", d.weightUpdatePeriodMs, 0),
        MIN_WEIGHT_UPDATE_PERIOD_MS,
      ),
      errorUtilizationPenalty: readNumber(
        r,
        "errorUtilizationPenalty",
        { default: d.errorUtilizationPenalty, min: 0 },
        "policy",
      ),
    };
  },
  create: (config, deps) => new WeightedRoundRobinBalancer(config, deps),
  loadReports: (config) =>
    config.enableOobLoadReport ? { reportIntervalMs: config.oobReportingPeriodMs } : undefined,
};
