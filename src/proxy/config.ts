import { dirname, isAbsolute, resolve as resolvePath } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import type { BalancerRegistry, PolicySpec } from "../core/balancer.ts";
import { type Address, type Endpoint, parseAddress, staticEndpoint } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { type OutlierDetectionConfig, parseOutlierConfig } from "../core/health/outlier-detection.ts";
import { parseRetryThrottleConfig, type RetryThrottleConfig } from "../core/retry-throttle.ts";
import { type EtcdKeyTarget, parseEtcdKeyUrl } from "../discovery/etcd-key.ts";
import { type DiscoveryTarget, parseDiscoveryUrl } from "../discovery/target.ts";
import { defaultHealthCheck } from "../health/grpc-health.ts";
import { type ClassifierConfig, createClassifier, parseClassifierConfig } from "./classify.ts";
import { idempotentPathsFromProtos } from "./idempotency.ts";
import type { ClusterOptions, LbClusters } from "./lb.ts";
import { defaultFrontLimits, type FrontLimits } from "./proxy-options.ts";
import { CLUSTER_NAME, DEFAULT_CLUSTER, parseRouting, type RoutingConfig } from "./routes.ts";

/**
 * `roster lb` configuration: the YAML file and the flags both end here, so both get the same checks and
 * the same field-named errors. Documented field by field in docs/configuration.md.
 */
const addressText = z.string().min(1);
const positiveInt = z.number().int().positive();

const backendSchema = z.union([
  addressText,
  z.strictObject({ address: addressText, weight: z.number().positive().optional() }),
]);

const policySchema = z.union([z.string().min(1), z.looseObject({ name: z.string().min(1) })]);

const healthCheckSchema = z.strictObject({
  service: z.string().optional(),
  intervalMs: positiveInt.optional(),
  timeoutMs: positiveInt.optional(),
});

/** A named cluster: the per-cluster subset of the top-level settings. */
const clusterSchema = z.strictObject({
  backends: z.array(backendSchema).optional(),
  /** etcd://HOST:PORT/PREFIX or dns://NAME:PORT instead of `backends` (checked by parseDiscoveryUrl). */
  discovery: z.string().optional(),
  policy: policySchema.optional(),
  healthCheck: healthCheckSchema.optional(),
  outlierDetection: z.unknown().optional(),
  classifier: z.unknown().optional(),
  orca: z.boolean().optional(),
});

const routeSchema = z.strictObject({
  match: z.strictObject({
    service: z.string().optional(),
    methodPrefix: z.string().optional(),
    header: z.string().optional(),
    exact: z.string().optional(),
    prefix: z.string().optional(),
    regex: z.string().optional(),
  }),
  cluster: z.string().optional(),
  clusterFromHeader: z.boolean().optional(),
});

