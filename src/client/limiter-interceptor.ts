import * as grpc from "@grpc/grpc-js";
import { ConcurrencyLimiter, type LimiterConfig } from "./limiter.ts";

/**
 * The concurrency limit on the grpc-js side: timers, statuses, and the slot of each call.
 *
 * `LimiterGate` is the part every caller shares: `acquire` runs a call at once when a slot is free
 * (no allocation, no timer: the common case), else queues it with a timer for the end of its wait,
 * refuses it (RESOURCE_EXHAUSTED with the limiter's message), or fails it when its wait ends.
 * `createClient`'s unary methods call it directly around the grpc-js call (no interceptor on their
 * path); the interceptor below wraps it for streaming methods and for any grpc-js client
 * (`new Client(addr, creds, { interceptors: [limiterInterceptor(limiter)] })`).
 *
 * The interceptor: a call past the limit waits before its start reaches the channel (grpc-js lets an
 * interceptor's `start` continue later; messages sent meanwhile are held by grpc-js's
 * InterceptingCall); when its wait ends it fails with RESOURCE_EXHAUSTED and the limiter's message,
 * and the channel call under it is cancelled so grpc-js forgets it. A call cancelled while waiting
 * leaves the queue and ends CANCELLED.
 *
 * Two call options of the interceptor: `rosterNoQueue: true` runs the call only if a slot is free
 * now; `rosterOnStart` is called when the call leaves the queue for the channel.
 */
export interface ClientLimiter {
  readonly limiter: ConcurrencyLimiter<Waiter>;
  readonly gate: LimiterGate;
  readonly interceptor: grpc.Interceptor;
}

/** One call waiting for a slot. */
export interface Waiter {
  grant(): void;
}

export interface LimiterCallOptions {
  rosterNoQueue?: boolean;
  rosterOnStart?: () => void;
}

/** setTimeout's longest delay; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Node timers may fire up to a millisecond early; grpc-js's deadline timer was set before ours. */
const DEADLINE_SLACK_MS = 2;

export const CANCELLED_WHILE_WAITING = "Cancelled on client while waiting for a concurrency slot";

