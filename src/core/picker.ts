import type { Endpoint } from "./endpoint.ts";
import type { LoadTracker } from "./load/load-tracker.ts";
import type { CallStatus } from "./status.ts";

/**
 * A backend that is ready to take calls, as the channel hands it to a balancer. Candidates are
 * owned by the channel; `load` is shared across picker snapshots.
 */
export interface Candidate {
  readonly key: string;
  readonly endpoint: Endpoint;
  readonly load: LoadTracker;
}

/** What a pick may look at. Built once per call attempt by the data path. */
export interface PickContext {
  /** Full method path, "/pkg.Service/Method". */
  readonly path: string;
  /**
   * Request metadata lookup (lower-case names; first value). The `:authority` pseudo-header is
   * answered too (ring_hash's `{ authority: true }` hashes it).
   */
  header(name: string): string | undefined;
  /** Keys already tried by this call (transparent retry). Policies avoid them when any other remains. */
  readonly exclude?: ReadonlySet<string>;
}

/**
 * `pick`: start the call on `candidate` (the caller calls `candidate.load.begin`).
 * `queue`: nothing is ready yet but something may be soon; wait for the next picker.
 * `fail`: fail the call now with this status (e.g. UNAVAILABLE "no backend is ready: …").
 */
export type PickResult =
  | { kind: "pick"; candidate: Candidate }
  | { kind: "queue" }
  | { kind: "fail"; status: CallStatus };

/**
 * An immutable snapshot of a balancer's decision state. `pick` is synchronous, total and never
 * throws; it does no I/O and never calls back. Pickers may keep private counters (round-robin index).
 */
export interface Picker {
  pick(ctx: PickContext): PickResult;
}

/** A picker that answers the same result for every call. */
export function constantPicker(result: PickResult): Picker {
  return { pick: () => result };
}

/** Candidates not in `exclude`, or all of them when every one is excluded. */
export function withoutExcluded(
  candidates: readonly Candidate[],
  exclude: ReadonlySet<string> | undefined,
): readonly Candidate[] {
  if (exclude === undefined || exclude.size === 0) return candidates;
  const rest = candidates.filter((c) => !exclude.has(c.key));
  return rest.length > 0 ? rest : candidates;
}
