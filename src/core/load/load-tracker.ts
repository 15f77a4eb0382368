/**
 * "How loaded is this backend" kept apart from "how to choose" (DESIGN.md, convention 3).
 *
 * Contract: synchronous, no I/O. `begin(now)` is called when a call is assigned to the backend and
 * returns the completion callback, which must be called exactly once when the call's stream ends
 * (trailers received, reset, or cancelled) — extra calls are ignored. Owned by the endpoint pool and
 * shared by every picker snapshot, so load survives picker swaps.
 */
export interface LoadTracker {
  /** Lower is better. Comparable only between trackers of the same kind. */
  cost(now: number): number;
  /** Calls currently in flight on this backend. */
  readonly inFlight: number;
  begin(now: number): CallDone;
}

export type CallOutcome = "success" | "failure" | "cancelled";

export type CallDone = (now: number, outcome: CallOutcome) => void;
