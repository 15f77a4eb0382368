/**
 * How many grpc-js channels (each with its own connections) a client keeps per target: pure, with
 * time as an argument. A server caps the streams of one HTTP/2 connection (MAX_CONCURRENT_STREAMS,
 * commonly 100); calls past it wait inside the connection. A channel balancing over N backends holds
 * one connection to each (its READY connections, `connections`, which the pool learns from grpc-js:
 * pool-meter.ts), so it carries `streamsPerConnection × connections` calls before any has to wait.
 * The pool grows by one channel as soon as every channel carries that many, up to `max`, and shrinks
 * by one when the calls in flight have fitted in half of one channel fewer for `idleMs` (the
 * hysteresis keeps a load near a boundary from opening and closing connections), down to `min`.
 */
export interface PoolSizingConfig {
  /** Channels kept even when idle (≥ 1). */
  min: number;
  /** Channels at most. */
  max: number;
  /**
   * The servers' stream limit per connection (MAX_CONCURRENT_STREAMS): a channel with N ready
   * connections is full at N times this many calls in flight, and another channel is opened.
   */
  streamsPerConnection: number;
  /** How long demand must stay low before one channel is closed, ms. */
  idleMs: number;
}

export type SizingDecision = "grow" | "shrink" | "keep";

export function validatePoolSizing(c: PoolSizingConfig, field = "pool"): PoolSizingConfig {
  if (!Number.isInteger(c.min) || c.min < 1)
    throw new RangeError(`${field}.min: must be an integer ≥ 1, got ${c.min}`);
  if (!Number.isInteger(c.max) || c.max < c.min)
    throw new RangeError(`${field}.max: must be an integer ≥ min (${c.min}), got ${c.max}`);
  if (!Number.isInteger(c.streamsPerConnection) || c.streamsPerConnection < 1)
    throw new RangeError(
      `${field}.streamsPerConnection: must be an integer ≥ 1, got ${c.streamsPerConnection}`,
    );
  if (!(c.idleMs >= 0)) throw new RangeError(`${field}.idleMs: must be ≥ 0, got ${c.idleMs}`);
  return c;
}

export class PoolSizer {
  readonly config: PoolSizingConfig;
  /** Since when demand has fitted a smaller pool; undefined while it does not. */
  #lowSince: number | undefined;

  constructor(config: PoolSizingConfig) {
    this.config = validatePoolSizing(config);
  }

  /**
   * Called when a call starts (with the least-loaded channel's calls) and on the owner's idle timer:
   * `size` channels open, `inFlight` calls on them in all, `leastLoaded` calls on the emptiest one,
   * `connections` READY connections per channel (the fewest any channel has; below 1 counts as 1:
   * a channel still connecting will hold at least one).
   */
  decide(size: number, inFlight: number, leastLoaded: number, now: number, connections = 1): SizingDecision {
    const { min, max, streamsPerConnection, idleMs } = this.config;
    if (size < min) return "grow";
    const perChannel = streamsPerConnection * Math.max(connections, 1);
    if (size < max && leastLoaded >= perChannel) {
      this.#lowSince = undefined;
      return "grow";
    }
    if (size > min && inFlight <= ((size - 1) * perChannel) / 2) {
      if (this.#lowSince === undefined) {
        this.#lowSince = now;
        return idleMs === 0 ? this.#shrunk(now) : "keep";
      }
      if (now - this.#lowSince >= idleMs) return this.#shrunk(now);
      return "keep";
    }
    this.#lowSince = undefined;
    return "keep";
  }

  #shrunk(now: number): SizingDecision {
    this.#lowSince = now; // the next channel waits another idleMs
    return "shrink";
  }
}
