import type { CallDone, LoadTracker } from "./load-tracker.ts";

/** Cost = calls in flight. The load measure of gRFC A48 least_request and Envoy's LEAST_REQUEST. */
export class PendingRequests implements LoadTracker {
  #inFlight = 0;

  get inFlight(): number {
    return this.#inFlight;
  }

  cost(_now: number): number {
    return this.#inFlight;
  }

  begin(_now: number): CallDone {
    this.#inFlight++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#inFlight--;
    };
  }
}
