import type * as grpc from "@grpc/grpc-js";
import type { experimental } from "@grpc/grpc-js";
import type { Balancer, BalancerDeps, BalancerRegistry, PolicySpec } from "../../core/balancer.ts";
import type { Endpoint as CoreEndpoint } from "../../core/endpoint.ts";
import { formatAddress } from "../../core/endpoint.ts";
import { ConfigError } from "../../core/errors.ts";
import type { LoadTracker } from "../../core/load/load-tracker.ts";
import type { Picker as CorePicker, PickContext } from "../../core/picker.ts";
import { createOrcaClient, type OrcaWatcher } from "../../health/orca-client.ts";
import { outcomeOf, ReservationSweeper, TrackedCall } from "./call-load.ts";
import { ClientCandidate, PER_CALL_REPORT_TRAILER } from "./load-reports.ts";

/**
 * Roster's policies as grpc-js load-balancing policies. One adapter for every policy: the policy
 * itself is the `src/core` Balancer/Picker/LoadTracker that `roster lb` runs, resolved from the core
 * registry by name; this file only does what grpc-js needs around it.
 *
 *   resolver endpoints ──▶ one LeafLoadBalancer per endpoint (grpc-js's pick_first on its addresses:
 *                          connects, reconnects with backoff, reports READY/CONNECTING/TF)
 *   READY leaves ──▶ their ClientCandidates ──▶ core Balancer.update() ──▶ core Picker
 *   grpc-js pick(args) ──▶ core pick (metadata as the header lookup) ──▶ the leaf's own pick
 *                          (its subchannel) + onCallStarted / onCallEnded ──▶ LoadTracker, ORCA trailer
 *
 * Aggregate state, as grpc-js's round_robin has it: READY when any endpoint is READY, else CONNECTING
 * when any connects, else TRANSIENT_FAILURE (with the last error) when any failed, else IDLE; every
 * endpoint is kept connected (an IDLE leaf is told to exit idle). A picker is pushed whenever the ready
 * set changes; the core balancer keeps its state (round-robin cursor, résumé LRU, WRR weights) across
 * pickers, and each endpoint keeps its LoadTracker while it stays in the resolver's list. A changed
 * policy config makes a new balancer and new trackers (as the channel does on a policy change).
 *
 * Load reports (policies that read them: weighted_round_robin, resume): per-call reports from the
 * `endpoint-load-metrics-bin` trailer of every call, and out-of-band ORCA streams
 * (`health/orca-client.ts`, one small HTTP/2 connection per endpoint beside grpc-js's own) when the
 * policy as configured asks for them (`PolicySpec.loadReports`: resume always, weighted_round_robin
 * unless `enableOobLoadReport: false`).
 *
 * What the client cannot give the core policies: `PickContext.path` (grpc-js does not pass the method
 * to pickers; no built-in policy reads it) and `:authority` (a channel has one authority, so
 * ring_hash's `{ authority: true }` would put every call on one backend; metadata headers work).
 */

/** A Roster policy registered in grpc-js: its service-config name and the core policy behind it. */
export interface RosterPolicyName {
  /** The name in `loadBalancingConfig`, e.g. "roster_peak_ewma". */
  readonly grpcName: string;
  /** The core registry's name, e.g. "peak_ewma". */
  readonly coreName: string;
  /** True when the policy reads load reports (per-call trailers are decoded for it). */
  readonly readsLoadReports: boolean;
}

export const ROSTER_POLICIES: readonly RosterPolicyName[] = [
  { grpcName: "roster_round_robin", coreName: "round_robin", readsLoadReports: false },
  { grpcName: "roster_least_request", coreName: "least_request", readsLoadReports: false },
  { grpcName: "roster_peak_ewma", coreName: "peak_ewma", readsLoadReports: false },
  { grpcName: "roster_ring_hash", coreName: "ring_hash", readsLoadReports: false },
  { grpcName: "roster_weighted_round_robin", coreName: "weighted_round_robin", readsLoadReports: true },
  { grpcName: "roster_resume", coreName: "resume", readsLoadReports: true },
];

/** A parsed `{ "roster_x": {...} }` entry: the core PolicySpec and the raw JSON it came from. */
export interface RosterLbConfig extends experimental.TypedLoadBalancingConfig {
  readonly policy: RosterPolicyName;
  readonly raw: object;
  readonly spec: PolicySpec;
}

