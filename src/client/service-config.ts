import type * as grpc from "@grpc/grpc-js";
import type { RetryThrottleConfig } from "../core/retry-throttle.ts";
import type { RetrySettings } from "./presets.ts";

/**
 * What the client knows about each method of a service, and the grpc-js service config it builds
 * from that: the balancing policy, gRFC A6 `retryPolicy` for idempotent methods, `retryThrottling`.
 *
 * Idempotency comes from the proto (`option idempotency_level = IDEMPOTENT | NO_SIDE_EFFECTS`, read as
 * `roster serve` reads it: proto-loader keeps method options) or from the caller's lists. Methods
 * with NO_SIDE_EFFECTS are also safe to hedge: a copy running twice changes nothing.
 */
export type IdempotencyLevel = "NO_SIDE_EFFECTS" | "IDEMPOTENT" | undefined;

export interface MethodInfo {
  /** The key in the service definition (proto-loader: the proto's name; generated code: its own). */
  readonly key: string;
  /** "/pkg.Service/Method" */
  readonly path: string;
  readonly service: string;
  readonly method: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  readonly retried: boolean;
  readonly hedged: boolean;
  // biome-ignore lint/suspicious/noExplicitAny: the message types are the caller's
  readonly definition: grpc.MethodDefinition<any, any>;
}

export function idempotencyLevelOf(options: unknown): IdempotencyLevel {
  if (typeof options !== "object" || options === null) return undefined;
  const level = (options as { idempotency_level?: unknown }).idempotency_level;
  if (level === "NO_SIDE_EFFECTS" || level === 1) return "NO_SIDE_EFFECTS";
  if (level === "IDEMPOTENT" || level === 2) return "IDEMPOTENT";
  return undefined;
}

export interface MethodMarks {
  /** Methods (keys, proto names or full paths) retried besides those the proto declares. */
  idempotent?: readonly string[];
  /** Methods hedged besides those the proto declares NO_SIDE_EFFECTS (unary only). */
  hedge?: readonly string[];
  /** Methods never hedged, even when declared NO_SIDE_EFFECTS. */
  noHedge?: readonly string[];
}

export function methodsOf(definition: grpc.ServiceDefinition, marks: MethodMarks = {}): MethodInfo[] {
  const methods: MethodInfo[] = [];
  const named = (list: readonly string[] | undefined, key: string, path: string, method: string) =>
    list?.some((n) => n === key || n === path || n === method) ?? false;
  for (const [key, def] of Object.entries(definition)) {
    const m = /^\/([^/]+)\/([^/]+)$/.exec(def.path);
    if (m === null) throw new Error(`method ${key}: path ${def.path} is not /service/method`);
    const [, service, method] = m as unknown as [string, string, string];
    const level = idempotencyLevelOf((def as { options?: unknown }).options);
    const unary = !def.requestStream && !def.responseStream;
    const hedged =
      unary &&
      !named(marks.noHedge, key, def.path, method) &&
      (level === "NO_SIDE_EFFECTS" || named(marks.hedge, key, def.path, method));
    methods.push({
      key,
      path: def.path,
      service,
      method,
      requestStream: def.requestStream,
      responseStream: def.responseStream,
      retried: level !== undefined || hedged || named(marks.idempotent, key, def.path, method),
      hedged,
      definition: def,
    });
  }
  for (const [list, what] of [
    [marks.idempotent, "idempotent"],
    [marks.hedge, "hedge"],
    [marks.noHedge, "noHedge"],
  ] as const) {
    for (const n of list ?? []) {
      if (!methods.some((m) => n === m.key || n === m.path || n === m.method))
        throw new Error(
          `${what}: no method ${n} in the service (has ${methods.map((m) => m.key).join(", ")})`,
        );
    }
  }
  return methods;
}

const seconds = (ms: number) =>
  `${Math.max(0.001, ms / 1000)
    .toFixed(3)
    .replace(/\.?0+$/, "")}s`;

export interface ServiceConfigInput {
  policy: string;
  policyConfig?: object;
  methods: readonly MethodInfo[];
  retry: RetrySettings | false;
  budget: RetryThrottleConfig;
}

/** The grpc-js service config (the JSON of `grpc.service_config`). */
export function buildServiceConfig(input: ServiceConfigInput): object {
  const config: Record<string, unknown> = {
    loadBalancingConfig: [{ [input.policy]: input.policyConfig ?? {} }],
  };
  const retried = input.methods.filter((m) => m.retried);
  if (input.retry !== false && input.retry.maxAttempts >= 2 && retried.length > 0) {
    const r = input.retry;
    config["methodConfig"] = [
      {
        name: retried.map((m) => ({ service: m.service, method: m.method })),
        retryPolicy: {
          maxAttempts: Math.min(5, r.maxAttempts),
          initialBackoff: seconds(r.initialBackoffMs),
          maxBackoff: seconds(r.maxBackoffMs),
          backoffMultiplier: r.backoffMultiplier,
          retryableStatusCodes: r.retryableStatusCodes,
        },
      },
    ];
    config["retryThrottling"] = { maxTokens: input.budget.maxTokens, tokenRatio: input.budget.tokenRatio };
  }
  return config;
}
