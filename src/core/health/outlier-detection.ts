import type { Clock, Random } from "../clock.ts";
import { randomInt } from "../clock.ts";
import { asRecord, readNumber, rejectUnknownKeys } from "../config.ts";

/**
 * Outlier detection — passive health from call results — as gRFC A50 specifies it for gRPC (after
 * Envoy's outlier detection; grpc-js `load-balancer-outlier-detection.ts` implements the same).
 * Pure math: the channel owns the timer, calls `tick(now)` every `config.intervalMs`, reports each
 * finished call with `record`, and stops picking backends while `isEjected` says so.
 *
 * Per endpoint: successes and failures counted since the last tick, the time of its current ejection
 * (or none), and an ejection-time multiplier starting at 0. Each tick (A50 "timer"):
 * 1. the interval's counts become the ones judged, and counting starts afresh;
 * 2. success-rate ejection, if configured: when at least `minimumHosts` endpoints had
 *    `requestVolume` calls, eject those (with that volume) whose success rate is below
 *    `mean − stdev · stdevFactor / 1000` (population stdev over the same endpoints);
 * 3. failure-percentage ejection, if configured: when there are at least `minimumHosts` endpoints,
 *    eject those with `requestVolume` calls whose failure percentage is above `threshold`;
 *    in both, an outlier is ejected only if a random whole number in [0, 100) is below
 *    `enforcementPercentage`, and only while the cap allows (below);
 * 4. every endpoint not ejected has its multiplier lowered by 1 (not below 0); every ejected one
 *    whose time is up — `now ≥ ejectedAt + min(base · multiplier, max(base, maxEjectionTime))` — returns.
 * Ejecting sets `ejectedAt = now` and raises the multiplier by 1.
 *
 * Choices where the sources differ or are silent (each marked "ours" in the code):
 * - The cap follows Envoy's `ejectHost`: eject only if `(ejected + 1) / endpoints ≤ maxEjectionPercent`,
 *   except that one endpoint may always be ejected when none is (A50's field comment: "will eject at
 *   least one address regardless of the value"). grpc-js checks `ejected% ≥ max` before each ejection,
 *   which can overshoot the cap.
 * - An endpoint already ejected is not ejected again (its clock and multiplier stay as they are).
 * - An endpoint ejected in this tick is not returned in the same tick (matters only for base 0).
 * - Returning uses `≥` (Envoy's `checkHostForUneject`), so base 30 s with a 10 s interval means 30 s.
 * - Failure percentage "above" the threshold, as A50's algorithm text and grpc-js say (A50's proto
 *   comment says "greater than or equal").
 * - Endpoints with no calls never count toward success rate, even with `requestVolume: 0`.
 */

export interface SuccessRateEjection {
  /** Threshold is mean − stdev × stdevFactor / 1000. Default 1900 (1.9 standard deviations). */
  readonly stdevFactor: number;
  /** % chance an outlier is actually ejected. Default 100. */
  readonly enforcementPercentage: number;
  /** Endpoints with `requestVolume` calls needed before anything is judged. Default 5. */
  readonly minimumHosts: number;
  /** Calls in the interval for an endpoint to be judged. Default 100. */
  readonly requestVolume: number;
}

export interface FailurePercentageEjection {
  /** Failure percentage above which an endpoint is ejected. Default 85. */
  readonly threshold: number;
  /** % chance an outlier is actually ejected. Default 100. */
  readonly enforcementPercentage: number;
  /** Endpoints (with or without traffic) needed before anything is judged. Default 5. */
  readonly minimumHosts: number;
  /** Calls in the interval for an endpoint to be judged. Default 50. */
  readonly requestVolume: number;
}

/** gRFC A50's `OutlierDetectionLoadBalancingConfig`, camelCased, durations in ms. */
export interface OutlierDetectionConfig {
  /** Time between ticks. Default 10 000. */
  readonly intervalMs: number;
  /** Ejection time per multiplier step. Default 30 000. */
  readonly baseEjectionTimeMs: number;
  /** Cap on one ejection (the larger of this and the base applies). Default 300 000. */
  readonly maxEjectionTimeMs: number;
  /** Most endpoints ejected at once, % of all. Default 10 (one may always be ejected). */
  readonly maxEjectionPercent: number;
  /** Absent: success-rate ejection is off. */
  readonly successRateEjection: SuccessRateEjection | null;
  /** Absent: failure-percentage ejection is off. */
  readonly failurePercentageEjection: FailurePercentageEjection | null;
}

export interface OutlierTick {
  /** Keys ejected by this tick, in endpoint order. */
  readonly ejected: string[];
  /** Keys whose ejection ended at this tick, in endpoint order. */
  readonly returned: string[];
}

/**
 * Synchronous and owned by the channel. `setEndpoints` is A50's address update: entries are created
 * for new keys and dropped (with any ejection) for missing ones; `record` for a key not set is ignored.
 * Nothing calls back: the caller acts on `tick`'s answer.
 */
