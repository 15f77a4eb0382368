import type { CallDone, CallOutcome, LoadTracker } from "./load-tracker.ts";

/**
 * Peak-EWMA load: cost = RTT estimate × (calls in flight + 1), after tower's `load/peak_ewma.rs`
 * (itself from Finagle's PeakEwma) as linkerd2-proxy uses it in front of its P2C balancer.
 *
 * The estimate, as tower keeps it:
 * - a sample above the estimate replaces it at once (peak-sensitive: slow is believed immediately);
 * - a lower sample pulls the estimate toward it with time constant `decayMs`:
 *   `E ← E·w + rtt·(1 − w)`, `w = exp(−(time since the last sample) / decayMs)` (tower's `update`);
 * - between samples the estimate decays toward zero, `E·exp(−elapsed / decayMs)` (tower's `decay`,
 *   run on every `load()`), so a backend that got no traffic for a while — a fresh one still on its
 *   default RTT, or one that once had a spike — is tried again instead of being shunned forever.
 *   The decay toward zero stands for "no news"; the next sample is news, and is blended against the
 *   estimate as of the previous sample, so one sample after a quiet spell restores a true estimate.
 *
 * One deliberate difference: tower's `load()` writes the decayed value back, so the weight a later
 * sample gets depends on how often the balancer happened to read the load. Here `cost(now)` is a pure
 * read and samples are blended against the estimate as of the previous sample, so the result depends
 * only on the samples and their times (and the tests can state exact values).
 *
 * One more (ours): the first real sample replaces the default RTT outright. Tower blends it like any
 * other, so with a 10 s decay a made-up 30 ms default outweighs real 1 ms samples for tens of seconds
 * and the balancer cannot tell a slow backend from a fast one until it has washed out.
 *
 * Defaults are linkerd2-proxy's outbound `EWMA_DEFAULT_RTT = 30 ms` and `EWMA_DECAY = 10 s` (tower's
 * own docs use 1 s as the default RTT; 30 ms suits in-datacenter gRPC better).
 *
 * Which completions count (our choice; tower counts every response):
 * - `success`: a sample.
 * - `failure`: a sample only when it raises the estimate. A backend that fails fast must not look
 *   fast, or a latency-seeking balancer pours traffic into it (the "black hole" failure mode;
 *   outlier detection is what ejects it).
 * - `cancelled`: no sample. The client gave up; that says nothing about the backend's latency.
 *
 * Completion is stream end (the LoadTracker contract), so for long server streams the "RTT" is the
 * stream's lifetime; use least_request for clusters dominated by long streams.
 */
export interface PeakEwmaOptions {
  /** Time constant of the decay, ms. Default 10 000. */
  readonly decayMs?: number;
  /** Estimate before the first sample, ms. Default 30. Must be > 0, or a new backend looks free. */
  readonly defaultRttMs?: number;
}

export const defaultPeakEwmaOptions = { decayMs: 10_000, defaultRttMs: 30 } as const;

/**
 * Samples are floored at 1 µs: an estimate of exactly 0 would make cost 0 whatever the calls in
 * flight, and every pick would go to that backend (a coarse clock can measure 0).
 */
const MIN_RTT_MS = 0.001;

export class PeakEwma implements LoadTracker {
  readonly #decayMs: number;
  /** The estimate as of `#stamp`, ms. */
  #estimate: number;
  /** When `#estimate` was last set (construction or the last sample). */
  #stamp: number;
  /** False while the estimate is still the default RTT. */
  #measured = false;
  #inFlight = 0;

  /** `now` is the clock reading at creation; the default RTT starts decaying from then. */
  constructor(options: PeakEwmaOptions = {}, now = 0) {
    this.#decayMs = options.decayMs ?? defaultPeakEwmaOptions.decayMs;
    this.#estimate = options.defaultRttMs ?? defaultPeakEwmaOptions.defaultRttMs;
    this.#stamp = now;
    if (!(this.#decayMs > 0)) throw new RangeError(`PeakEwma decayMs must be > 0, got ${this.#decayMs}`);
    if (!(this.#estimate > 0))
      throw new RangeError(`PeakEwma defaultRttMs must be > 0, got ${this.#estimate}`);
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** The RTT estimate at `now`, ms: the last estimate decayed toward zero for the time since. */
  rttEstimate(now: number): number {
    return this.#estimate * this.#weight(now);
  }

  cost(now: number): number {
    return this.rttEstimate(now) * (this.#inFlight + 1);
  }

  begin(now: number): CallDone {
    this.#inFlight++;
    let done = false;
    return (end: number, outcome: CallOutcome) => {
      if (done) return;
      done = true;
      this.#inFlight--;
      if (outcome !== "cancelled") this.#observe(end, Math.max(MIN_RTT_MS, end - now), outcome === "success");
    };
  }

  /** Records one RTT sample taken at `now` (tower's `RttEstimate::update`, plus the first-sample rule). */
  #observe(now: number, rtt: number, lowerAllowed: boolean): void {
    if (rtt > this.#estimate || (!this.#measured && lowerAllowed)) {
      this.#estimate = rtt;
      this.#measured = true;
    } else if (lowerAllowed) {
      const w = this.#weight(now);
      this.#estimate = this.#estimate * w + rtt * (1 - w);
    } else {
      return;
    }
    // A clock that went backwards (contract breach) must not make the next weight exceed 1.
    this.#stamp = Math.max(this.#stamp, now);
  }

  /** exp(−(now − stamp) / decay), 1 for a `now` before the stamp. */
  #weight(now: number): number {
    const elapsed = now - this.#stamp;
    return elapsed > 0 ? Math.exp(-elapsed / this.#decayMs) : 1;
  }
}
