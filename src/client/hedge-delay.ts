/**
 * When to send a hedge: after the method's observed latency percentile (p95 by default: "The Tail at
 * Scale", Dean & Barroso 2013 — a second copy after the 95th percentile costs ~5 % more calls and cuts
 * the tail that one slow server or connection causes). Pure: a ring of the last `window` completed
 * attempts' latencies; the percentile is recomputed every `recomputeEvery` samples, not per call.
 * Before `minSamples` samples the configured `initialDelayMs` is used.
 */
export interface HedgeDelayConfig {
  /** Percentile of observed latency after which the hedge goes, in (0, 100). */
  percentile: number;
  initialDelayMs: number;
  minDelayMs: number;
  maxDelayMs: number;
}

export class HedgeDelay {
  readonly #config: HedgeDelayConfig;
  readonly #ring: Float64Array;
  readonly #minSamples: number;
  readonly #recomputeEvery: number;
  #count = 0;
  #next = 0;
  #sinceRecompute = 0;
  #delay: number;

  constructor(config: HedgeDelayConfig, window = 256, minSamples = 20, recomputeEvery = 16) {
    if (!(config.percentile > 0 && config.percentile < 100))
      throw new RangeError(`hedging.percentile: must be in (0, 100), got ${config.percentile}`);
    if (!(config.minDelayMs >= 0 && config.maxDelayMs >= config.minDelayMs))
      throw new RangeError(
        `hedging.maxDelayMs: must be ≥ minDelayMs (${config.minDelayMs}), got ${config.maxDelayMs}`,
      );
    this.#config = config;
    this.#ring = new Float64Array(window);
    this.#minSamples = minSamples;
    this.#recomputeEvery = recomputeEvery;
    this.#delay = this.#clamp(config.initialDelayMs);
  }

  /** One attempt completed (not cancelled) after `ms`. */
  record(ms: number): void {
    this.#ring[this.#next] = ms;
    this.#next = (this.#next + 1) % this.#ring.length;
    if (this.#count < this.#ring.length) this.#count++;
    if (this.#count >= this.#minSamples && ++this.#sinceRecompute >= this.#recomputeEvery) {
      this.#sinceRecompute = 0;
      this.#delay = this.#clamp(this.#percentile());
    }
  }

  /** The delay before a hedge, ms. */
  get delayMs(): number {
    return this.#delay;
  }

  #percentile(): number {
    const sorted = this.#ring.slice(0, this.#count).sort();
    const rank = Math.ceil((this.#config.percentile / 100) * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, rank))]!;
  }

  #clamp(ms: number): number {
    return Math.min(this.#config.maxDelayMs, Math.max(this.#config.minDelayMs, ms));
  }
}
