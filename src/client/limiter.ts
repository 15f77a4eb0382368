/**
 * The client's concurrency limit, as pure counting and a FIFO queue (no timers, no clock: time is an
 * argument). At most `maxConcurrent` calls run; the next `maxQueue` wait in arrival order; the rest
 * are refused at once. A waiter leaves the queue when a slot frees (`release` hands it the slot), when
 * its caller gives up (`cancel`), or when its wait ends (`expire`, called by the owner's timer at the
 * time `expiryOf` gave). The grpc-js side (timers, statuses) is `limiter-interceptor.ts`.
 *
 * Contract: every `run` admission and every waiter handed out by `release` owns one slot, given back
 * by exactly one `release`. Nothing here calls back.
 */

export interface LimiterConfig {
  /** Calls in flight at once. */
  maxConcurrent: number;
  /** Calls waiting for a slot at once; 0 refuses every call past the limit. */
  maxQueue: number;
  /** Longest wait in the queue, ms, even when the call's deadline is later (Infinity: none). */
  maxQueueWaitMs: number;
}

export type Admission =
  | { readonly kind: "run" }
  | { readonly kind: "queued"; readonly expiresAt: number }
  | { readonly kind: "reject"; readonly message: string };

interface Entry {
  readonly enqueuedAt: number;
  readonly expiresAt: number;
  readonly byDeadline: boolean;
}

export function validateLimiterConfig(c: LimiterConfig, field = "limiter"): LimiterConfig {
  if (!Number.isInteger(c.maxConcurrent) || c.maxConcurrent < 1)
    throw new RangeError(`${field}.maxConcurrent: must be an integer ≥ 1, got ${c.maxConcurrent}`);
  if (!Number.isInteger(c.maxQueue) || c.maxQueue < 0)
    throw new RangeError(`${field}.maxQueue: must be an integer ≥ 0, got ${c.maxQueue}`);
  if (!(c.maxQueueWaitMs >= 0))
    throw new RangeError(`${field}.maxQueueWaitMs: must be ≥ 0, got ${c.maxQueueWaitMs}`);
  return c;
}

export class ConcurrencyLimiter<W> {
  readonly config: LimiterConfig;
  #inFlight = 0;
  /** Insertion-ordered: the first key is the oldest waiter. */
  readonly #queue = new Map<W, Entry>();

  constructor(config: LimiterConfig) {
    this.config = validateLimiterConfig(config);
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get queued(): number {
    return this.#queue.size;
  }

  /** Free slots right now (a hedge attempt only runs when one is free: it never queues). */
  get available(): number {
    return this.#queue.size > 0 ? 0 : Math.max(0, this.config.maxConcurrent - this.#inFlight);
  }

  /**
   * The fast path of `admit`: takes a slot and returns true when one is free and nobody waits (the
   * same condition as `admit`'s "run"), else false and nothing changes. No allocation.
   */
  tryRun(): boolean {
    if (this.#queue.size === 0 && this.#inFlight < this.config.maxConcurrent) {
      this.#inFlight++;
      return true;
    }
    return false;
  }

  /**
   * A call arrives at `now` with its deadline (absolute ms, Infinity for none). `queue: false` means
   * run now or be refused (hedges). A waiter already queued is not admitted twice.
   */
  admit(waiter: W, now: number, deadline: number, queue = true): Admission {
    if (this.#queue.size === 0 && this.#inFlight < this.config.maxConcurrent) {
      this.#inFlight++;
      return RUN;
    }
    const { maxConcurrent, maxQueue, maxQueueWaitMs } = this.config;
    if (!queue || this.#queue.size >= maxQueue) {
      return {
        kind: "reject",
        message:
          `roster client: concurrency limit reached: ${this.#inFlight} calls in flight (limit ${maxConcurrent}) ` +
          `and ${this.#queue.size} waiting (queue limit ${maxQueue})${queue ? "" : "; this attempt may not wait"}`,
      };
    }
    if (deadline <= now) {
      return {
        kind: "reject",
        message: `roster client: concurrency limit reached (${maxConcurrent} in flight) and the call's deadline has passed`,
      };
    }
    const byWait = now + maxQueueWaitMs;
    const expiresAt = Math.min(deadline, byWait);
    if (this.#queue.has(waiter)) throw new Error("a waiter is already queued");
    this.#queue.set(waiter, { enqueuedAt: now, expiresAt, byDeadline: deadline <= byWait });
    return { kind: "queued", expiresAt };
  }

  /**
   * A slot is given back at `now`. Returns the oldest waiter, which now owns that slot, or undefined
   * (the slot is free). Waiters whose wait already ended are skipped: the owner's timer fails them.
   */
  release(now: number): W | undefined {
    if (this.#queue.size === 0) {
      if (this.#inFlight === 0) throw new Error("release without a slot");
      this.#inFlight--;
      return undefined;
    }
    for (const [waiter, entry] of this.#queue) {
      if (entry.expiresAt <= now) continue;
      this.#queue.delete(waiter);
      return waiter; // the slot passes over: #inFlight unchanged
    }
    if (this.#inFlight === 0) throw new Error("release without a slot");
    this.#inFlight--;
    return undefined;
  }

  /** The caller gave up while waiting. Returns whether it was still queued. */
  cancel(waiter: W): boolean {
    return this.#queue.delete(waiter);
  }

  /**
   * The owner's timer for `waiter` fired at `now`: the message to fail it with, or undefined when it
   * is no longer queued (it got a slot or was cancelled) or its time is not up yet.
   */
  expire(waiter: W, now: number): string | undefined {
    const entry = this.#queue.get(waiter);
    if (entry === undefined || entry.expiresAt > now) return undefined;
    this.#queue.delete(waiter);
    const waited = Math.round(now - entry.enqueuedAt);
    const why = entry.byDeadline
      ? "the call's deadline was reached"
      : `the queue wait limit (${this.config.maxQueueWaitMs} ms) was reached`;
    return (
      `roster client: concurrency limit reached: waited ${waited} ms for one of ${this.config.maxConcurrent} ` +
      `call slots and ${why}`
    );
  }
}

const RUN: Admission = { kind: "run" };
