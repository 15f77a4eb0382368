import { asRecord, readNumber, rejectUnknownKeys } from "./config.ts";

/**
 * Retry throttling after gRFC A6 ("Retry throttling"): a token bucket per cluster. Every failed call
 * (a status the retry policy would retry) takes a token, every other call adds `tokenRatio`; retries
 * are allowed only while more than half the tokens remain. So when a cluster is failing broadly,
 * retries stop instead of multiplying the load on it. Transparent retries of calls that never reached
 * a backend do not go through here (A6 does not count them either).
 */
export interface RetryThrottleConfig {
  maxTokens: number;
  tokenRatio: number;
}

export function parseRetryThrottleConfig(raw: unknown, field = "retry.throttle"): RetryThrottleConfig {
  const r = asRecord(raw, field);
  rejectUnknownKeys(r, ["maxTokens", "tokenRatio"], field);
  return {
    // A6 bounds: maxTokens in (0, 1000], tokenRatio > 0 (at most 3 decimals in service config).
    maxTokens: readNumber(r, "maxTokens", { default: 10, min: 1, max: 1000 }, field),
    tokenRatio: readNumber(r, "tokenRatio", { default: 0.1, min: 0.001, max: 1000 }, field),
  };
}

export class RetryThrottle {
  readonly #max: number;
  readonly #ratio: number;
  #tokens: number;

  constructor(config: RetryThrottleConfig) {
    this.#max = config.maxTokens;
    this.#ratio = config.tokenRatio;
    this.#tokens = config.maxTokens;
  }

  get tokens(): number {
    return this.#tokens;
  }

  /** Records one call's outcome: `failed` when it ended with a retryable status. */
  record(failed: boolean): void {
    this.#tokens = failed ? Math.max(0, this.#tokens - 1) : Math.min(this.#max, this.#tokens + this.#ratio);
  }

  /** Whether a retry may be attempted now. */
  allows(): boolean {
    return this.#tokens > this.#max / 2;
  }
}
