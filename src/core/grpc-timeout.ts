/**
 * The `grpc-timeout` header (gRPC over HTTP/2 spec): 1–8 ASCII digits and a unit
 * H (hours), M (minutes), S (seconds), m (ms), u (µs), n (ns).
 */
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Milliseconds, or `undefined` when the value is malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  if (value.length < 2 || value.length > 9) return undefined;
  const perUnit = UNIT_MS[value[value.length - 1]!];
  if (perUnit === undefined) return undefined;
  const digits = value.slice(0, -1);
  for (let i = 0; i < digits.length; i++) {
    const c = digits.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  return Number(digits) * perUnit;
}

/**
 * Formats a remaining time with the finest unit that fits in 8 digits, rounding up so the backend
 * never sees a shorter deadline than the truth; at least 1 unit (a spent deadline is the caller's case).
 */
export function formatGrpcTimeout(ms: number): string {
  const us = Math.ceil(ms * 1000);
  if (us < 100_000_000) return `${Math.max(us, 1)}u`;
  const whole = Math.ceil(ms);
  if (whole < 100_000_000) return `${whole}m`;
  const s = Math.ceil(ms / 1000);
  if (s < 100_000_000) return `${s}S`;
  const m = Math.ceil(ms / 60_000);
  if (m < 100_000_000) return `${m}M`;
  return `${Math.min(Math.ceil(ms / 3_600_000), 99_999_999)}H`;
}
