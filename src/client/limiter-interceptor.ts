import * as grpc from "@grpc/grpc-js";
import { ConcurrencyLimiter, type LimiterConfig } from "./limiter.ts";

/**
 * The concurrency limit as a grpc-js client interceptor, usable on any grpc-js client
 * (`new Client(addr, creds, { interceptors: [limiterInterceptor(limiter)] })`). A call past the limit
 * waits before its start reaches the channel (grpc-js lets an interceptor's `start` continue later;
 * messages sent meanwhile are held by grpc-js's InterceptingCall); when its wait ends it fails with
 * RESOURCE_EXHAUSTED and the limiter's message, and the channel call under it is cancelled so grpc-js
 * forgets it. A call cancelled while waiting leaves the queue and ends CANCELLED.
 *
 * Two call options of our own: `rosterNoQueue: true` (a hedge attempt) runs only if a slot is free
 * now; `rosterOnStart` is called when the call leaves the queue for the channel (hedging times an
 * attempt from there, not from the time it spent waiting).
 */
export interface ClientLimiter {
  readonly limiter: ConcurrencyLimiter<Waiter>;
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

function deadlineMs(deadline: grpc.Deadline | undefined): number {
  if (deadline === undefined) return Infinity;
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

export function createClientLimiter(config: LimiterConfig): ClientLimiter {
  const limiter = new ConcurrencyLimiter<Waiter>(config);
  const release = () => {
    const next = limiter.release(Date.now());
    next?.grant();
  };

  const interceptor: grpc.Interceptor = (options, nextCall) => {
    const inner = nextCall(options);
    const own = options as LimiterCallOptions;
    const noQueue = own.rosterNoQueue === true;
    // The call's states: before start, waiting (queued), running (owns a slot), done.
    let state: "new" | "waiting" | "running" | "done" = "new";
    let waiter: Waiter | undefined;
    let timer: NodeJS.Timeout | undefined;
    let outer: grpc.InterceptingListener | undefined;

    const fail = (code: grpc.status, details: string) => {
      state = "done";
      if (timer !== undefined) clearTimeout(timer);
      // The channel call never started: cancelling it only ends it inside grpc-js (no listener).
      inner.cancelWithStatus(code, details);
      // Never synchronously inside start or cancel: grpc-js itself reports statuses on a later tick.
      const listener = outer;
      process.nextTick(() => listener?.onReceiveStatus({ code, details, metadata: new grpc.Metadata() }));
    };

    const requester: grpc.Requester = {
      start(metadata, listener, next) {
        outer = listener as grpc.InterceptingListener;
        const startNow = () => {
          state = "running";
          own.rosterOnStart?.();
          next(metadata, {
            onReceiveStatus(status, nextStatus) {
              if (state === "running") {
                state = "done";
                release();
              }
              nextStatus(status);
            },
          });
        };
        const now = Date.now();
        const deadline = deadlineMs(options.deadline);
        const w: Waiter = {
          grant() {
            if (state !== "waiting") {
              release(); // not ours any more: pass the slot on
              return;
            }
            if (timer !== undefined) clearTimeout(timer);
            // On a plain grpc-js channel the call's deadline timer runs from its creation and ends it
            // unheard before it starts: a slot that comes too late is passed on.
            if (Date.now() >= deadline - DEADLINE_SLACK_MS) {
              fail(
                grpc.status.RESOURCE_EXHAUSTED,
                `roster client: concurrency limit reached: waited ${Date.now() - now} ms for one of ` +
                  `${limiter.config.maxConcurrent} call slots and the call's deadline was reached`,
              );
              release();
              return;
            }
            startNow();
          },
        };
        const a = limiter.admit(w, now, deadline, !noQueue);
        if (a.kind === "run") {
          startNow();
        } else if (a.kind === "reject") {
          fail(grpc.status.RESOURCE_EXHAUSTED, a.message);
        } else {
          state = "waiting";
          waiter = w;
          const expiresAt = a.expiresAt;
          // No deadline and no queue wait limit: the call waits for a slot (or a cancel) as long as it takes.
          const arm = () => {
            if (expiresAt === Infinity) return;
            timer = setTimeout(onExpiry, Math.min(MAX_TIMER_MS, Math.max(1, expiresAt - Date.now())));
          };
          const onExpiry = () => {
            const message = limiter.expire(w, Date.now());
            if (message !== undefined) fail(grpc.status.RESOURCE_EXHAUSTED, message);
            else if (state === "waiting") arm(); // fired early, or a far deadline in steps
          };
          arm();
        }
      },
      cancel(next) {
        if (state === "waiting" && waiter !== undefined) {
          limiter.cancel(waiter);
          fail(grpc.status.CANCELLED, "Cancelled on client while waiting for a concurrency slot");
          return;
        }
        next();
      },
    };
    return new grpc.InterceptingCall(inner, requester);
  };
  return { limiter, interceptor };
}
