import { Channel, type ChannelEvent } from "../channel/channel.ts";
import type { BalancerDeps, PolicySpec } from "../core/balancer.ts";
import type { Address, Endpoint } from "../core/endpoint.ts";
import type { OutlierDetectionConfig } from "../core/health/outlier-detection.ts";
import { RetryThrottle, type RetryThrottleConfig } from "../core/retry-throttle.ts";
import { DnsDiscovery, type DnsDiscoveryEvent } from "../discovery/dns.ts";
import { EtcdDiscovery, type EtcdDiscoveryEvent } from "../discovery/etcd.ts";
import { StaticDiscovery } from "../discovery/static.ts";
import { type DiscoveryTarget, formatDiscoveryTarget } from "../discovery/target.ts";
import { createGrpcHealthChecker, type GrpcHealthOptions } from "../health/grpc-health.ts";
import { createOrcaClient, type OrcaClientOptions } from "../health/orca-client.ts";
import type { BackendConnectionOptions } from "../platform/backend-connection.ts";
import { FrameBackend } from "../platform/h2-backend.ts";
import { systemClock, systemRandom } from "../platform/system.ts";
import type { Classifier } from "./classify.ts";
import { startFrameProxyServer } from "./frame-server.ts";
import type { CallTarget, ForwardOptions, FrontLimits, ProxyServer } from "./proxy-options.ts";
import {
  createRouter,
  DEFAULT_CLUSTER,
  type RouteResult,
  type Router,
  type RoutingConfig,
} from "./routes.ts";

/** Defaults of the data path; documented in docs/configuration.md. */
export const defaultForwardSettings = {
  retryBufferBytes: 256 * 1024,
  maxAttempts: 5,
  queueTimeoutMs: 10_000,
} as const;

/** One cluster: its backends and the settings that are its own. */
export interface ClusterOptions {
  /** The static backends (ignored when `discovery` is set). */
  readonly backends: readonly Endpoint[];
  /**
   * Membership from an etcd prefix (discovery/etcd.ts) or a DNS name (discovery/dns.ts) instead of
   * `backends`: followed live; while the source cannot be reached the last-known members keep serving.
   */
  readonly discovery?: DiscoveryTarget;
  readonly policy: PolicySpec;
  /**
   * The policy's settings as written, compared by `reconfigure` to tell a changed policy from the
   * same one parsed again. Absent: the policy counts as unchanged while its name is.
   */
  readonly policyOptions?: unknown;
  /** Active grpc.health.v1 checks of every backend (off when absent); keepalive as `connection`'s. */
  readonly healthCheck?: GrpcHealthOptions;
  /** Passive outlier ejection after gRFC A50 (off when absent). */
  readonly outlierDetection?: OutlierDetectionConfig;
  /**
   * ORCA out-of-band reports from every backend (backend skills for `resume`, load for /status):
   * options, or true for the defaults, or false. Default: on when the policy reads load reports.
   */
  readonly orca?: OrcaClientOptions | boolean;
  /** The cluster's classifier (classify.ts); absent: `x-roster-class` passes untouched. */
  readonly classify?: Classifier;
}

/** Clusters and the routes between them, as `startLb` and `reconfigure` take them. */
export interface LbClusters {
  readonly clusters: ReadonlyMap<string, ClusterOptions>;
  /** Default: no routes, every call to the cluster "default" (or the only cluster). */
  readonly routing?: RoutingConfig;
}

export interface LbOptions {
  readonly listen: Address;
  /**
   * The cluster "default", the one-cluster shorthand (roster serve): `backends`, `policy`,
   * `healthCheck`, `outlierDetection`, `orca` and `forward.classify`. Either these or `clusters`, or both.
   */
  readonly backends?: readonly Endpoint[];
  readonly policy?: PolicySpec;
  /** Named clusters (besides "default" when `backends` is given) and the routes to them (routes.ts). */
  readonly clusters?: ReadonlyMap<string, ClusterOptions>;
  readonly routing?: RoutingConfig;
  readonly deps?: BalancerDeps;
  readonly forward?: Partial<
    Pick<
      ForwardOptions,
      "retryBufferBytes" | "maxAttempts" | "queueTimeoutMs" | "exposeBackend" | "isIdempotent" | "classify"
    >
  >;
  /** Retry budget for idempotent calls (gRFC A6), one per cluster; default 10 tokens, ratio 0.1. */
  readonly retryThrottle?: RetryThrottleConfig;
  readonly limits?: Partial<FrontLimits>;
  readonly connection?: Omit<BackendConnectionOptions, "address" | "onStateChange">;
  /** Of the cluster "default" (see `backends`). */
  readonly healthCheck?: GrpcHealthOptions;
  /** Of the cluster "default" (see `backends`). */
  readonly outlierDetection?: OutlierDetectionConfig;
  /** Of the cluster "default" (see `backends`). */
  readonly orca?: OrcaClientOptions | boolean;
  readonly onCallEnd?: ForwardOptions["onCallEnd"];
  readonly onRetry?: ForwardOptions["onRetry"];
  readonly onChannelEvent?: (event: ChannelEvent, cluster: string) => void;
  /** What etcd or DNS discovery reports (synced, unavailable, a bad member, resolved…), for logs. */
  readonly onDiscoveryEvent?: (event: EtcdDiscoveryEvent | DnsDiscoveryEvent, cluster: string) => void;
  readonly onFrontEvent?: (message: string, fields?: Record<string, unknown>, level?: "debug") => void;
  readonly onConnection?: (delta: 1 | -1) => void;
}