/** What the adapter needs from the outside: grpc-js (the caller's copy), the core registry, time. */
export interface AdapterContext {
  readonly grpc: typeof grpc;
  readonly registry: BalancerRegistry;
  readonly deps: BalancerDeps;
  /** Makes the ORCA out-of-band client for a report interval; tests may replace it. */
  readonly orca?: (reportIntervalMs: number | undefined) => OrcaWatcher;
}

/** Parses one policy's JSON config with the core parser; throws ConfigError naming `grpcName.field`. */
export function parsePolicyConfig(
  ctx: AdapterContext,
  policy: RosterPolicyName,
  raw: unknown,
): RosterLbConfig {
  const json = raw ?? {};
  if (typeof json !== "object" || Array.isArray(json)) {
    throw new ConfigError(
      policy.grpcName,
      `must be an object, got ${Array.isArray(json) ? "an array" : typeof json}`,
    );
  }
  const spec = ctx.registry.resolve(policy.coreName, json, policy.grpcName);
  return {
    policy,
    raw: json,
    spec,
    getLoadBalancerName: () => policy.grpcName,
    toJsonObject: () => ({ [policy.grpcName]: json }),
  };
}

/** What `registerLoadBalancerType` takes as the config class (grpc-js does not export the type). */
export type ConfigClass = Parameters<typeof experimental.registerLoadBalancerType>[2];

/** The grpc-js config class of one policy (grpc-js calls its static `createFromJson`). */
export function configClass(
  ctx: AdapterContext,
  policy: RosterPolicyName,
  onError: (err: Error) => void,
): ConfigClass {
  // grpc-js only calls the static `createFromJson` of a type that is not its default, so an object does.
  const type = {
    createFromJson(obj: unknown): RosterLbConfig {
      try {
        return parsePolicyConfig(ctx, policy, obj);
      } catch (err) {
        // grpc-js logs this at DEBUG only and falls back to the next config (or pick_first): say it.
        onError(err as Error);
        throw err;
      }
    },
  };
  return type as unknown as ConfigClass;
}

/** A core Candidate that knows its grpc-js leaf. */
class LeafCandidate extends ClientCandidate {
  readonly leaf: experimental.LeafLoadBalancer;
  constructor(endpoint: CoreEndpoint, load: LoadTracker, leaf: experimental.LeafLoadBalancer) {
    super(endpoint, load);
    this.leaf = leaf;
  }
}

interface Child {
  readonly key: string;
  readonly leaf: experimental.LeafLoadBalancer;
  candidate: LeafCandidate;
  orca: AbortController | undefined;
}

/** The core endpoint of a grpc-js endpoint: its key is the formatted address(es), as `roster lb` keys them. */
export function coreEndpointOf(endpoint: experimental.Endpoint): CoreEndpoint {
  const addresses = endpoint.addresses.map((a) =>
    "path" in a
      ? ({ kind: "unix", path: a.path } as const)
      : ({ kind: "tcp", host: a.host, port: a.port } as const),
  );
  const first = addresses[0] ?? { kind: "unix", path: "" };
  return {
    key: addresses.map(formatAddress).join(","),
    address: first,
    weight: 1,
    labels: {},
  };
}

export type LoadBalancerClass = new (helper: experimental.ChannelControlHelper) => experimental.LoadBalancer;