export const lbConfigSchema = z.strictObject({
  listen: addressText.optional(),
  admin: addressText.optional(),
  policy: policySchema.optional(),
  backends: z.array(backendSchema).optional(),
  /** etcd://HOST:PORT/PREFIX or dns://NAME:PORT: the cluster "default"'s members instead of `backends`. */
  discovery: z.string().optional(),
  /** etcd://HOST:PORT/KEY: live settings, a document of this schema overlaid on the file and flags. */
  settings: z.string().optional(),
  limits: z
    .strictObject({
      maxConcurrentStreams: positiveInt.optional(),
      maxHeaderListSize: positiveInt.optional(),
      windowSize: z
        .number()
        .int()
        .min(65535)
        .max(2 ** 31 - 1)
        .optional(),
      maxConnectionAgeMs: z.number().int().min(0).optional(),
      maxConnectionAgeGraceMs: z.number().int().min(0).optional(),
      idleTimeoutMs: z.number().int().min(0).optional(),
      sendStallTimeoutMs: z.number().int().min(0).optional(),
      keepalive: z
        .strictObject({
          minPingIntervalMs: z.number().int().min(0).optional(),
          maxPingStrikes: z.number().int().min(0).optional(),
          permitWithoutCalls: z.boolean().optional(),
          keepaliveTimeMs: z.number().int().min(0).optional(),
          keepaliveTimeoutMs: positiveInt.optional(),
        })
        .optional(),
    })
    .optional(),
  retry: z
    .strictObject({
      bufferBytes: z.number().int().min(0).optional(),
      maxAttempts: z.number().int().min(1).max(10).optional(),
      idempotentMethods: z
        .array(z.string().regex(/^\/?[\w.]+\/(\w+|\*)$/, "must be pkg.Service/Method or pkg.Service/*"))
        .optional(),
      /** .proto files whose methods declare `idempotency_level` IDEMPOTENT or NO_SIDE_EFFECTS. */
      idempotentProtos: z.array(z.string().min(1)).optional(),
      /** Import paths for those files (relative paths: from the config file's folder). */
      protoIncludeDirs: z.array(z.string().min(1)).optional(),
      throttle: z.unknown().optional(),
    })
    .optional(),
  queueTimeoutMs: positiveInt.optional(),
  exposeBackend: z.boolean().optional(),
  backend: z
    .strictObject({
      keepaliveMs: z.number().int().min(0).optional(),
      keepaliveTimeoutMs: positiveInt.optional(),
      connectTimeoutMs: positiveInt.optional(),
      maxSessions: z.number().int().min(1).max(64).optional(),
    })
    .optional(),
  healthCheck: healthCheckSchema.optional(),
  /** Checked field by field by parseOutlierConfig (gRFC A50 names). */
  outlierDetection: z.unknown().optional(),
  /** Checked by parseClassifierConfig: { header } | { authority: true } | { method: true } | { regex, from }. */
  classifier: z.unknown().optional(),
  /** Read ORCA out-of-band reports from the backends (default: when the policy asks for them). */
  orca: z.boolean().optional(),
  /** Named clusters beside the top-level one ("default"); names checked in resolveLbConfig. */
  clusters: z.record(z.string(), clusterSchema).optional(),
  /** Checked against the cluster names by parseRouting (routes.ts). */
  routes: z.array(routeSchema).optional(),
  defaultCluster: z.string().min(1).optional(),
  noRoute: z.enum(["unimplemented", "unavailable"]).optional(),
  log: z
    .strictObject({ level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]) })
    .optional(),
});

export type RawLbConfig = z.infer<typeof lbConfigSchema>;

/** One validated cluster: its backends and the settings that belong to it. */
export interface ClusterConfig {
  name: string;
  policy: PolicySpec;
  /** The policy's settings as written (validated by `policy`), for live changes. */
  policyOptions: Record<string, unknown>;
  /** The static backends; empty when `discovery` is set. */
  backends: Endpoint[];
  /** Membership from etcd or DNS (discovery/); undefined: the static `backends`. */
  discovery: DiscoveryTarget | undefined;
  /** Active grpc.health.v1 checks; undefined when off (the default). */
  healthCheck: { service: string; intervalMs: number; timeoutMs: number } | undefined;
  /** Passive outlier ejection (gRFC A50); undefined when off (the default). */
  outlierDetection: OutlierDetectionConfig | undefined;
  /** The request classifier (resume policy); undefined: none, x-roster-class passes untouched. */
  classifier: ClassifierConfig | undefined;
  /** ORCA reports on/off; undefined: on when the policy reads load reports. */
  orca: boolean | undefined;
}

/** A validated configuration, ready to start from. */
export interface LbConfig {
  listen: Address;
  admin: Address | undefined;
  /**
   * Every cluster by name: "default" from the top-level `backends`, `policy`, `healthCheck`…, when
   * `backends` is set; then those under `clusters:`, in file order.
   */
  clusters: Map<string, ClusterConfig>;
  /** Which cluster each call goes to (routes.ts). */
  routing: RoutingConfig;
  limits: FrontLimits;
  retryBufferBytes: number;
  maxAttempts: number;
  /** Full paths ("/pkg.Svc/M") or service prefixes ("/pkg.Svc/") of methods safe to run twice. */
  idempotentMethods: string[];
  retryThrottle: RetryThrottleConfig;
  queueTimeoutMs: number;
  exposeBackend: boolean;
  backend: { keepaliveMs: number; keepaliveTimeoutMs: number; connectTimeoutMs: number; maxSessions: number };
  logLevel: string;
  /** Where live settings are watched (etcd-key.ts); undefined: none. */
  settings: EtcdKeyTarget | undefined;
}