/** What `reconfigure` did, cluster by cluster, for the log. */
export interface ReconfigureReport {
  readonly added: string[];
  /** Routed no more; they close once their open calls have finished. */
  readonly removed: string[];
  /** Rebuilt with a new channel (policy, health, outlier or ORCA settings changed); the old one drains. */
  readonly rebuilt: string[];
  /** Kept their channel and took the new policy settings live (resume). */
  readonly policyLive: string[];
}

/** A running `roster lb`: one listener, one or more clusters of static backends, routes between them. */
export interface Lb {
  readonly server: ProxyServer;
  /** The channel of the cluster "default", or of the first cluster when there is none of that name. */
  readonly channel: Channel;
  /** Every routed cluster's channel by name (a snapshot). */
  clusters(): ReadonlyMap<string, Channel>;
  /** The routes in use. */
  routing(): RoutingConfig;
  /** Replaces the backend list of `channel`'s cluster; calls in flight finish on the old backends. */
  setBackends(backends: readonly Endpoint[]): void;
  /**
   * Replaces clusters and routes at once (config reload): the route table is swapped atomically, so a
   * call sees the old table or the new one. Clusters kept by name keep their channel and connections
   * (new backends, live policy settings) unless their policy, health, outlier or ORCA settings changed,
   * which rebuilds them; new ones start; removed and replaced ones close once their open calls finish.
   * Throws (changing nothing) when the routes name a cluster not in `next.clusters`.
   */
  reconfigure(next: LbClusters): ReconfigureReport;
  close(graceMs?: number): Promise<void>;
}

/**
 * How long a cluster taken out of service keeps its channel open for calls routed to it earlier that
 * still need it (waiting for a backend, retrying elsewhere) before it is closed anyway. Calls already
 * on a backend stream are not cut by the close: their sessions end once the streams do.
 */
const RETIRE_MAX_MS = 30_000;

/** A running cluster: its channel and the forward settings of calls routed to it. */
class Cluster implements CallTarget {
  readonly name: string;
  /** As last configured (reconfigure updates it for a kept cluster). */
  options: ClusterOptions;
  readonly channel: Channel<FrameBackend>;
  readonly throttle: RetryThrottle;
  forward: ForwardOptions;
  readonly #discovery: StaticDiscovery | EtcdDiscovery | DnsDiscovery;
  /** Calls routed here and not finished. */
  #open = 0;
  #retiring: (() => void) | undefined;

  constructor(
    name: string,
    options: ClusterOptions,
    o: LbOptions,
    deps: BalancerDeps,
    throttle: RetryThrottle,
  ) {
    this.name = name;
    this.options = options;
    this.throttle = throttle;
    const onDiscoveryEvent = o.onDiscoveryEvent;
    const d = options.discovery;
    const onDiscovery = onDiscoveryEvent
      ? { onEvent: (e: EtcdDiscoveryEvent | DnsDiscoveryEvent) => onDiscoveryEvent(e, name) }
      : {};
    this.#discovery =
      d === undefined
        ? new StaticDiscovery(options.backends)
        : d.kind === "etcd"
          ? new EtcdDiscovery({ target: d, ...onDiscovery })
          : new DnsDiscovery({ target: d, ...onDiscovery });
    const orcaOptions = orcaOf(options);
    const onEvent = o.onChannelEvent;
    this.channel = new Channel({
      name,
      discovery: this.#discovery,
      target: d === undefined ? "static" : formatDiscoveryTarget(d),
      policy: options.policy,
      deps,
      createConnection: (link) => new FrameBackend({ ...o.connection, ...link }),
      ...(options.healthCheck
        ? { healthChecker: createGrpcHealthChecker({ ...o.connection, ...options.healthCheck }) }
        : {}),
      ...(options.outlierDetection ? { outlierDetection: options.outlierDetection } : {}),
      ...(orcaOptions ? { orca: createOrcaClient({ ...o.connection, ...orcaOptions }) } : {}),
      ...(onEvent ? { onEvent: (event: ChannelEvent) => onEvent(event, name) } : {}),
    });
    this.forward = this.forwardOptions(o, deps, options.classify);
  }