/** The grpc-js LoadBalancer class of one policy. */
export function loadBalancerClass(ctx: AdapterContext, policy: RosterPolicyName): LoadBalancerClass {
  const { grpc: g } = ctx;
  const ConnectivityState = g.connectivityState;
  const {
    LeafLoadBalancer,
    QueuePicker,
    UnavailablePicker,
    createChildChannelControlHelper,
    PickResultType,
  } = g.experimental;
  const sweeper = new ReservationSweeper();

  /** The grpc-js face of a core picker. Reuses one PickContext: picks are synchronous. */
  class RosterPicker implements experimental.Picker {
    readonly #core: CorePicker;
    #metadata: grpc.Metadata | undefined;
    readonly #ctx: PickContext = {
      path: "",
      header: (name) => {
        if (name.startsWith(":") || this.#metadata === undefined) return undefined;
        const first = this.#metadata.get(name)[0];
        return typeof first === "string" ? first : undefined;
      },
    };

    constructor(core: CorePicker) {
      this.#core = core;
    }

    pick(args: experimental.PickArgs): experimental.PickResult {
      this.#metadata = args.metadata;
      let result: ReturnType<CorePicker["pick"]>;
      try {
        result = this.#core.pick(this.#ctx);
      } finally {
        this.#metadata = undefined;
      }
      if (result.kind === "queue") {
        return {
          pickResultType: PickResultType.QUEUE,
          subchannel: null,
          status: null,
          onCallStarted: null,
          onCallEnded: null,
        };
      }
      if (result.kind === "fail") {
        return {
          pickResultType: PickResultType.TRANSIENT_FAILURE,
          subchannel: null,
          status: { code: result.status.code, details: result.status.message, metadata: new g.Metadata() },
          onCallStarted: null,
          onCallEnded: null,
        };
      }
      const candidate = result.candidate as LeafCandidate;
      const childPick = candidate.leaf.getPicker().pick(args);
      if (childPick.pickResultType !== PickResultType.COMPLETE) return childPick;
      const call = new TrackedCall(candidate.load, ctx.deps.clock);
      sweeper.add(call);
      const childStarted = childPick.onCallStarted;
      const childEnded = childPick.onCallEnded;
      return {
        ...childPick,
        onCallStarted: () => {
          call.started();
          childStarted?.();
        },
        onCallEnded: (code, details, metadata) => {
          call.ended(outcomeOf(code));
          if (policy.readsLoadReports) {
            const report = metadata.get(PER_CALL_REPORT_TRAILER);
            if (report.length > 0) candidate.applyTrailer(report[0], ctx.deps.clock.now());
          }
          childEnded?.(code, details, metadata);
        },
      };
    }
  }

  class RosterLoadBalancer implements experimental.LoadBalancer {
    readonly #helper: experimental.ChannelControlHelper;
    readonly #children = new Map<string, Child>();
    #config: RosterLbConfig | undefined;
    #configKey = "";
    #balancer: Balancer | undefined;
    #orca: OrcaWatcher | undefined;
    #state: grpc.connectivityState = ConnectivityState.IDLE;
    #ready: readonly LeafCandidate[] = [];
    #paused = false;
    #lastError: string | null = null;

    constructor(helper: experimental.ChannelControlHelper) {
      this.#helper = helper;
    }

    updateAddressList(
      endpoints: experimental.StatusOr<experimental.Endpoint[]>,
      lbConfig: experimental.TypedLoadBalancingConfig,
      options: grpc.ChannelOptions,
      resolutionNote: string,
    ): boolean {
      const config = lbConfig as RosterLbConfig;
      if (config.policy !== policy) return false;
      if (!endpoints.ok) {
        if (this.#children.size === 0) {
          this.#publish(
            ConnectivityState.TRANSIENT_FAILURE,
            new UnavailablePicker(endpoints.error),
            endpoints.error.details,
          );
        }
        return true;
      }
      if (endpoints.value.length === 0) {
        const message = `${policy.grpcName}: no addresses resolved. Resolution note: ${resolutionNote}`;
        this.#publish(
          ConnectivityState.TRANSIENT_FAILURE,
          new UnavailablePicker({ details: message }),
          message,
        );
        return false;
      }
      const configKey = JSON.stringify(config.raw);
      const newPolicy = this.#balancer === undefined || configKey !== this.#configKey;
      this.#config = config;
      this.#configKey = configKey;
      if (newPolicy) {
        this.#balancer = config.spec.create(ctx.deps);
        const interval = config.spec.loadReports;
        this.#orca =
          interval === undefined
            ? undefined
            : (ctx.orca ?? ((ms) => createOrcaClient(ms === undefined ? {} : { reportIntervalMs: ms })))(
                interval.reportIntervalMs,
              );
        this.#ready = [];
      }
      this.#paused = true;
      const seen = new Set<string>();
      for (const endpoint of endpoints.value) {
        const core = coreEndpointOf(endpoint);
        if (seen.has(core.key)) continue;
        seen.add(core.key);
        let child = this.#children.get(core.key);
        if (child === undefined) {
          let wasReady = false;
          const leaf = new LeafLoadBalancer(
            endpoint,
            createChildChannelControlHelper(this.#helper, {
              updateState: (state, _picker, errorMessage) => {
                // Re-resolve when this endpoint loses its connection (grpc-js's round_robin asks on any
                // child update while READY; the resolver is expected to rate-limit).
                if (wasReady && state !== ConnectivityState.READY) this.#helper.requestReresolution();
                wasReady = state === ConnectivityState.READY;
                if (errorMessage) this.#lastError = errorMessage;
                this.#recompute();
              },
            }),
            options,
            resolutionNote,
          );
          child = { key: core.key, leaf, candidate: this.#candidate(core, leaf), orca: undefined };
          this.#children.set(core.key, child);
          this.#watchOrca(child);
        } else if (newPolicy) {
          child.candidate = this.#candidate(core, child.leaf);
          this.#watchOrca(child);
        }
      }
      for (const [key, child] of this.#children) {
        if (seen.has(key)) child.leaf.startConnecting();
        else {
          child.orca?.abort();
          child.leaf.destroy();
          this.#children.delete(key);
        }
      }
      this.#paused = false;
      this.#recompute(true);
      return true;
    }

    #candidate(endpoint: CoreEndpoint, leaf: experimental.LeafLoadBalancer): LeafCandidate {
      return new LeafCandidate(endpoint, this.#config!.spec.createLoadTracker(ctx.deps), leaf);
    }

    #watchOrca(child: Child): void {
      child.orca?.abort();
      child.orca = undefined;
      const orca = this.#orca;
      if (orca === undefined) return;
      const abort = new AbortController();
      child.orca = abort;
      orca.watch(
        child.candidate.endpoint,
        abort.signal,
        (report) => {
          // The candidate of the moment: a policy change replaces it (and restarts this watch).
          if (this.#children.get(child.key) === child)
            child.candidate.applyReport(report, ctx.deps.clock.now(), false);
        },
        (detail) => g.experimental.trace(g.logVerbosity.DEBUG, "roster_lb", `ORCA ${child.key}: ${detail}`),
      );
    }

    #recompute(force = false): void {
      if (this.#paused || this.#balancer === undefined) return;
      const ready: LeafCandidate[] = [];
      let connecting = 0;
      let failed = 0;
      for (const child of this.#children.values()) {
        const state = child.leaf.getConnectivityState();
        if (state === ConnectivityState.READY) ready.push(child.candidate);
        else if (state === ConnectivityState.CONNECTING) connecting++;
        else if (state === ConnectivityState.TRANSIENT_FAILURE) failed++;
      }
      if (ready.length > 0) {
        const same =
          !force &&
          this.#state === ConnectivityState.READY &&
          ready.length === this.#ready.length &&
          ready.every((c, i) => c === this.#ready[i]);
        if (!same) {
          this.#ready = ready;
          this.#publish(ConnectivityState.READY, new RosterPicker(this.#balancer.update(ready)), null);
        }
      } else {
        this.#ready = [];
        if (connecting > 0) this.#publish(ConnectivityState.CONNECTING, new QueuePicker(this), null);
        else if (failed > 0) {
          const message = `${policy.grpcName}: no connection established. Last error: ${this.#lastError}`;
          this.#publish(
            ConnectivityState.TRANSIENT_FAILURE,
            new UnavailablePicker({ details: message }),
            message,
          );
        } else this.#publish(ConnectivityState.IDLE, new QueuePicker(this), null);
      }
      // Keep every endpoint connected, as round_robin does.
      for (const child of this.#children.values()) {
        if (child.leaf.getConnectivityState() === ConnectivityState.IDLE) child.leaf.exitIdle();
      }
    }

    #publish(state: grpc.connectivityState, picker: experimental.Picker, error: string | null): void {
      this.#state = state;
      this.#helper.updateState(state, picker, error);
    }

    exitIdle(): void {
      for (const child of this.#children.values()) {
        if (child.leaf.getConnectivityState() === ConnectivityState.IDLE) child.leaf.exitIdle();
      }
    }

    resetBackoff(): void {
      // The leaves' pick_first balancers own the backoff; grpc-js's round_robin does nothing here either.
    }

    destroy(): void {
      for (const child of this.#children.values()) {
        child.orca?.abort();
        child.leaf.destroy();
      }
      this.#children.clear();
      this.#ready = [];
      this.#balancer = undefined;
    }

    getTypeName(): string {
      return policy.grpcName;
    }

    /** Counters for tests and /status: per endpoint, calls in flight and reports taken. */
    endpoints(): Array<{ key: string; inFlight: number; reports: number; badReports: number }> {
      return [...this.#children.values()].map((c) => ({
        key: c.key,
        inFlight: c.candidate.load.inFlight,
        reports: c.candidate.reports,
        badReports: c.candidate.badReports,
      }));
    }
  }

  return RosterLoadBalancer;
}
