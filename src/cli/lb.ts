import { readFileSync, watch } from "node:fs";
import { formatAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { createLogger, type Logger } from "../observe/log.ts";
import { createProxyMetrics } from "../observe/metrics.ts";
import { createClassifier } from "../proxy/classify.ts";
import {
  type LbConfig,
  parseLbConfigText,
  type RawLbConfig,
  resolveLbConfig,
  validateRaw,
} from "../proxy/config.ts";
import { startLb } from "../proxy/lb.ts";
import { type LbHooks, lbHooks, observeLb } from "./wiring.ts";

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
    onChannelEvent: (event) => {
      hooks.onChannelEvent?.(event);
      if (event.kind === "backend-health") {
        const fields = { backend: event.key, health: event.health, detail: event.detail };
        if (event.health === event.previous) log.debug(fields, `backend ${event.key}: ${event.detail}`);
        else if (event.health === "serving") log.info(fields, `backend ${event.key} is serving`);
        else log.warn(fields, `backend ${event.key} is ${event.health}: ${event.detail}`);
      } else if (event.kind === "backend-ejected") {
        log.warn({ backend: event.key }, `backend ${event.key} ejected by outlier detection`);
      } else if (event.kind === "backend-returned") {
        log.info({ backend: event.key }, `backend ${event.key} returned after its ejection`);
      }
    },
  };
}

export async function runLb(flags: LbFlags): Promise<void> {
  const config = loadLbConfig(flags);
  const log = createLogger({ level: config.logLevel, name: "roster-lb" });
  const metrics = createProxyMetrics();
  const lb = await startLb({
    listen: config.listen,
    backends: config.backends,
    policy: config.policy,
    forward: {
      retryBufferBytes: config.retryBufferBytes,
      maxAttempts: config.maxAttempts,
      queueTimeoutMs: config.queueTimeoutMs,
      exposeBackend: config.exposeBackend,
      isIdempotent: idempotentMatcher(config.idempotentMethods),
      ...(config.classifier !== undefined ? { classify: createClassifier(config.classifier) } : {}),
    },
    ...(config.orca !== undefined ? { orca: config.orca } : {}),
    retryThrottle: config.retryThrottle,
    limits: config.limits,
    connection: config.backend,
    healthCheck: config.healthCheck,
    outlierDetection: config.outlierDetection,
    ...withHealthLogging(lbHooks(log, metrics), log),
  });
  const admin = await observeLb(lb, metrics, log, config.admin, () => ({
    policy: config.policy.name,
    ...(config.classifier !== undefined ? { classifier: config.classifier } : {}),
  }));
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
      const live = lb.channel.reconfigurePolicy(next.policy.name, next.policyOptions);
      log.info(
        {
          backends: next.backends.map((b) => b.key),
          policySettings: live ? "applied" : "unchanged (restart to change)",
        },
        `${why}: config reloaded`,
      );
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
