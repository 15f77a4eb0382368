import type { Address } from "../core/endpoint.ts";
import { type AdminServer, startAdminServer } from "../observe/admin.ts";
import type { Logger } from "../observe/log.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import type { Lb, LbOptions } from "../proxy/lb.ts";

/** What `roster lb` and `roster serve` both hang on the data path: metrics and log lines. */
export type LbHooks = Pick<
  LbOptions,
  "onCallEnd" | "onRetry" | "onChannelEvent" | "onFrontEvent" | "onConnection"
>;

export function lbHooks(log: Logger, metrics: ProxyMetrics): LbHooks {
  const failing = new Set<string>();
  return {
    onCallEnd: (cluster, backend, code, ms, className) => {
      if (backend === undefined) metrics.callFailedAtBalancer(cluster, code);
      else metrics.callEnded(cluster, backend.key, code, ms / 1000);
      if (className !== undefined) metrics.classCall(cluster, className);
    },
    onRetry: (cluster, backend, reason) => {
      metrics.retried(cluster, backend.key);
      log.debug({ cluster, backend: backend.key, reason }, "retrying call on another backend");
    },
    onChannelEvent: (event) => {
      switch (event.kind) {
        case "backend-state": {
          // Reconnect attempts to a dead backend repeat connecting/transient-failure: log the first
          // failure after readiness as a warning, the repeats at debug.
          const { key, state } = event;
          const fields = {
            backend: key,
            state: state.kind,
            ...(state.kind === "transient-failure" ? { error: state.error } : {}),
          };
          if (state.kind === "ready") {
            failing.delete(key);
            log.info(fields, `backend ${key} is ready`);
          } else if (state.kind === "transient-failure" && !failing.has(key)) {
            failing.add(key);
            log.warn(fields, `backend ${key} failed: ${state.error}`);
          } else log.debug(fields, `backend ${key} is ${state.kind}`);
          break;
        }
        case "discovery-error":
          log.warn({ error: event.error }, "discovery failed; retrying");
          break;
        case "backend-orca-problem":
          log.warn({ backend: event.key, detail: event.detail }, `backend ${event.key}: ${event.detail}`);
          break;
        case "backend-added":
          log.info({ backend: event.key }, "backend added");
          break;
        case "backend-removed":
          failing.delete(event.key);
          metrics.forgetBackend("default", event.key);
          log.info({ backend: event.key }, "backend removed");
          break;
      }
    },
    onFrontEvent: (message, fields) => log.warn(fields ?? {}, message),
    onConnection: (delta) => (delta > 0 ? metrics.frontConnections.inc() : metrics.frontConnections.dec()),
  };
}

/** Feeds the in-flight gauges from the channel and starts the admin server when asked. */
export async function observeLb(
  lb: Lb,
  metrics: ProxyMetrics,
  log: Logger,
  admin: Address | undefined,
  status: () => Record<string, unknown>,
): Promise<AdminServer | undefined> {
  metrics.setInFlightSource(() =>
    lb.channel
      .status()
      .map((b) => ({ cluster: lb.channel.name, backend: b.key, inFlight: b.inFlight, state: b.state })),
  );
  if (admin === undefined) return undefined;
  return startAdminServer({
    host: admin.kind === "tcp" ? admin.host : "127.0.0.1",
    port: admin.kind === "tcp" ? admin.port : 0,
    metrics,
    status: () => {
      const balancer = lb.channel.policyStatus();
      return {
        listeners: [{ address: lb.server.address, connections: lb.server.connections() }],
        ...status(),
        backends: lb.channel.status(),
        ...(balancer !== undefined ? { balancer } : {}),
      };
    },
    log,
  });
}
