import { readFileSync, watch } from "node:fs";
import { formatAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { startAdminServer } from "../observe/admin.ts";
import { createLogger } from "../observe/log.ts";
import { createProxyMetrics } from "../observe/metrics.ts";
import {
  type LbConfig,
  parseLbConfigText,
  type RawLbConfig,
  resolveLbConfig,
  validateRaw,
} from "../proxy/config.ts";
import { startLb } from "../proxy/lb.ts";

export interface LbFlags {
  config?: string;
  listen?: string;
  backend?: string[];
  policy?: string;
  admin?: string;
  logLevel?: string;
  exposeBackend?: boolean;
}

/** File settings overlaid with flags (flags win), validated; throws ConfigError naming file or flag. */
export function loadLbConfig(flags: LbFlags): LbConfig {
  const file = flags.config;
  const fromFile: RawLbConfig = file === undefined ? {} : parseLbConfigText(readConfigFile(file), file);
  const fromFlags = validateRaw(
    {
      ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
      ...(flags.admin !== undefined ? { admin: flags.admin } : {}),
      ...(flags.policy !== undefined ? { policy: flags.policy } : {}),
      ...(flags.backend !== undefined ? { backends: flags.backend } : {}),
      ...(flags.logLevel !== undefined ? { log: { level: flags.logLevel } } : {}),
      ...(flags.exposeBackend ? { exposeBackend: true } : {}),
    },
    "flags",
  );
  const where = file ?? "flags";
  if (fromFile.backends === undefined && fromFlags.backends === undefined) {
    throw new ConfigError(
      where === "flags" ? "--backend" : `${where}: backends`,
      "at least one backend is needed",
    );
  }
  return resolveLbConfig({ ...fromFile, ...fromFlags }, createDefaultRegistry(), where);
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

export async function runLb(flags: LbFlags): Promise<void> {
  const config = loadLbConfig(flags);
  const log = createLogger({ level: config.logLevel, name: "roster-lb" });
  const metrics = createProxyMetrics();
  const failing = new Set<string>();
  const lb = await startLb({
    listen: config.listen,
    backends: config.backends,
    policy: config.policy,
    forward: {
      retryBufferBytes: config.retryBufferBytes,
      maxAttempts: config.maxAttempts,
      queueTimeoutMs: config.queueTimeoutMs,
      exposeBackend: config.exposeBackend,
    },
    limits: config.limits,
    connection: config.backend,
    onCallEnd: (cluster, backend, code, ms) => {
      if (backend === undefined) metrics.callFailedAtBalancer(cluster, code);
      else metrics.callEnded(cluster, backend.key, code, ms / 1000);
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
          const wasFailing = failing.has(key);
          if (state.kind === "ready") {
            failing.delete(key);
            log.info(fields, `backend ${key} is ready`);
          } else if (state.kind === "transient-failure" && !wasFailing) {
            failing.add(key);
            log.warn(fields, `backend ${key} failed: ${state.error}`);
          } else log.debug(fields, `backend ${key} is ${state.kind}`);
          break;
        }
        case "discovery-error":
          log.warn({ error: event.error }, "discovery failed; retrying");
          break;
        default:
          log.info(
            { backend: event.key },
            event.kind === "backend-added" ? "backend added" : "backend removed",
          );
      }
    },
    onFrontEvent: (message, fields) => log.warn(fields ?? {}, message),
    onConnection: (delta) => (delta > 0 ? metrics.frontConnections.inc() : metrics.frontConnections.dec()),
  });
  metrics.setInFlightSource(() =>
    lb.channel
      .status()
      .map((b) => ({ cluster: lb.channel.name, backend: b.key, inFlight: b.inFlight, state: b.state })),
  );
  const admin =
    config.admin === undefined
      ? undefined
      : await startAdminServer({
          host: config.admin.kind === "tcp" ? config.admin.host : "127.0.0.1",
          port: config.admin.kind === "tcp" ? config.admin.port : 0,
          metrics,
          status: () => ({
            listeners: [{ address: lb.server.address, connections: lb.server.connections() }],
            policy: config.policy.name,
            backends: lb.channel.status(),
          }),
          log,
        });
  log.info(
    {
      listen: lb.server.address,
      admin: admin?.address,
      policy: config.policy.name,
      backends: config.backends.map((b) => formatAddress(b.address)),
    },
    `roster lb listening on ${lb.server.address}`,
  );

  // Live reload of the backend list: SIGHUP, or the config file changing. A bad file keeps the old config.
  const reload = (why: string) => {
    if (flags.config === undefined) {
      log.info(`${why}: no config file to re-read`);
      return;
    }
    try {
      const next = loadLbConfig(flags);
      lb.setBackends(next.backends);
      log.info({ backends: next.backends.map((b) => b.key) }, `${why}: config reloaded`);
    } catch (err) {
      log.error({ error: (err as Error).message }, `${why}: config rejected, keeping the previous one`);
    }
  };
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
    await lb.close(10_000);
    await admin?.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