export interface OutlierDetector {
  readonly config: OutlierDetectionConfig;
  /** False when neither algorithm is configured: nothing is counted or ejected, no timer needed. */
  readonly enabled: boolean;
  setEndpoints(keys: Iterable<string>): void;
  record(key: string, success: boolean): void;
  tick(now: number): OutlierTick;
  isEjected(key: string): boolean;
  /** Currently ejected keys, in endpoint order. */
  ejectedKeys(): string[];
}

export const defaultOutlierDetection = {
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 10,
  successRateEjection: { stdevFactor: 1900, enforcementPercentage: 100, minimumHosts: 5, requestVolume: 100 },
  failurePercentageEjection: {
    threshold: 85,
    enforcementPercentage: 100,
    minimumHosts: 5,
    requestVolume: 50,
  },
} as const;

interface Entry {
  successes: number;
  failures: number;
  /** The counts of the last finished interval, judged at the tick. */
  lastSuccesses: number;
  lastFailures: number;
  ejectedAt: number | null;
  multiplier: number;
}

class Detector implements OutlierDetector {
  readonly config: OutlierDetectionConfig;
  readonly enabled: boolean;
  readonly #random: Random;
  readonly #entries = new Map<string, Entry>();
  #ejectedCount = 0;

  constructor(config: OutlierDetectionConfig, random: Random) {
    this.config = config;
    this.enabled = config.successRateEjection !== null || config.failurePercentageEjection !== null;
    this.#random = random;
  }

