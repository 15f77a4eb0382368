import type { RetryThrottleConfig } from "../core/retry-throttle.ts";
import type { HedgeDelayConfig } from "./hedge-delay.ts";
import type { LimiterConfig } from "./limiter.ts";
import type { PoolSizingConfig } from "./pool-sizing.ts";

/**
 * Named client settings for the three places a client usually runs. Each value's reason is in
 * docs/client.md; the reference is Momento's published client tuning (Laptop, InRegion,
 * InRegion LowLatency). Every field can be overridden: `presets.inRegion({ deadlineMs: 300 })`, and
 * nested groups merge field by field (`{ limiter: { maxConcurrent: 20 } }` keeps the queue settings).
 */
export interface RetrySettings {
  /** Attempts in all, the first included (gRFC A6: 2–5; grpc-js caps at 5). */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  /** Status names retried (A6: UNAVAILABLE is the safe default for idempotent methods). */
  retryableStatusCodes: string[];
}

export interface HedgingSettings extends HedgeDelayConfig {
  /** Attempts in all: 2 = one hedge. */
  maxAttempts: number;
}

export interface KeepaliveSettings {
  timeMs: number;
  timeoutMs: number;
  permitWithoutCalls: boolean;
}

export interface ClientPreset {
  readonly name: string;
  /** Default deadline of every call, ms (a call's own option wins). */
  deadlineMs: number;
  keepalive: KeepaliveSettings;
  /** A channel idle this long closes its connections (grpc.client_idle_timeout_ms). */
  idleTimeoutMs: number;
  pool: PoolSizingConfig;
  limiter: LimiterConfig;
  /** Retries of idempotent methods through grpc-js's retryPolicy; false: none. */
  retry: RetrySettings | false;
  /** Hedging of unary methods marked safe to hedge; false: none. */
  hedging: HedgingSettings | false;
  /** gRFC A6 token bucket bounding retries (grpc-js's, per target) and hedges (ours, per client). */
  budget: RetryThrottleConfig;
}

/** A preset's overrides: any field; nested groups field by field; `false` turns retry or hedging off. */
export interface PresetOverrides {
  deadlineMs?: number;
  idleTimeoutMs?: number;
  keepalive?: Partial<KeepaliveSettings>;
  pool?: Partial<PoolSizingConfig>;
  limiter?: Partial<LimiterConfig>;
  retry?: Partial<RetrySettings> | false;
  hedging?: Partial<HedgingSettings> | false;
  budget?: Partial<RetryThrottleConfig>;
}

function merge(base: ClientPreset, o: PresetOverrides | undefined): ClientPreset {
  if (o === undefined) return base;
  const group = <T extends object>(
    b: T | false,
    v: Partial<T> | false | undefined,
    defaults: T,
  ): T | false => (v === undefined ? b : v === false ? false : { ...(b === false ? defaults : b), ...v });
  return {
    name: base.name,
    deadlineMs: o.deadlineMs ?? base.deadlineMs,
    idleTimeoutMs: o.idleTimeoutMs ?? base.idleTimeoutMs,
    keepalive: { ...base.keepalive, ...o.keepalive },
    pool: { ...base.pool, ...o.pool },
    limiter: { ...base.limiter, ...o.limiter },
    // Turning on what a preset has off takes these defaults for the fields not given.
    retry: group(base.retry, o.retry, RETRY_DEFAULTS),
    hedging: group(base.hedging, o.hedging, HEDGING_DEFAULTS),
    budget: { ...base.budget, ...o.budget },
  };
}

const RETRY_DEFAULTS: RetrySettings = {
  maxAttempts: 3,
  initialBackoffMs: 20,
  maxBackoffMs: 500,
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
};

const HEDGING_DEFAULTS: HedgingSettings = {
  maxAttempts: 2,
  percentile: 95,
  initialDelayMs: 20,
  minDelayMs: 5,
  maxDelayMs: 200,
};

const BUDGET: RetryThrottleConfig = { maxTokens: 10, tokenRatio: 0.1 };

/** A developer machine talking to a service in a distant region, over Wi-Fi or a VPN. */
export function laptop(overrides?: PresetOverrides): ClientPreset {
  return merge(
    {
      name: "laptop",
      deadlineMs: 5000,
      keepalive: { timeMs: 60_000, timeoutMs: 20_000, permitWithoutCalls: false },
      idleTimeoutMs: 240_000,
      pool: { min: 1, max: 2, streamsPerConnection: 100, idleMs: 30_000 },
      limiter: { maxConcurrent: 100, maxQueue: 10_000, maxQueueWaitMs: Infinity },
      retry: {
        maxAttempts: 3,
        initialBackoffMs: 100,
        maxBackoffMs: 2000,
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
      hedging: false,
      budget: { ...BUDGET },
    },
    overrides,
  );
}

/** A service calling another in the same region (same VPC, a few ms apart): throughput first. */
export function inRegion(overrides?: PresetOverrides): ClientPreset {
  return merge(
    {
      name: "inRegion",
      deadlineMs: 1100,
      keepalive: { timeMs: 30_000, timeoutMs: 10_000, permitWithoutCalls: false },
      idleTimeoutMs: 240_000,
      pool: { min: 1, max: 8, streamsPerConnection: 100, idleMs: 30_000 },
      limiter: { maxConcurrent: 100, maxQueue: 5000, maxQueueWaitMs: Infinity },
      retry: { ...RETRY_DEFAULTS },
      hedging: false,
      budget: { ...BUDGET },
    },
    overrides,
  );
}

/** In-region, where p99.9 matters more than throughput: short deadline, fail fast, hedge reads. */
export function lowLatency(overrides?: PresetOverrides): ClientPreset {
  return merge(
    {
      name: "lowLatency",
      deadlineMs: 500,
      keepalive: { timeMs: 10_000, timeoutMs: 5000, permitWithoutCalls: false },
      idleTimeoutMs: 240_000,
      pool: { min: 2, max: 8, streamsPerConnection: 100, idleMs: 60_000 },
      limiter: { maxConcurrent: 50, maxQueue: 500, maxQueueWaitMs: 100 },
      retry: {
        maxAttempts: 2,
        initialBackoffMs: 5,
        maxBackoffMs: 50,
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
      hedging: { ...HEDGING_DEFAULTS, initialDelayMs: 10, minDelayMs: 2, maxDelayMs: 100 },
      budget: { ...BUDGET },
    },
    overrides,
  );
}

export const presets = { laptop, inRegion, lowLatency } as const;
