import { ConfigError } from "./errors.ts";

/**
 * Small validators for policy configs. Core cannot import zod (it imports nothing outside core), so
 * policies read their raw config through these; every error names the field.
 */

export function asRecord(raw: unknown, field: string): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(field, "must be an object");
  return raw as Record<string, unknown>;
}

/** Throws when `raw` has keys outside `known`, so typos are not silently ignored. */
export function rejectUnknownKeys(
  raw: Record<string, unknown>,
  known: readonly string[],
  field: string,
): void {
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) {
      throw new ConfigError(
        field ? `${field}.${key}` : key,
        `unknown setting; known: ${known.join(", ") || "(none)"}`,
      );
    }
  }
}

export interface NumberRule {
  default: number;
  min?: number;
  max?: number;
  integer?: boolean;
}

export function readNumber(
  raw: Record<string, unknown>,
  key: string,
  rule: NumberRule,
  field: string,
): number {
  const name = field ? `${field}.${key}` : key;
  const v = raw[key];
  if (v === undefined) return rule.default;
  if (typeof v !== "number" || !Number.isFinite(v))
    throw new ConfigError(name, `must be a number, got ${JSON.stringify(v)}`);
  if (rule.integer && !Number.isInteger(v)) throw new ConfigError(name, `must be a whole number, got ${v}`);
  if (rule.min !== undefined && v < rule.min)
    throw new ConfigError(name, `must be at least ${rule.min}, got ${v}`);
  if (rule.max !== undefined && v > rule.max)
    throw new ConfigError(name, `must be at most ${rule.max}, got ${v}`);
  return v;
}

export function readBoolean(
  raw: Record<string, unknown>,
  key: string,
  dflt: boolean,
  field: string,
): boolean {
  const v = raw[key];
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") throw new ConfigError(field ? `${field}.${key}` : key, `must be true or false`);
  return v;
}
