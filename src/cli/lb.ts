import { readFileSync, watch } from "node:fs";
import { formatAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { EtcdKeyWatcher, formatEtcdKeyTarget } from "../discovery/etcd-key.ts";
import { formatDiscoveryTarget } from "../discovery/target.ts";
import { createLogger, type Logger } from "../observe/log.ts";
import { createProxyMetrics } from "../observe/metrics.ts";
import {
  type LbConfig,
  lbClusters,
  parseLbConfigText,
  type RawLbConfig,
  resolveLbConfig,
  validateRaw,
} from "../proxy/config.ts";
import { startLb } from "../proxy/lb.ts";
import { describeRoute } from "../proxy/routes.ts";
import { type LbHooks, lbHooks, observeLb } from "./wiring.ts";

export interface LbFlags {
  config?: string;
  listen?: string;
  backend?: string[];
  discovery?: string;
  settings?: string;
  policy?: string;
  admin?: string;
  logLevel?: string;
  exposeBackend?: boolean;
}

/** Live settings: the text of the watched key, and its name for errors ("etcd KEY"). */
export interface LiveSettings {
  readonly text: string;
  readonly where: string;
}

/**
 * File settings overlaid with flags (flags win), validated; throws ConfigError naming file or flag.
 * With `live`, that document (same schema) is overlaid last and the result validated again; its errors
 * name `live.where`.
 */
export function loadLbConfig(flags: LbFlags, live?: LiveSettings): LbConfig {
  const base = loadBase(flags);
  if (live === undefined) return base.config;
  const fromLive = parseLbConfigText(live.text, live.where);
  if (fromLive.settings !== undefined)
    throw new ConfigError(`${live.where}: settings`, "cannot be set from the live settings themselves");
  const overlaid = { ...base.merged, ...fromLive };
  if (fromLive.backends !== undefined) delete overlaid.discovery;
  if (fromLive.discovery !== undefined) delete overlaid.backends;
  return resolveLbConfig(overlaid, createDefaultRegistry(), live.where);
}

function loadBase(flags: LbFlags): { config: LbConfig; merged: RawLbConfig } {
  const file = flags.config;
  const fromFile: RawLbConfig = file === undefined ? {} : parseLbConfigText(readConfigFile(file), file);
  const fromFlags = validateRaw(
    {
      ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
      ...(flags.admin !== undefined ? { admin: flags.admin } : {}),
      ...(flags.policy !== undefined ? { policy: flags.policy } : {}),
      ...(flags.backend !== undefined ? { backends: flags.backend } : {}),
      ...(flags.discovery !== undefined ? { discovery: flags.discovery } : {}),
      ...(flags.settings !== undefined ? { settings: flags.settings } : {}),
      ...(flags.logLevel !== undefined ? { log: { level: flags.logLevel } } : {}),
      ...(flags.exposeBackend ? { exposeBackend: true } : {}),
    },
    "flags",
  );
  const where = file ?? "flags";
  if (
    fromFile.backends === undefined &&
    fromFlags.backends === undefined &&
    fromFile.discovery === undefined &&
    fromFlags.discovery === undefined &&
    fromFile.clusters === undefined
  ) {
    throw new ConfigError(
      where === "flags" ? "--backend" : `${where}: backends`,
      "at least one backend is needed (or --discovery etcd://HOST:PORT/PREFIX)",
    );
  }
  const merged = { ...fromFile, ...fromFlags };
  // A flag replaces the file's membership of the cluster "default", whichever kind it is.
  if (fromFlags.backends !== undefined) delete merged.discovery;
  if (fromFlags.discovery !== undefined) delete merged.backends;
  const fieldsFrom = fromFlags.backends !== undefined || fromFlags.discovery !== undefined ? "flags" : where;
  try {
    return { config: resolveLbConfig(merged, createDefaultRegistry(), where), merged };
  } catch (err) {
    // Name the flag, not "FILE: discovery", when the URL came from --discovery.
    if (err instanceof ConfigError && fieldsFrom === "flags" && err.field === `${where}: discovery`)
      throw new ConfigError("--discovery", err.detail);
    if (err instanceof ConfigError && flags.settings !== undefined && err.field === `${where}: settings`)
      throw new ConfigError("--settings", err.detail);
    throw err;
  }
}

/** "cluster beta: " in log messages, nothing for the cluster "default" (one-cluster setups read as before). */
function clusterPrefix(cluster: string): string {
  return cluster === "default" ? "" : `cluster ${cluster}: `;
}

function readConfigFile(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(
      file,
      `cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** Exact paths, or prefixes ending in "/" for whole services. */
function idempotentMatcher(methods: readonly string[]): (path: string) => boolean {
  const exact = new Set(methods.filter((m) => !m.endsWith("/")));
  const prefixes = methods.filter((m) => m.endsWith("/"));
  return (path) => exact.has(path) || prefixes.some((p) => path.startsWith(p));
}

/** Adds log lines for health-check verdicts and outlier ejections to the hooks' channel events. */
function withHealthLogging(hooks: LbHooks, log: Logger): LbHooks {
  return {
    ...hooks,
    onChannelEvent: (event, cluster) => {
      hooks.onChannelEvent?.(event, cluster);
      const where = clusterPrefix(cluster);
      if (event.kind === "backend-health") {
        const fields = { cluster, backend: event.key, health: event.health, detail: event.detail };
        if (event.health === event.previous)
          log.debug(fields, `${where}backend ${event.key}: ${event.detail}`);
        else if (event.health === "serving") log.info(fields, `${where}backend ${event.key} is serving`);
        else log.warn(fields, `${where}backend ${event.key} is ${event.health}: ${event.detail}`);
      } else if (event.kind === "backend-ejected") {
        log.warn(
          { cluster, backend: event.key },
          `${where}backend ${event.key} ejected by outlier detection`,
        );
      } else if (event.kind === "backend-returned") {
        log.info({ cluster, backend: event.key }, `${where}backend ${event.key} returned after its ejection`);
      }
    },
  };
}

/** Settings read once at start; a reload that changes them says they need a restart. */
function restartOnly(c: LbConfig): Record<string, unknown> {
  return {
    listen: c.listen,
    admin: c.admin,
    limits: c.limits,
    retry: [c.retryBufferBytes, c.maxAttempts, c.idempotentMethods, c.retryThrottle],
    queueTimeoutMs: c.queueTimeoutMs,
    exposeBackend: c.exposeBackend,
    backend: c.backend,
    log: c.logLevel,
  };
}

function backendsOf(config: LbConfig): Record<string, string[]> {
  return Object.fromEntries(
    [...config.clusters].map(([name, c]) => [
      name,
      c.discovery !== undefined
        ? [formatDiscoveryTarget(c.discovery)]
        : c.backends.map((b) => formatAddress(b.address)),
    ]),
  );
}

export async function runLb(flags: LbFlags): Promise<void> {
  let config = loadLbConfig(flags);
  const log = createLogger({ level: config.logLevel, name: "roster-lb" });
  const metrics = createProxyMetrics();
  const lb = await startLb({
    listen: config.listen,
    ...lbClusters(config),
    forward: {
      retryBufferBytes: config.retryBufferBytes,
      maxAttempts: config.maxAttempts,
      queueTimeoutMs: config.queueTimeoutMs,
      exposeBackend: config.exposeBackend,
      isIdempotent: idempotentMatcher(config.idempotentMethods),
    },
    retryThrottle: config.retryThrottle,
    limits: config.limits,
    connection: config.backend,
    ...withHealthLogging(lbHooks(log, metrics), log),
  });
  const clusterInfo = (name: string) => {
    const c = config.clusters.get(name);
    return c === undefined
      ? {}
      : { policy: c.policy.name, ...(c.classifier !== undefined ? { classifier: c.classifier } : {}) };
  };
  /** Live settings: where, the revision applied, and the last refusal (shown in /status). */
  let settingsStatus: Record<string, unknown> | undefined =
    config.settings === undefined
      ? undefined
      : { source: formatEtcdKeyTarget(config.settings), applied: null };
  const admin = await observeLb(
    lb,
    metrics,
    log,
    config.admin,
    () => ({
      ...clusterInfo(lb.channel.name),
      ...(settingsStatus !== undefined ? { settings: settingsStatus } : {}),
    }),
    clusterInfo,
  );
  log.info(
    {
      listen: lb.server.address,
      admin: admin?.address,
      policy: config.clusters.get(lb.channel.name)?.policy.name,
      backends: backendsOf(config)[lb.channel.name],
      ...(config.clusters.size > 1 || config.routing.routes.length > 0
        ? { clusters: backendsOf(config), routes: config.routing.routes.map(describeRoute) }
        : {}),
    },
    `roster lb listening on ${lb.server.address}`,
  );

  /** The live settings applied last (re-applied over the file on every reload). */
  let live: LiveSettings | undefined;
  /** Applies a validated config: clusters and routes now; restart-only settings are reported. */
  const apply = (next: LbConfig, why: string) => {
    const report = lb.reconfigure(lbClusters(next));
    const before = restartOnly(config);
    const after = restartOnly(next);
    const needRestart = Object.keys(after).filter(
      (k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]),
    );
    config = next;
    log.info(
      {
        clusters: backendsOf(next),
        routes: next.routing.routes.map(describeRoute),
        ...(next.routing.defaultCluster !== undefined
          ? { defaultCluster: next.routing.defaultCluster }
          : { noRoute: next.routing.noRoute }),
        ...report,
        ...(needRestart.length > 0 ? { restartNeeded: needRestart } : {}),
      },
      `${why}: config reloaded`,
    );
    if (needRestart.length > 0)
      log.warn(`${why}: ${needRestart.join(", ")} changed; that applies after a restart`);
  };

  // Live reload of clusters and routes: SIGHUP, or the config file changing. A bad file keeps the old config.
  const reload = (why: string) => {
    if (flags.config === undefined) {
      log.info(`${why}: no config file to re-read`);
      return;
    }
    try {
      apply(loadLbConfig(flags, live), why);
    } catch (err) {
      log.error({ error: (err as Error).message }, `${why}: config rejected, keeping the previous one`);
    }
  };

  // Live settings from an etcd key: each new value is validated as a config file is and applied, or
  // refused (logged, shown in /status) with the last good settings kept. A deleted key falls back to the
  // file and flags. While etcd is unreachable the settings in force stay.
  const settingsTarget = config.settings;
  const settingsAbort = new AbortController();
  const settingsWatcher =
    settingsTarget === undefined
      ? undefined
      : new EtcdKeyWatcher(settingsTarget, {
          onEvent: (e) => {
            if (e.kind === "unavailable")
              log.warn(
                { error: e.error, retryInMs: e.retryInMs },
                `live settings: etcd unreachable; keeping the settings in force`,
              );
          },
        });
  if (settingsTarget !== undefined && settingsWatcher !== undefined) {
    const where = `etcd ${settingsTarget.key}`;
    let seen: string | undefined;
    void (async () => {
      for await (const kv of settingsWatcher.watch(settingsAbort.signal)) {
        // The same revision again (a re-read after a reconnection) changes nothing.
        if (kv.revision === seen) continue;
        seen = kv.revision;
        const candidate = kv.value === undefined ? undefined : { text: kv.value, where };
        const source = formatEtcdKeyTarget(settingsTarget);
        try {
          const next = loadLbConfig(flags, candidate);
          live = candidate;
          apply(
            next,
            kv.value === undefined
              ? `live settings: ${where} is absent`
              : `live settings: ${where} revision ${kv.revision}`,
          );
          settingsStatus = { source, applied: kv.value === undefined ? null : kv.revision };
        } catch (err) {
          const error = (err as Error).message;
          log.error(
            { error, revision: kv.revision },
            `live settings: ${where} revision ${kv.revision} refused, keeping the previous settings`,
          );
          settingsStatus = { ...settingsStatus, source, refused: { revision: kv.revision, error } };
        }
      }
    })();
  }
  process.on("SIGHUP", () => reload("SIGHUP"));
  let debounce: NodeJS.Timeout | undefined;
  const watcher =
    flags.config === undefined
      ? undefined
      : watch(flags.config, () => {
          clearTimeout(debounce);
          debounce = setTimeout(() => reload("config file changed"), 200);
        });
  watcher?.on("error", () => {});

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(
      { signal, connections: lb.server.connections() },
      "draining: no new connections, open calls finish",
    );
    watcher?.close();
    settingsAbort.abort();
    settingsWatcher?.close();
    await lb.close(10_000);
    await admin?.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
