import type { Clock, Random } from "./clock.ts";
import { ConfigError } from "./errors.ts";
import type { LoadTracker } from "./load/load-tracker.ts";
import { PendingRequests } from "./load/pending-requests.ts";
import type { Candidate, Picker } from "./picker.ts";

/**
 * A load-balancing policy instance for one cluster. `update` is called by the channel (the single
 * owner of mutable state) whenever the ready set changes and returns the picker to use from now on.
 * Never called concurrently; may keep state across updates (e.g. a round-robin position).
 * `candidates` is never empty: the channel answers queue/fail itself when nothing is ready.
 */
export interface Balancer {
  update(candidates: readonly Candidate[]): Picker;
  /**
   * The weight each backend has in the current picker, for /status (weighted_round_robin: from load
   * reports). Policies without per-backend weights leave it out.
   */
  weights?(): ReadonlyMap<string, number>;
}

/**
 * What a policy asks of its backends' load reports (ORCA out-of-band, `StreamCoreMetrics`): the
 * report interval to request; absent: the ORCA client's default. A policy that declares this gets the
 * reports on by default (proxy/lb.ts) and reads them from its candidates (`LoadReportCarrier`).
 */
export interface LoadReportRequest {
  readonly reportIntervalMs?: number;
}

export interface BalancerDeps {
  readonly clock: Clock;
  readonly random: Random;
}

/**
 * One policy: its gRPC service-config name, a config parser that validates and fills defaults
 * (throwing ConfigError naming the field under `policy.`), and a constructor.
 *
 * `createLoadTracker`, when present, makes the LoadTracker of one backend — the policy chooses how
 * load is measured (peak_ewma wants latency), the channel owns the trackers. Without it, backends get
 * `PendingRequests` (calls in flight).
 */
export interface BalancerFactory<C = unknown> {
  readonly name: string;
  parseConfig(raw: unknown): C;
  create(config: C, deps: BalancerDeps): Balancer;
  createLoadTracker?(config: C, deps: BalancerDeps): LoadTracker;
  /** Present when the policy reads backend load reports; answers undefined when this config does not. */
  loadReports?(config: C): LoadReportRequest | undefined;
}

/**
 * A parsed policy choice, ready to create balancers from. The channel calls `createLoadTracker` once
 * per backend when the backend is added, and keeps that tracker for the backend's life (load survives
 * picker swaps); a policy change means new trackers.
 */
export interface PolicySpec {
  readonly name: string;
  create(deps: BalancerDeps): Balancer;
  createLoadTracker(deps: BalancerDeps): LoadTracker;
  /** Set when the policy, as configured, reads backend load reports (ORCA). */
  readonly loadReports?: LoadReportRequest;
}

export class BalancerRegistry {
  readonly #factories = new Map<string, BalancerFactory<unknown>>();

  register<C>(factory: BalancerFactory<C>): this {
    if (this.#factories.has(factory.name)) throw new Error(`policy ${factory.name} is registered twice`);
    this.#factories.set(factory.name, factory as BalancerFactory<unknown>);
    return this;
  }

  names(): string[] {
    return [...this.#factories.keys()].sort();
  }

  /** Validates `name` and its config; throws ConfigError naming `field`. */
  resolve(name: string, rawConfig: unknown, field = "policy"): PolicySpec {
    const factory = this.#factories.get(name);
    if (factory === undefined) {
      throw new ConfigError(field, `unknown policy "${name}"; known policies: ${this.names().join(", ")}`);
    }
    let config: unknown;
    try {
      config = factory.parseConfig(rawConfig ?? {});
    } catch (err) {
      // Policies name their fields under "policy"; re-root them where this policy was configured.
      if (err instanceof ConfigError && field !== "policy" && err.field.startsWith("policy")) {
        throw new ConfigError(field + err.field.slice("policy".length), err.detail);
      }
      throw err;
    }
    const makeTracker = factory.createLoadTracker;
    const loadReports = factory.loadReports?.(config);
    return {
      name,
      ...(loadReports !== undefined ? { loadReports } : {}),
      create: (deps) => factory.create(config, deps),
      createLoadTracker:
        makeTracker === undefined
          ? () => new PendingRequests()
          : (deps) => makeTracker.call(factory, config, deps),
    };
  }
}