  /** The forward settings of this cluster's calls; a new object when the classifier changes. */
  forwardOptions(o: LbOptions, deps: BalancerDeps, classify: Classifier | undefined): ForwardOptions {
    const channel = this.channel;
    const outliers = this.options.outlierDetection !== undefined;
    const { classify: _shorthand, ...forward } = o.forward ?? {};
    return {
      clock: deps.clock,
      ...defaultForwardSettings,
      retryThrottle: this.throttle,
      ...forward,
      ...(classify !== undefined ? { classify } : {}),
      // Counts the call out; outlier detection learns from every call's status.
      onCallEnd: (cluster, backend, code, ms, className) => {
        this.#ended();
        if (outliers && backend !== undefined) channel.recordCallEnd(backend, code);
        o.onCallEnd?.(cluster, backend, code, ms, className);
      },
      ...(o.onRetry ? { onRetry: o.onRetry } : {}),
    };
  }

  start(): void {
    this.channel.start();
  }

  /** A call was routed here. */
  opened(): void {
    this.#open++;
  }

  /** Replaces static backends; a cluster whose members come from etcd follows etcd instead. */
  setBackends(backends: readonly Endpoint[]): void {
    if (this.#discovery instanceof StaticDiscovery) this.#discovery.set(backends);
  }

  /** Closes the channel (open streams finish) and the discovery's etcd connection, if any. */
  close(): void {
    this.channel.close();
    if (this.#discovery instanceof EtcdDiscovery) this.#discovery.close();
  }

  /** Closes the channel once the calls routed here have finished, or after RETIRE_MAX_MS. */
  retire(onClosed: (backendKeys: string[]) => void): void {
    if (this.#retiring !== undefined) return;
    const close = () => {
      clearTimeout(timer);
      this.#retiring = () => {};
      const keys = [...this.channel.backends()].map((b) => b.key);
      this.close();
      onClosed(keys);
    };
    const timer = setTimeout(close, RETIRE_MAX_MS);
    timer.unref();
    this.#retiring = close;
    if (this.#open === 0) close();
  }

  #ended(): void {
    this.#open--;
    if (this.#open === 0) this.#retiring?.();
  }
}

/** ORCA on or off for a cluster: on when asked, or when its policy reads load reports. */
function orcaOf(c: ClusterOptions): OrcaClientOptions | undefined {
  const orca = c.orca === true ? (c.policy.loadReports ?? true) : (c.orca ?? c.policy.loadReports ?? false);
  return orca === false ? undefined : orca === true ? {} : orca;
}

/**
 * What needs a new channel when it changes (everything but static backends, classifier and policy
 * settings): a different etcd target, or switching between static backends and etcd, too.
 */
function channelKey(c: ClusterOptions): string {
  return JSON.stringify({
    discovery: c.discovery === undefined ? null : formatDiscoveryTarget(c.discovery),
    healthCheck: c.healthCheck ?? null,
    outlierDetection: c.outlierDetection ?? null,
    orca: orcaOf(c) ?? null,
  });
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** `o`'s clusters: "default" from the shorthand fields, then `o.clusters`. */
function clustersOf(o: LbOptions): Map<string, ClusterOptions> {
  const clusters = new Map<string, ClusterOptions>();
  if (o.backends !== undefined) {
    if (o.policy === undefined) throw new Error("startLb: backends need a policy");
    clusters.set(DEFAULT_CLUSTER, {
      backends: o.backends,
      policy: o.policy,
      ...(o.healthCheck ? { healthCheck: o.healthCheck } : {}),
      ...(o.outlierDetection ? { outlierDetection: o.outlierDetection } : {}),
      ...(o.orca !== undefined ? { orca: o.orca } : {}),
      ...(o.forward?.classify ? { classify: o.forward.classify } : {}),
    });
  }
  for (const [name, c] of o.clusters ?? []) {
    if (clusters.has(name)) throw new Error(`startLb: cluster ${name} is given twice`);
    clusters.set(name, c);
  }
  if (clusters.size === 0) throw new Error("startLb: no cluster (give backends or clusters)");
  return clusters;
}

function routingOf(
  clusters: ReadonlyMap<string, unknown>,
  routing: RoutingConfig | undefined,
): RoutingConfig {
  if (routing !== undefined) return routing;
  const only = clusters.size === 1 ? [...clusters.keys()][0] : undefined;
  return {
    routes: [],
    defaultCluster: clusters.has(DEFAULT_CLUSTER) ? DEFAULT_CLUSTER : only,
    noRoute: "unimplemented",
  };
}

function primaryOf(clusters: ReadonlyMap<string, Cluster>): Cluster {
  return clusters.get(DEFAULT_CLUSTER) ?? clusters.values().next().value!;
}

/** A cluster name for calls no route took, in metrics (cluster names cannot contain parentheses). */
export const NO_ROUTE_CLUSTER = "(no route)";

export async function startLb(o: LbOptions): Promise<Lb> {
  const deps = o.deps ?? { clock: systemClock, random: systemRandom };
  const newThrottle = () => new RetryThrottle(o.retryThrottle ?? { maxTokens: 10, tokenRatio: 0.1 });
  const initial = clustersOf(o);
  let clusters = new Map<string, Cluster>();
  for (const [name, c] of initial) clusters.set(name, new Cluster(name, c, o, deps, newThrottle()));
  let routing = routingOf(initial, o.routing);
  let router: Router<Cluster> = createRouter(routing, clusters);
  for (const c of clusters.values()) c.start();
  let primary = primaryOf(clusters);
  /** Clusters out of service whose open calls have not all finished yet. */
  const retiring = new Set<Cluster>();

  /** Log and metrics of the backends of a cluster that is gone (not of those its successor has). */
  const forget = (name: string, keys: string[]) => {
    const successor = clusters.get(name);
    const kept = new Set(successor === undefined ? [] : [...successor.channel.backends()].map((b) => b.key));
    for (const key of keys) if (!kept.has(key)) o.onChannelEvent?.({ kind: "backend-removed", key }, name);
  };

  const server = await startFrameProxyServer({
    listen: o.listen,
    route: (path, header) => {
      const routed: RouteResult<Cluster> = router.route(path, header);
      if (routed.kind === "cluster") routed.target.opened();
      return routed;
    },
    onNoRoute: (code) => o.onCallEnd?.(NO_ROUTE_CLUSTER, undefined, code, 0, undefined),
    ...(o.limits ? { limits: o.limits } : {}),
    ...(o.onFrontEvent ? { onFrontEvent: o.onFrontEvent } : {}),
    ...(o.onConnection ? { onConnection: o.onConnection } : {}),
  }).catch((err: unknown) => {
    for (const c of clusters.values()) c.close();
    throw err;
  });

  return {
    server,
    get channel() {
      return primary.channel;
    },
    clusters: () => new Map([...clusters].map(([name, c]) => [name, c.channel])),
    routing: () => routing,
    setBackends: (backends) => primary.setBackends(backends),
    reconfigure(next) {
      const report: ReconfigureReport = { added: [], removed: [], rebuilt: [], policyLive: [] };
      // Build first, swap after: an error leaves the running configuration untouched.
      const nextClusters = new Map<string, Cluster>();
      const started: Cluster[] = [];
      for (const [name, c] of next.clusters) {
        const old = clusters.get(name);
        const keep =
          old !== undefined &&
          channelKey(old.options) === channelKey(c) &&
          old.options.policy.name === c.policy.name &&
          (sameJson(old.options.policyOptions, c.policyOptions) ||
            old.channel.canReconfigurePolicy(c.policy.name));
        if (keep) {
          nextClusters.set(name, old);
          continue;
        }
        const fresh = new Cluster(name, c, o, deps, old?.throttle ?? newThrottle());
        nextClusters.set(name, fresh);
        started.push(fresh);
        (old === undefined ? report.added : report.rebuilt).push(name);
      }
      const nextRouting = routingOf(next.clusters, next.routing);
      let nextRouter: Router<Cluster>;
      try {
        if (nextClusters.size === 0) throw new Error("no cluster");
        nextRouter = createRouter(nextRouting, nextClusters);
      } catch (err) {
        for (const c of started) c.close();
        throw err;
      }
      // Commit.
      for (const [name, c] of next.clusters) {
        const cluster = nextClusters.get(name)!;
        if (started.includes(cluster)) continue;
        cluster.setBackends(c.backends);
        if (!sameJson(cluster.options.policyOptions, c.policyOptions)) {
          cluster.channel.reconfigurePolicy(c.policy.name, c.policyOptions ?? {});
          report.policyLive.push(name);
        }
        cluster.options = c;
        cluster.forward = cluster.forwardOptions(o, deps, c.classify);
      }
      for (const c of started) c.start();
      const previous = clusters;
      clusters = nextClusters;
      routing = nextRouting;
      router = nextRouter;
      primary = primaryOf(clusters);
      for (const [name, c] of previous) {
        if (clusters.get(name) === c) continue;
        if (!clusters.has(name)) report.removed.push(name);
        retiring.add(c);
        c.retire((keys) => {
          retiring.delete(c);
          forget(name, keys);
        });
      }
      return report;
    },
    async close(graceMs) {
      await server.close(graceMs);
      for (const c of [...clusters.values(), ...retiring]) c.close();
    },
  };
}