export const defaultListen = "127.0.0.1:50051";

/** Reads and validates a YAML config file's text. Errors are ConfigErrors naming `file` and the field. */
export function parseLbConfigText(text: string, file: string): RawLbConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(file, `is not valid YAML: ${(err as Error).message.split("\n")[0]}`);
  }
  return validateRaw(raw ?? {}, file);
}

export function validateRaw(raw: unknown, where: string): RawLbConfig {
  const result = lbConfigSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path
      .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
      .join("")
      .replace(/^\./, "");
    const message =
      issue.code === "unrecognized_keys"
        ? `unknown setting ${issue.keys.map((k) => `"${k}"`).join(", ")}`
        : issue.message;
    throw new ConfigError(`${where}${field ? `: ${field}` : ""}`, message);
  }
  return result.data;
}

/**
 * Merges file settings with flag settings (flags win) and resolves addresses and the policy.
 * `where` prefixes field names in errors ("roster.yaml" or "flags").
 */
export function resolveLbConfig(raw: RawLbConfig, registry: BalancerRegistry, where: string): LbConfig {
  const at = (field: string) => `${where}: ${field}`;
  const clusters = new Map<string, ClusterConfig>();
  if (raw.backends !== undefined || raw.discovery !== undefined || raw.clusters === undefined) {
    clusters.set(DEFAULT_CLUSTER, resolveCluster(DEFAULT_CLUSTER, raw, registry, at, ""));
  } else {
    // Without top-level backends there is no cluster "default" for these settings to belong to.
    for (const field of ["policy", "healthCheck", "outlierDetection", "classifier", "orca"] as const) {
      if (raw[field] !== undefined)
        throw new ConfigError(
          at(field),
          `belongs to the top-level backends or discovery (the cluster "default"), neither of which is set; put it under clusters.NAME`,
        );
    }
  }
  for (const [name, c] of Object.entries(raw.clusters ?? {})) {
    if (!CLUSTER_NAME.test(name))
      throw new ConfigError(at(`clusters.${name}`), "a cluster name is letters, digits, - _ and .");
    if (clusters.has(name))
      throw new ConfigError(
        at(`clusters.${name}`),
        `the top-level backends are the cluster "${name}" already; rename this cluster or move them into it`,
      );
    clusters.set(name, resolveCluster(name, c, registry, at, `clusters.${name}.`));
  }
  if (clusters.size === 0) throw new ConfigError(at("backends"), "at least one backend is needed");
  const routing = parseRouting(raw, new Set(clusters.keys()), where);
  return {
    listen: parseAddress(raw.listen ?? defaultListen, at("listen")),
    admin: raw.admin === undefined ? undefined : parseAddress(raw.admin, at("admin")),
    clusters,
    routing,
    limits: {
      ...defaultFrontLimits,
      ...raw.limits,
      keepalive: { ...defaultFrontLimits.keepalive, ...raw.limits?.keepalive },
    },
    retryBufferBytes: raw.retry?.bufferBytes ?? 256 * 1024,
    maxAttempts: raw.retry?.maxAttempts ?? 5,
    idempotentMethods: [
      ...(raw.retry?.idempotentMethods ?? []).map((m) => {
        const path = m.startsWith("/") ? m : `/${m}`;
        return path.endsWith("/*") ? path.slice(0, -1) : path;
      }),
      ...idempotentFromProtos(raw.retry, where, at("retry.idempotentProtos")),
    ],
    retryThrottle: parseRetryThrottleConfig(raw.retry?.throttle, at("retry.throttle")),
    queueTimeoutMs: raw.queueTimeoutMs ?? 10_000,
    exposeBackend: raw.exposeBackend ?? false,
    backend: {
      keepaliveMs: raw.backend?.keepaliveMs ?? 20_000,
      keepaliveTimeoutMs: raw.backend?.keepaliveTimeoutMs ?? 10_000,
      connectTimeoutMs: raw.backend?.connectTimeoutMs ?? 5000,
      maxSessions: raw.backend?.maxSessions ?? 8,
    },
    logLevel: raw.log?.level ?? "info",
    settings: raw.settings === undefined ? undefined : parseEtcdKeyUrl(raw.settings, at("settings")),
  };
}

