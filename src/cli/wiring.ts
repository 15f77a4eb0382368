import type { Address } from "../core/endpoint.ts";
import { type AdminServer, startAdminServer } from "../observe/admin.ts";
import type { Logger } from "../observe/log.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import type { Lb, LbOptions } from "../proxy/lb.ts";
import { describeRoute } from "../proxy/routes.ts";

/** What `roster lb` and `roster serve` both hang on the data path: metrics and log lines. */
export type LbHooks = Pick<
  LbOptions,
  "onCallEnd" | "onRetry" | "onChannelEvent" | "onFrontEvent" | "onConnection" | "onDiscoveryEvent"
>;

export function lbHooks(log: Logger, metrics: ProxyMetrics): LbHooks {
  /** `cluster backend` keys whose failure was logged as a warning. */
  const failing = new Set<string>();
  /** Clusters whose etcd outage or DNS failure was logged as a warning (the retries log at debug). */
  const etcdDown = new Set<string>();
  return {
    onDiscoveryEvent: (event, cluster) => {
      const where = cluster === "default" ? "" : `cluster ${cluster}: `;
      switch (event.kind) {
        case "synced": {
          const fields = {
            cluster,
            discovery: event.target,
            members: event.members,
            revision: event.revision,
          };
          if (etcdDown.delete(cluster) || event.reconnected)
            log.info(
              fields,
              `${where}etcd is reachable again: membership re-read (${event.members} members)`,
            );
          else log.info(fields, `${where}etcd membership read: ${event.members} members`);
          break;
        }
        case "unavailable": {
          const fields = { cluster, discovery: event.target, error: event.error, retryInMs: event.retryInMs };
          if (etcdDown.has(cluster)) log.debug(fields, `${where}etcd still unreachable`);
          else {
            etcdDown.add(cluster);
            log.warn(fields, `${where}etcd unreachable: routing on the last-known members; retrying`);
          }
          break;
        }
        case "resolved":
          etcdDown.delete(cluster);
          log.info(
            { cluster, discovery: event.target, addresses: event.addresses },
            `${where}${event.target} resolved to ${event.addresses.length} addresses`,
          );
          break;
        case "failed": {
          const fields = { cluster, discovery: event.target, error: event.error, keeping: event.keeping };
          if (etcdDown.has(cluster)) log.debug(fields, `${where}${event.target} still not resolving`);
          else {
            etcdDown.add(cluster);
            log.warn(
              fields,
              `${where}${event.target} did not resolve (${event.error}); keeping ${event.keeping} addresses`,
            );
          }
          break;
        }
        case "bad-member":
          log.warn(
            { cluster, discovery: event.target, key: event.key, error: event.error },
            `${where}etcd key ${event.key} is not a member record (${event.error}); left out`,
          );
          break;
      }
    },
    onCallEnd: (cluster, backend, code, ms, className) => {
      if (backend === undefined) metrics.callFailedAtBalancer(cluster, code);
      else metrics.callEnded(cluster, backend.key, code, ms / 1000);
      if (className !== undefined) metrics.classCall(cluster, className);
    },
    onRetry: (cluster, backend, reason) => {
      metrics.retried(cluster, backend.key);
      log.debug({ cluster, backend: backend.key, reason }, "retrying call on another backend");
    },
    onChannelEvent: (event, cluster) => {
      // One-cluster setups log as they always have; other clusters' lines start with their name.
      const where = cluster === "default" ? "" : `cluster ${cluster}: `;
      switch (event.kind) {
        case "backend-state": {
          // Reconnect attempts to a dead backend repeat connecting/transient-failure: log the first
          // failure after readiness as a warning, the repeats at debug.
          const { key, state } = event;
          const id = `${cluster} ${key}`;
          const fields = {
            cluster,
            backend: key,
            state: state.kind,
            ...(state.kind === "transient-failure" ? { error: state.error } : {}),
          };
          if (state.kind === "ready") {
            failing.delete(id);
            log.info(fields, `${where}backend ${key} is ready`);
          } else if (state.kind === "transient-failure" && !failing.has(id)) {
            failing.add(id);
            log.warn(fields, `${where}backend ${key} failed: ${state.error}`);
          } else log.debug(fields, `${where}backend ${key} is ${state.kind}`);
          break;
        }
        case "discovery-error":
          log.warn({ cluster, error: event.error }, `${where}discovery failed; retrying`);
          break;
        case "backend-orca-problem":
          log.warn(
            { cluster, backend: event.key, detail: event.detail },
            `${where}backend ${event.key}: ${event.detail}`,
          );
          break;
        case "backend-added":
          log.info({ cluster, backend: event.key }, `${where}backend added`);
          break;
        case "backend-removed":
          failing.delete(`${cluster} ${event.key}`);
          metrics.forgetBackend(cluster, event.key);
          log.info({ cluster, backend: event.key }, `${where}backend removed`);
          break;
      }
    },
    onFrontEvent: (message, fields, level) =>
      level === "debug" ? log.debug(fields ?? {}, message) : log.warn(fields ?? {}, message),
    onConnection: (delta) => (delta > 0 ? metrics.frontConnections.inc() : metrics.frontConnections.dec()),
  };
}

/**
 * Feeds the in-flight gauges from every cluster's channel and starts the admin server when asked.
 * /status: `backends` and `balancer` of the cluster "default" (or the only one), as always; with
 * several clusters or any route also `clusters` (each one's backends, balancer and `clusterInfo`) and
 * `routing`.
 */
export async function observeLb(
  lb: Lb,
  metrics: ProxyMetrics,
  log: Logger,
  admin: Address | undefined,
  status: () => Record<string, unknown>,
  clusterInfo: (name: string) => Record<string, unknown> = () => ({}),
): Promise<AdminServer | undefined> {
  metrics.setInFlightSource(() => {
    const out = [];
    for (const [cluster, channel] of lb.clusters())
      for (const b of channel.status())
        out.push({ cluster, backend: b.key, inFlight: b.inFlight, state: b.state });
    return out;
  });
  if (admin === undefined) return undefined;
  return startAdminServer({
    host: admin.kind === "tcp" ? admin.host : "127.0.0.1",
    port: admin.kind === "tcp" ? admin.port : 0,
    metrics,
    status: () => {
      const balancer = lb.channel.policyStatus();
      const clusters = lb.clusters();
      const routing = lb.routing();
      return {
        listeners: [{ address: lb.server.address, connections: lb.server.connections() }],
        ...status(),
        backends: lb.channel.status(),
        ...(balancer !== undefined ? { balancer } : {}),
        ...(clusters.size > 1 || routing.routes.length > 0
          ? {
              clusters: Object.fromEntries(
                [...clusters].map(([name, channel]) => {
                  const b = channel.policyStatus();
                  return [
                    name,
                    {
                      ...clusterInfo(name),
                      backends: channel.status(),
                      ...(b !== undefined ? { balancer: b } : {}),
                    },
                  ];
                }),
              ),
              routing: {
                routes: routing.routes.map((r) => ({ ...r, description: describeRoute(r) })),
                ...(routing.defaultCluster !== undefined
                  ? { defaultCluster: routing.defaultCluster }
                  : { noRoute: routing.noRoute }),
              },
            }
          : {}),
      };
    },
    log,
  });
}
