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

/**
 * A backend's latest load report (ORCA `OrcaLoadReport`), as the channel puts it on a Candidate for
 * policies that weigh backends by load (weighted_round_robin). Values are as the backend sent them
 * (already checked finite and ≥ 0 by the ORCA client, but policies judge them again).
 */
export interface LoadReport {
  /** When it arrived, on the balancer's clock (`BalancerDeps.clock`). */
  readonly at: number;
  /** Calls per second (`rps_fractional`). */
  readonly qps: number;
  /** Calls ending in error per second (`eps`). */
  readonly eps: number;
  readonly cpuUtilization: number;
  readonly applicationUtilization: number;
}

/**
 * What the channel may add to a Candidate: its latest load report. Like `SkillCarrier` (resume), it is
 * replaced by a new object per report and never mutated, so a policy knows a report is new by its
 * identity. Absent: no report yet.
 */
export interface LoadReportCarrier {
  readonly loadReport?: LoadReport | undefined;
}

/** The load report carried by `candidate`, if any. */
export function loadReportOf(candidate: Candidate): LoadReport | undefined {
  const r = (candidate as Candidate & LoadReportCarrier).loadReport;
  return typeof r === "object" && r !== null ? r : undefined;
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
