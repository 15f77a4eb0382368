import { Channel, type ChannelEvent } from "../channel/channel.ts";
import type { BalancerDeps, PolicySpec } from "../core/balancer.ts";
import type { Address, Endpoint } from "../core/endpoint.ts";
import type { OutlierDetectionConfig } from "../core/health/outlier-detection.ts";
import { RetryThrottle, type RetryThrottleConfig } from "../core/retry-throttle.ts";
import { StaticDiscovery } from "../discovery/static.ts";
import { createGrpcHealthChecker, type GrpcHealthOptions } from "../health/grpc-health.ts";
import { createOrcaClient, type OrcaClientOptions } from "../health/orca-client.ts";
import type { BackendConnectionOptions } from "../platform/backend-connection.ts";
import { systemClock, systemRandom } from "../platform/system.ts";
import type { ForwardOptions } from "./forward.ts";
import { type FrontLimits, type ProxyServer, startProxyServer } from "./server.ts";

/** Defaults of the data path; documented in docs/configuration.md. */
export const defaultForwardSettings = {
  retryBufferBytes: 256 * 1024,
  maxAttempts: 5,
  queueTimeoutMs: 10_000,
} as const;

export interface LbOptions {
  readonly listen: Address;
  readonly backends: readonly Endpoint[];
  readonly policy: PolicySpec;
  readonly deps?: BalancerDeps;
  readonly forward?: Partial<
    Pick<
      ForwardOptions,
      "retryBufferBytes" | "maxAttempts" | "queueTimeoutMs" | "exposeBackend" | "isIdempotent" | "classify"
    >
  >;
  /** Retry budget for idempotent calls (gRFC A6); default 10 tokens, ratio 0.1. */
  readonly retryThrottle?: RetryThrottleConfig;
  readonly limits?: Partial<FrontLimits>;
  readonly connection?: Omit<BackendConnectionOptions, "address" | "onStateChange">;
  /** Active grpc.health.v1 checks of every backend (off when absent); keepalive as `connection`'s. */
  readonly healthCheck?: GrpcHealthOptions;
  /** Passive outlier ejection after gRFC A50 (off when absent). */
  readonly outlierDetection?: OutlierDetectionConfig;
  /**
   * ORCA out-of-band reports from every backend (backend skills for `resume`, load for /status):
   * options, or true for the defaults, or false. Default: on when the policy is `resume`.
   */
  readonly orca?: OrcaClientOptions | boolean;
  readonly onCallEnd?: ForwardOptions["onCallEnd"];
  readonly onRetry?: ForwardOptions["onRetry"];
  readonly onChannelEvent?: (event: ChannelEvent) => void;
  readonly onFrontEvent?: (message: string, fields?: Record<string, unknown>) => void;
  readonly onConnection?: (delta: 1 | -1) => void;
}

/** A running `roster lb`: one listener, one cluster of static backends. */
export interface Lb {
  readonly server: ProxyServer;
  readonly channel: Channel;
  /** Replaces the backend list (config reload); calls in flight finish on the old backends. */
  setBackends(backends: readonly Endpoint[]): void;
  close(graceMs?: number): Promise<void>;
}

export async function startLb(o: LbOptions): Promise<Lb> {
  const deps = o.deps ?? { clock: systemClock, random: systemRandom };
  const discovery = new StaticDiscovery(o.backends);
  const orca = o.orca === true ? (o.policy.loadReports ?? true) : (o.orca ?? o.policy.loadReports ?? false);
  const orcaOptions = orca === false ? undefined : orca === true ? {} : orca;
  const channel = new Channel({
    name: "default",
    discovery,
    target: "static",
    policy: o.policy,
    deps,
    ...(o.connection ? { connection: o.connection } : {}),
    ...(o.healthCheck
      ? { healthChecker: createGrpcHealthChecker({ ...o.connection, ...o.healthCheck }) }
      : {}),
    ...(o.outlierDetection ? { outlierDetection: o.outlierDetection } : {}),
    ...(orcaOptions ? { orca: createOrcaClient({ ...o.connection, ...orcaOptions }) } : {}),
    ...(o.onChannelEvent ? { onEvent: o.onChannelEvent } : {}),
  });
  channel.start();
  // Outlier detection learns from every call's status.
  const onCallEnd: ForwardOptions["onCallEnd"] =
    o.outlierDetection === undefined
      ? o.onCallEnd
      : (cluster, backend, code, ms, className) => {
          if (backend !== undefined) channel.recordCallEnd(backend, code);
          o.onCallEnd?.(cluster, backend, code, ms, className);
        };
  const server = await startProxyServer({
    listen: o.listen,
    channel,
    forward: {
      clock: deps.clock,
      ...defaultForwardSettings,
      retryThrottle: new RetryThrottle(o.retryThrottle ?? { maxTokens: 10, tokenRatio: 0.1 }),
      ...o.forward,
      ...(onCallEnd ? { onCallEnd } : {}),
      ...(o.onRetry ? { onRetry: o.onRetry } : {}),
    },
    ...(o.limits ? { limits: o.limits } : {}),
    ...(o.onFrontEvent ? { onFrontEvent: o.onFrontEvent } : {}),
    ...(o.onConnection ? { onConnection: o.onConnection } : {}),
  });
  return {
    server,
    channel,
    setBackends: (backends) => discovery.set(backends),
    async close(graceMs) {
      await server.close(graceMs);
      channel.close();
    },
  };
}