/**
 * Methods declared idempotent in `retry.idempotentProtos` (idempotency.ts). Relative paths are taken
 * from the config file's folder (from the working directory for flags).
 */
function idempotentFromProtos(retry: RawLbConfig["retry"], where: string, field: string): string[] {
  const files = retry?.idempotentProtos ?? [];
  if (files.length === 0) return [];
  const base = where === "flags" ? process.cwd() : dirname(resolvePath(where));
  const from = (p: string) => (isAbsolute(p) ? p : resolvePath(base, p));
  return idempotentPathsFromProtos(
    files.map(from),
    [base, ...(retry?.protoIncludeDirs ?? []).map(from)],
    field,
  );
}

type RawCluster = z.infer<typeof clusterSchema>;

/** One cluster's settings; `prefix` roots its field names ("" for the top level, "clusters.NAME."). */
function resolveCluster(
  name: string,
  raw: RawCluster,
  registry: BalancerRegistry,
  at: (field: string) => string,
  prefix: string,
): ClusterConfig {
  const f = (field: string) => at(prefix + field);
  const policyRaw = raw.policy ?? "least_request";
  const policyName = typeof policyRaw === "string" ? policyRaw : policyRaw.name;
  const { name: _name, ...policyOptions } = typeof policyRaw === "string" ? { name: policyRaw } : policyRaw;
  if (raw.discovery !== undefined && raw.backends !== undefined)
    throw new ConfigError(
      f("discovery"),
      "give backends or discovery, not both (discovery's members are the backends)",
    );
  const discovery =
    raw.discovery === undefined ? undefined : parseDiscoveryUrl(raw.discovery, f("discovery"));
  const backends = (raw.backends ?? []).map((b, i) => {
    const text = typeof b === "string" ? b : b.address;
    const weight = typeof b === "string" ? 1 : (b.weight ?? 1);
    return staticEndpoint(parseAddress(text, f(`backends[${i}]`)), weight);
  });
  const seen = new Set<string>();
  for (const [i, b] of backends.entries()) {
    if (seen.has(b.key)) throw new ConfigError(f(`backends[${i}]`), `${b.key} is listed twice`);
    seen.add(b.key);
  }
  if (backends.length === 0 && discovery === undefined)
    throw new ConfigError(f("backends"), "at least one backend is needed");
  return {
    name,
    policy: registry.resolve(policyName, policyOptions, f("policy")),
    policyOptions,
    backends,
    discovery,
    healthCheck: raw.healthCheck === undefined ? undefined : { ...defaultHealthCheck, ...raw.healthCheck },
    outlierDetection:
      raw.outlierDetection === undefined
        ? undefined
        : parseOutlierConfig(raw.outlierDetection, f("outlierDetection")),
    classifier:
      raw.classifier === undefined ? undefined : parseClassifierConfig(raw.classifier, f("classifier")),
    orca: raw.orca,
  };
}

/** The clusters and routes of a validated config, as startLb and Lb.reconfigure take them. */
export function lbClusters(config: LbConfig): LbClusters {
  const clusters = new Map<string, ClusterOptions>();
  for (const [name, c] of config.clusters)
    clusters.set(name, {
      backends: c.backends,
      ...(c.discovery !== undefined ? { discovery: c.discovery } : {}),
      policy: c.policy,
      policyOptions: c.policyOptions,
      ...(c.healthCheck !== undefined ? { healthCheck: c.healthCheck } : {}),
      ...(c.outlierDetection !== undefined ? { outlierDetection: c.outlierDetection } : {}),
      ...(c.orca !== undefined ? { orca: c.orca } : {}),
      ...(c.classifier !== undefined ? { classify: createClassifier(c.classifier) } : {}),
    });
  return { clusters, routing: config.routing };
}
