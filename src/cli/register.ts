import { type Address, formatAddress, parseAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import {
  checkRegistration,
  EtcdRegistration,
  type EtcdRegistrationEvent,
  type EtcdRegistrationOptions,
} from "../discovery/etcd-registration.ts";
import { parseEtcdHosts, parsePrefix } from "../discovery/etcd-target.ts";
import { createLogger, type Logger } from "../observe/log.ts";

/** The registration flags `roster register` and `roster serve` share. */
export interface RegistrationFlags {
  etcd?: string;
  prefix?: string;
  weight?: string;
  label?: string[];
  leaseTtl?: string;
  appVersion?: string;
}

export interface RegisterFlags extends RegistrationFlags {
  address?: string;
  logLevel?: string;
}

/** `--label k=v` (repeatable) → labels; errors name the flag. */
export function parseLabels(texts: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const text of texts) {
    const eq = text.indexOf("=");
    if (eq <= 0) throw new ConfigError("--label", `"${text}" is not KEY=VALUE`);
    labels[text.slice(0, eq)] = text.slice(eq + 1);
  }
  return labels;
}

function numberFlag(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) throw new ConfigError(flag, `"${text}" is not a number`);
  return n;
}

/**
 * Registration settings from flags, or undefined without `--etcd`. `address` is what balancers
 * connect to. Errors are ConfigErrors naming the flag.
 */
export function registrationFromFlags(
  flags: RegistrationFlags,
  address: Address,
): Omit<EtcdRegistrationOptions, "onEvent"> | undefined {
  if (flags.etcd === undefined) {
    for (const f of ["prefix", "weight", "label", "leaseTtl", "appVersion"] as const)
      if (flags[f] !== undefined)
        throw new ConfigError(`--${f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, "needs --etcd");
    return undefined;
  }
  const hosts = parseEtcdHosts(flags.etcd, "--etcd");
  if (flags.prefix === undefined) throw new ConfigError("--prefix", "is needed with --etcd");
  const prefix = parsePrefix(flags.prefix, "--prefix");
  const weight = numberFlag(flags.weight, "--weight");
  const ttlSeconds = numberFlag(flags.leaseTtl, "--lease-ttl");
  try {
    checkRegistration({
      ...(weight !== undefined ? { weight } : {}),
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    });
  } catch (err) {
    if (err instanceof ConfigError)
      throw new ConfigError(err.field === "ttl" ? "--lease-ttl" : `--${err.field}`, err.detail);
    throw err;
  }
  if (address.kind === "tcp" && (address.host === "0.0.0.0" || address.host === "::"))
    throw new ConfigError(
      "--advertise",
      `${formatAddress(address)} is not an address others can connect to; give the one they should use`,
    );
  return {
    target: { hosts, prefix },
    address,
    ...(weight !== undefined ? { weight } : {}),
    labels: parseLabels(flags.label ?? []),
    ...(flags.appVersion !== undefined ? { version: flags.appVersion } : {}),
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
  };
}

/** Log lines for a registration's events. */
export function logRegistration(log: Logger): (e: EtcdRegistrationEvent) => void {
  let down = false;
  return (e) => {
    switch (e.kind) {
      case "registered":
        down = false;
        log.info(
          { key: e.key, lease: e.lease, ttlSeconds: e.ttlSeconds },
          e.again ? `registered again in etcd as ${e.key}` : `registered in etcd as ${e.key}`,
        );
        break;
      case "unavailable":
        if (down) log.debug({ key: e.key, error: e.error, retryInMs: e.retryInMs }, "etcd still unavailable");
        else
          log.warn(
            { key: e.key, error: e.error, retryInMs: e.retryInMs },
            `etcd registration failed (${e.error}); retrying`,
          );
        down = true;
        break;
      case "deregistered":
        log.info({ key: e.key }, `deregistered from etcd (${e.key} removed)`);
        break;
      case "deregister-failed":
        log.warn(
          { key: e.key, error: e.error },
          `could not deregister from etcd (${e.error}); the key goes when its lease expires`,
        );
        break;
    }
  };
}

/**
 * `roster register`: keeps ADDRESS registered under PREFIX while it runs (a sidecar for a backend
 * that is not `roster serve`). SIGTERM/SIGINT deregister and exit 0; if it is killed, the lease
 * expires after its TTL and etcd removes the key.
 */
export async function runRegister(flags: RegisterFlags): Promise<void> {
  if (flags.etcd === undefined) throw new ConfigError("--etcd", "is needed (HOST:PORT of etcd)");
  if (flags.address === undefined) throw new ConfigError("--address", "is needed (HOST:PORT or unix:PATH)");
  const address = parseAddress(flags.address, "--address");
  const options = registrationFromFlags(flags, address)!;
  const log = createLogger({ name: "roster-register", ...(flags.logLevel ? { level: flags.logLevel } : {}) });
  const registration = new EtcdRegistration({ ...options, onEvent: logRegistration(log) });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "deregistering");
    await registration.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  // Keeps the process alive while the registration's timers are unref'd (they are, while etcd is down).
  const alive = setInterval(() => {}, 1 << 30);
  void registration.start().then(() => {
    if (!stopping) process.stdout.write(`REGISTERED ${registration.key}\n`);
  });
  process.on("exit", () => clearInterval(alive));
}