function deadlineMs(deadline: grpc.Deadline | undefined): number {
  if (deadline === undefined) return Infinity;
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/** How a call that did not get a slot at once ends: its code and details. */
export type FailSlot = (code: grpc.status, details: string) => void;

/**
 * A call that did not run at once: queued (until `grant`, its timer, or `cancel`) or refused.
 * `fail` is never called synchronously inside `acquire`.
 */
export class SlotWait implements Waiter {
  #state: "waiting" | "done" = "waiting";
  #timer: NodeJS.Timeout | undefined;
  readonly #gate: LimiterGate;
  readonly #since: number;
  readonly #deadline: number;
  readonly #run: () => void;
  readonly #fail: FailSlot;

  constructor(gate: LimiterGate, since: number, deadline: number, run: () => void, fail: FailSlot) {
    this.#gate = gate;
    this.#since = since;
    this.#deadline = deadline;
    this.#run = run;
    this.#fail = fail;
  }

  /** True while the call is in the queue. */
  get waiting(): boolean {
    return this.#state === "waiting";
  }

  grant(): void {
    if (this.#state !== "waiting") {
      this.#gate.release(); // not ours any more: pass the slot on
      return;
    }
    this.#state = "done";
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    // On a plain grpc-js channel the call's deadline timer runs from its creation and ends it unheard
    // before it starts: a slot that comes too late is passed on.
    const now = Date.now();
    if (now >= this.#deadline - DEADLINE_SLACK_MS) {
      this.#fail(
        grpc.status.RESOURCE_EXHAUSTED,
        `roster client: concurrency limit reached: waited ${now - this.#since} ms for one of ` +
          `${this.#gate.limiter.config.maxConcurrent} call slots and the call's deadline was reached`,
      );
      this.#gate.release();
      return;
    }
    this.#run();
  }

  /** The caller gave up: out of the queue, failed CANCELLED. False when it was not waiting. */
  cancel(): boolean {
    if (this.#state !== "waiting") return false;
    this.#state = "done";
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#gate.limiter.cancel(this);
    this.#fail(grpc.status.CANCELLED, CANCELLED_WHILE_WAITING);
    return true;
  }

  /** @internal */
  refuse(message: string): void {
    this.#state = "done";
    process.nextTick(this.#fail, grpc.status.RESOURCE_EXHAUSTED, message);
  }

  /** @internal No deadline and no queue wait limit: the call waits as long as it takes. */
  arm(expiresAt: number): void {
    if (expiresAt === Infinity) return;
    this.#timer = setTimeout(
      this.#onExpiry,
      Math.min(MAX_TIMER_MS, Math.max(1, expiresAt - Date.now())),
      expiresAt,
    );
  }

  readonly #onExpiry = (expiresAt: number): void => {
    this.#timer = undefined;
    if (this.#state !== "waiting") return;
    const message = this.#gate.limiter.expire(this, Date.now());
    if (message !== undefined) {
      this.#state = "done";
      this.#fail(grpc.status.RESOURCE_EXHAUSTED, message);
    } else this.arm(expiresAt); // fired early, or a far deadline in steps
  };
}

export class LimiterGate {
  readonly limiter: ConcurrencyLimiter<Waiter>;

  constructor(limiter: ConcurrencyLimiter<Waiter>) {
    this.limiter = limiter;
  }

  /**
   * A call wants a slot. When one is free now, `run` is called before this returns and the result is
   * undefined; otherwise the call waits (`run` later, or `fail`) or is refused (`fail` on the next
   * tick), and the SlotWait returned lets the caller cancel it. A call that ran gives its slot back
   * with exactly one `release()`.
   */
  acquire(deadline: number, queue: boolean, run: () => void, fail: FailSlot): SlotWait | undefined {
    const limiter = this.limiter;
    if (limiter.tryRun()) {
      run();
      return undefined;
    }
    const now = Date.now();
    const w = new SlotWait(this, now, deadline, run, fail);
    const a = limiter.admit(w, now, deadline, queue);
    if (a.kind === "run") {
      run(); // not reached (tryRun said no), kept for the contract of admit
      return undefined;
    }
    if (a.kind === "reject") w.refuse(a.message);
    else w.arm(a.expiresAt);
    return w;
  }

  /** A running call ended: its slot goes to the oldest waiter, or back to the pool of slots. */
  release(): void {
    const limiter = this.limiter;
    // Nobody waiting (the common case): no clock read.
    (limiter.queued === 0 ? limiter.release(0) : limiter.release(Date.now()))?.grant();
  }
}

export function createClientLimiter(config: LimiterConfig): ClientLimiter {
  const limiter = new ConcurrencyLimiter<Waiter>(config);
  const gate = new LimiterGate(limiter);

  const interceptor: grpc.Interceptor = (options, nextCall) => {
    const inner = nextCall(options);
    const own = options as LimiterCallOptions;
    let running = false;
    let wait: SlotWait | undefined;

    const requester: grpc.Requester = {
      start(metadata, listener, next) {
        const fail: FailSlot = (code, details) => {
          // The channel call never started: cancelling it only ends it inside grpc-js (no listener).
          inner.cancelWithStatus(code, details);
          // Never synchronously inside start or cancel: grpc-js itself reports statuses on a later tick.
          process.nextTick(() => listener.onReceiveStatus({ code, details, metadata: new grpc.Metadata() }));
        };
        const startNow = () => {
          running = true;
          own.rosterOnStart?.();
          next(metadata, {
            onReceiveStatus(status, nextStatus) {
              if (running) {
                running = false;
                gate.release();
              }
              nextStatus(status);
            },
          });
        };
        wait = gate.acquire(deadlineMs(options.deadline), own.rosterNoQueue !== true, startNow, fail);
      },
      cancel(next) {
        if (wait?.cancel() === true) return;
        next();
      },
    };
    return new grpc.InterceptingCall(inner, requester);
  };
  return { limiter, gate, interceptor };
}
