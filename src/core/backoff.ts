import type { Random } from "./clock.ts";

/**
 * Reconnect backoff after gRPC's connection-backoff.md: delay grows by `multiplier` from `initialMs`
 * to `maxMs`, each delay spread by ±`jitter`. Pure: the caller owns the timer.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  jitter: number;
}

export const defaultBackoff: BackoffOptions = { initialMs: 200, maxMs: 10_000, multiplier: 1.6, jitter: 0.2 };

export class Backoff {
  readonly #o: BackoffOptions;
  readonly #random: Random;
  #current: number;
  constructor(random: Random, options: BackoffOptions = defaultBackoff) {
    this.#o = options;
    this.#random = random;
    this.#current = options.initialMs;
  }
  /** The delay before the next attempt; each call grows the following one. */
  next(): number {
    const base = this.#current;
    this.#current = Math.min(this.#current * this.#o.multiplier, this.#o.maxMs);
    return base * (1 + this.#o.jitter * (this.#random.next() * 2 - 1));
  }
  reset(): void {
    this.#current = this.#o.initialMs;
  }
}
