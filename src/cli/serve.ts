import { parseAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { sleep } from "../discovery/etcd-client.ts";
import { EtcdRegistration } from "../discovery/etcd-registration.ts";
import { createLogger } from "../observe/log.ts";
import { createProxyMetrics } from "../observe/metrics.ts";
import { type ClassifierConfig, parseClassifierConfig } from "../proxy/classify.ts";
import { ServeStartError, serve } from "../server/supervisor.ts";
import { logRegistration, type RegistrationFlags, registrationFromFlags } from "./register.ts";
import { lbHooks, observeLb } from "./wiring.ts";

export interface ServeFlags extends RegistrationFlags {
  advertise?: string;
  deregisterDelay?: string;
  workers?: number;
  listen?: string;
  admin?: string;
  policy?: string;
  drainGrace?: number;
  classify?: string;
  skillsDir?: string;
  history?: number;
  logLevel?: string;
}

/** `--classify`: header:NAME | authority | method | regex:FROM:PATTERN (FROM: method, authority, header=NAME). */
export function classifierFromFlag(text: string): ClassifierConfig {
  const raw: unknown =
    text === "authority"
      ? { authority: true }
      : text === "method"
        ? { method: true }
        : text.startsWith("header:")
          ? { header: text.slice("header:".length) }
          : text.startsWith("regex:")
            ? regexFlag(text.slice("regex:".length))
            : text;
  return parseClassifierConfig(raw, "--classify");
}

function regexFlag(rest: string): unknown {
  const colon = rest.indexOf(":");
  if (colon < 0) return rest;
  const from = rest.slice(0, colon);
  return {
    from: from.startsWith("header=") ? `header:${from.slice(7)}` : from,
    regex: rest.slice(colon + 1),
  };
}

export async function runServe(module: string, flags: ServeFlags): Promise<void> {
  const listen = parseAddress(flags.listen ?? "127.0.0.1:50051", "--listen");
  const adminAddress = flags.admin === undefined ? undefined : parseAddress(flags.admin, "--admin");
  const policy =
    flags.policy === undefined ? undefined : createDefaultRegistry().resolve(flags.policy, {}, "--policy");
  const classifier = flags.classify === undefined ? undefined : classifierFromFlag(flags.classify);
  // Checked before anything starts; the address is taken again once the listener has its port.
  const advertised = flags.advertise === undefined ? undefined : parseAddress(flags.advertise, "--advertise");
  if (flags.advertise !== undefined && flags.etcd === undefined)
    throw new ConfigError("--advertise", "needs --etcd");
  registrationFromFlags(flags, advertised ?? listen);
  const deregisterDelayMs = flags.deregisterDelay === undefined ? 1000 : Number(flags.deregisterDelay);
  if (!Number.isInteger(deregisterDelayMs) || deregisterDelayMs < 0)
    throw new ConfigError(
      "--deregister-delay",
      `must be a whole number of ms >= 0, got "${flags.deregisterDelay}"`,
    );
  const log = createLogger({ name: "roster-serve", ...(flags.logLevel ? { level: flags.logLevel } : {}) });
  const metrics = createProxyMetrics();
  let server: Awaited<ReturnType<typeof serve>>;
  try {
    server = await serve({
      module,
      ...(flags.workers !== undefined ? { workers: flags.workers } : {}),
      listen,
      ...(policy !== undefined ? { policy } : {}),
      ...(flags.drainGrace !== undefined ? { drainGraceMs: flags.drainGrace } : {}),
      ...(classifier !== undefined ? { classifier } : {}),
      ...(flags.skillsDir !== undefined || flags.history !== undefined
        ? {
            skills: {
              ...(flags.skillsDir !== undefined ? { dir: flags.skillsDir } : {}),
              ...(flags.history !== undefined ? { history: flags.history } : {}),
            },
          }
        : {}),
      lb: lbHooks(log, metrics),
      onEvent: (e) => {
        switch (e.kind) {
          case "worker-ready":
            log.info({ worker: e.worker, workerPid: e.workerPid }, `worker ${e.worker} is serving`);
            break;
          case "worker-exited":
            if (e.expected) log.info({ ...e }, `worker ${e.worker} exited`);
            else
              log.error(
                { ...e },
                `worker ${e.worker} (pid ${e.workerPid}) died: ${e.signal ?? `exit code ${e.code}`}`,
              );
            break;
          case "worker-restart-scheduled":
            if (e.crashLoop) {
              log.error(
                { ...e },
                `worker ${e.worker} is crash-looping (${e.recentCrashes} crashes in 60 s); next start in ${e.inMs} ms`,
              );
            } else log.warn({ ...e }, `restarting worker ${e.worker} in ${e.inMs} ms`);
            break;
          case "worker-failed":
            log.error({ worker: e.worker }, e.message);
            break;
          case "reload":
            log.info({ phase: e.phase, message: e.message }, `rolling restart ${e.phase}`);
            break;
          case "worker-added":
            log.info({ ...e }, `worker ${e.worker} added (scale ${e.from} → ${e.to})`);
            break;
          case "worker-removed":
            log.info(
              { ...e },
              `worker ${e.worker} removed (scale ${e.from} → ${e.to}): open calls finish, then it exits`,
            );
            break;
        }
      },
    });
  } catch (err) {
    if (err instanceof ServeStartError) throw new ConfigError("", `cannot start: ${err.message}`);
    throw err;
  }
  const admin = await observeLb(server.lb, metrics, log, adminAddress, () => ({ workers: server.workers() }));
  log.info(
    {
      listen: server.address,
      admin: admin?.address,
      workers: server.workers().length,
      policy: policy?.name ?? "least_request",
    },
    `roster serve listening on ${server.address} with ${server.workers().length} workers`,
  );
  const registrationOptions = registrationFromFlags(
    flags,
    advertised ?? parseAddress(server.address, "--listen"),
  );
  const registration =
    registrationOptions === undefined
      ? undefined
      : new EtcdRegistration({ ...registrationOptions, onEvent: logRegistration(log) });
  // In the background: serving does not wait for etcd (the registration retries until it is reachable).
  void registration?.start();
  process.on("SIGHUP", () => void server.reload());
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    if (registration !== undefined) {
      // Leave the membership first, while still accepting: balancers drop this server, and calls they
      // sent before noticing still land here; then drain.
      log.info({ signal, key: registration.key }, "draining: leaving etcd first");
      await registration.close();
      await sleep(deregisterDelayMs);
    }
    log.info({ signal }, "draining: health NOT_SERVING, no new connections, open calls finish");
    await server.close();
    await admin?.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  // As gunicorn and unicorn: SIGTTIN adds a worker, SIGTTOU removes one gracefully (never below 1).
  process.on("SIGTTIN", () => {
    if (!stopping) void server.scale(server.size() + 1);
  });
  process.on("SIGTTOU", () => {
    if (stopping) return;
    const n = server.size();
    if (n <= 1)
      log.warn({ signal: "SIGTTOU", workers: n }, `SIGTTOU: already at ${n} worker; not removing it`);
    else void server.scale(n - 1);
  });
}