  setEndpoints(keys: Iterable<string>): void {
    const keep = new Set(keys);
    for (const [key, e] of this.#entries) {
      if (!keep.has(key)) {
        if (e.ejectedAt !== null) this.#ejectedCount--;
        this.#entries.delete(key);
      }
    }
    for (const key of keep) {
      if (!this.#entries.has(key)) {
        this.#entries.set(key, {
          successes: 0,
          failures: 0,
          lastSuccesses: 0,
          lastFailures: 0,
          ejectedAt: null,
          multiplier: 0,
        });
      }
    }
  }

  record(key: string, success: boolean): void {
    if (!this.enabled) return;
    const e = this.#entries.get(key);
    if (e === undefined) return;
    if (success) e.successes++;
    else e.failures++;
  }

  isEjected(key: string): boolean {
    return (this.#entries.get(key)?.ejectedAt ?? null) !== null;
  }

  ejectedKeys(): string[] {
    const out: string[] = [];
    for (const [key, e] of this.#entries) if (e.ejectedAt !== null) out.push(key);
    return out;
  }

  tick(now: number): OutlierTick {
    const ejected: string[] = [];
    const returned: string[] = [];
    // 1. Swap buckets.
    for (const e of this.#entries.values()) {
      e.lastSuccesses = e.successes;
      e.lastFailures = e.failures;
      e.successes = 0;
      e.failures = 0;
    }
    // 2–3. The algorithms.
    const sr = this.config.successRateEjection;
    if (sr !== null) this.#successRate(sr, now, ejected);
    const fp = this.config.failurePercentageEjection;
    if (fp !== null) this.#failurePercentage(fp, now, ejected);
    // 4. Multipliers and returns.
    const base = this.config.baseEjectionTimeMs;
    const cap = Math.max(base, this.config.maxEjectionTimeMs);
    for (const [key, e] of this.#entries) {
      if (e.ejectedAt === null) {
        if (e.multiplier > 0) e.multiplier--;
      } else if (e.ejectedAt !== now && now >= e.ejectedAt + Math.min(base * e.multiplier, cap)) {
        // ours: not in the tick that ejected it
        e.ejectedAt = null;
        this.#ejectedCount--;
        returned.push(key);
      }
    }
    return { ejected, returned };
  }

  #successRate(sr: SuccessRateEjection, now: number, ejected: string[]): void {
    const volume = Math.max(1, sr.requestVolume); // ours: never judge an endpoint with no calls
    const rates: number[] = [];
    for (const e of this.#entries.values()) {
      const total = e.lastSuccesses + e.lastFailures;
      if (total >= volume) rates.push(e.lastSuccesses / total);
    }
    if (rates.length === 0 || rates.length < sr.minimumHosts) return;
    const mean = rates.reduce((a, b) => a + b, 0) / rates.length;
    const variance = rates.reduce((a, r) => a + (r - mean) * (r - mean), 0) / rates.length;
    const threshold = mean - Math.sqrt(variance) * (sr.stdevFactor / 1000);
    for (const [key, e] of this.#entries) {
      if (!this.#capAllows()) return;
      const total = e.lastSuccesses + e.lastFailures;
      if (total < volume || e.ejectedAt !== null) continue;
      if (e.lastSuccesses / total < threshold)
        this.#maybeEject(key, e, sr.enforcementPercentage, now, ejected);
    }
  }

  #failurePercentage(fp: FailurePercentageEjection, now: number, ejected: string[]): void {
    if (this.#entries.size < fp.minimumHosts) return;
    const volume = Math.max(1, fp.requestVolume);
    for (const [key, e] of this.#entries) {
      if (!this.#capAllows()) return;
      const total = e.lastSuccesses + e.lastFailures;
      if (total < volume || e.ejectedAt !== null) continue;
      if ((e.lastFailures * 100) / total > fp.threshold) {
        this.#maybeEject(key, e, fp.enforcementPercentage, now, ejected);
      }
    }
  }

  /** ours, after Envoy: the next ejection must keep within the cap, but one is always allowed. */
  #capAllows(): boolean {
    if (this.#ejectedCount === 0) return this.#entries.size > 0;
    return ((this.#ejectedCount + 1) * 100) / this.#entries.size <= this.config.maxEjectionPercent;
  }

  #maybeEject(key: string, e: Entry, enforcement: number, now: number, ejected: string[]): void {
    // Draw only for an actual outlier, so scripted randoms line up with outliers in tests.
    if (randomInt(this.#random, 100) >= enforcement) return;
    e.ejectedAt = now;
    e.multiplier++;
    this.#ejectedCount++;
    ejected.push(key);
  }
}

/** `deps.clock` is accepted for symmetry with balancers; time enters through `tick(now)`. */
export function createOutlierDetector(
  config: OutlierDetectionConfig,
  deps: { readonly clock?: Clock; readonly random: Random },
): OutlierDetector {
  return new Detector(config, deps.random);
}

const percent = { min: 0, max: 100, integer: true } as const;
const count = { min: 0, integer: true } as const;

/**
 * Validates and fills defaults (A50's names camelCased, durations as `…Ms`); throws ConfigError naming
 * the field under `field`. A missing `successRateEjection` / `failurePercentageEjection` leaves that
 * algorithm off; `{}` turns it on with defaults — as in A50.
 */
export function parseOutlierConfig(raw: unknown, field = "outlierDetection"): OutlierDetectionConfig {
  const r = asRecord(raw, field);
  rejectUnknownKeys(
    r,
    [
      "intervalMs",
      "baseEjectionTimeMs",
      "maxEjectionTimeMs",
      "maxEjectionPercent",
      "successRateEjection",
      "failurePercentageEjection",
    ],
    field,
  );
  const d = defaultOutlierDetection;
  let successRateEjection: SuccessRateEjection | null = null;
  if (r.successRateEjection !== undefined && r.successRateEjection !== null) {
    const f = `${field}.successRateEjection`;
    const s = asRecord(r.successRateEjection, f);
    rejectUnknownKeys(s, ["stdevFactor", "enforcementPercentage", "minimumHosts", "requestVolume"], f);
    const ds = d.successRateEjection;
    successRateEjection = {
      stdevFactor: readNumber(s, "stdevFactor", { default: ds.stdevFactor, ...count }, f),
      enforcementPercentage: readNumber(
        s,
        "enforcementPercentage",
        { default: ds.enforcementPercentage, ...percent },
        f,
      ),
      minimumHosts: readNumber(s, "minimumHosts", { default: ds.minimumHosts, ...count }, f),
      requestVolume: readNumber(s, "requestVolume", { default: ds.requestVolume, ...count }, f),
    };
  }
  let failurePercentageEjection: FailurePercentageEjection | null = null;
  if (r.failurePercentageEjection !== undefined && r.failurePercentageEjection !== null) {
    const f = `${field}.failurePercentageEjection`;
    const s = asRecord(r.failurePercentageEjection, f);
    rejectUnknownKeys(s, ["threshold", "enforcementPercentage", "minimumHosts", "requestVolume"], f);
    const df = d.failurePercentageEjection;
    failurePercentageEjection = {
      threshold: readNumber(s, "threshold", { default: df.threshold, ...percent }, f),
      enforcementPercentage: readNumber(
        s,
        "enforcementPercentage",
        { default: df.enforcementPercentage, ...percent },
        f,
      ),
      minimumHosts: readNumber(s, "minimumHosts", { default: df.minimumHosts, ...count }, f),
      requestVolume: readNumber(s, "requestVolume", { default: df.requestVolume, ...count }, f),
    };
  }
  return {
    intervalMs: readNumber(r, "intervalMs", { default: d.intervalMs, min: 1 }, field),
    baseEjectionTimeMs: readNumber(r, "baseEjectionTimeMs", { default: d.baseEjectionTimeMs, min: 0 }, field),
    maxEjectionTimeMs: readNumber(r, "maxEjectionTimeMs", { default: d.maxEjectionTimeMs, min: 0 }, field),
    maxEjectionPercent: readNumber(
      r,
      "maxEjectionPercent",
      { default: d.maxEjectionPercent, ...percent },
      field,
    ),
    successRateEjection,
    failurePercentageEjection,
  };
}
