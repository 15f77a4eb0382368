import type { Clock } from "../../core/clock.ts";
import type { CallDone, CallOutcome, LoadTracker } from "../../core/load/load-tracker.ts";

/**
 * The LoadTracker side of one grpc-js call, from its pick to its end.
 *
 * grpc-js calls a pick's `onCallStarted` only once the call's credentials metadata is ready (a promise,
 * so at least a microtask after the pick), and it may drop a pick without a word: the call was
 * cancelled while the credentials were generated, or the subchannel stopped being READY and the call
 * picks again (load-balancing-call.ts, `doPick`). Neither hook runs then.
 *
 * Counting a call only from `onCallStarted` would leave every pick of a synchronous burst (a loop
 * that starts 100 calls) looking at the same loads, so least_request and peak_ewma would spread that
 * burst at random. So the load is taken at the pick (`reserve`) — the next pick already sees it — and
 * a reservation not confirmed by `onCallStarted` before the next macrotask is released as "cancelled"
 * (`sweep`, one setImmediate per burst). A call whose credentials took longer than that (an async
 * token fetch) is counted again from its `onCallStarted`, so nothing leaks and nothing is lost.
 */
export type CallState = "reserved" | "started" | "ended" | "released";

export class TrackedCall {
  state: CallState = "reserved";
  #done: CallDone;
  readonly #load: LoadTracker;
  readonly #clock: Clock;

  constructor(load: LoadTracker, clock: Clock) {
    this.#load = load;
    this.#clock = clock;
    this.#done = load.begin(clock.now());
  }

  /** grpc-js started the call on the picked subchannel. */
  started(): void {
    if (this.state === "released") this.#done = this.#load.begin(this.#clock.now());
    if (this.state === "reserved" || this.state === "released") this.state = "started";
  }

  /** The call's status arrived. Only a started call ends; a late end of anything else is ignored. */
  ended(outcome: CallOutcome): void {
    if (this.state !== "started") return;
    this.state = "ended";
    this.#done(this.#clock.now(), outcome);
  }

  /** Releases a reservation that was never confirmed; true when it was. */
  release(): boolean {
    if (this.state !== "reserved") return false;
    this.state = "released";
    this.#done(this.#clock.now(), "cancelled");
    return true;
  }
}

/**
 * Collects the reservations of one burst and releases the unconfirmed ones on the next macrotask.
 * `schedule` is setImmediate in production; tests pass their own.
 */
export class ReservationSweeper {
  #pending: TrackedCall[] = [];
  #scheduled = false;
  readonly #schedule: (fn: () => void) => void;
  /** Reservations released so far (picks grpc-js dropped); for tests and diagnostics. */
  released = 0;

  constructor(schedule: (fn: () => void) => void = (fn) => setImmediate(fn)) {
    this.#schedule = schedule;
  }

  add(call: TrackedCall): void {
    this.#pending.push(call);
    if (!this.#scheduled) {
      this.#scheduled = true;
      this.#schedule(this.sweep);
    }
  }

  readonly sweep = (): void => {
    this.#scheduled = false;
    const pending = this.#pending;
    this.#pending = [];
    for (const call of pending) if (call.release()) this.released++;
  };
}

/** How a call's final status counts for its backend's load: OK a success, CANCELLED the caller's doing. */
export function outcomeOf(code: number): CallOutcome {
  return code === 0 ? "success" : code === 1 ? "cancelled" : "failure";
}
