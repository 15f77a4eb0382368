import { ConfigError } from "../core/errors.ts";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Milliseconds of a duration flag: `250ms`, `3s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
 * Throws a ConfigError naming `field` for anything else, or for a negative or non-finite value.
 */
export function parseDuration(text: string, field: string): number {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (m === null) {
    throw new ConfigError(field, `"${text}" is not a duration (examples: 500ms, 30s, 2m, 1h)`);
  }
  const ms = Number(m[1]) * (UNITS[m[2] ?? "s"] ?? 1000);
  if (!Number.isFinite(ms)) throw new ConfigError(field, `"${text}" is too long`);
  return Math.round(ms);
}

/** "850ms", "3s", "1.5s", "2m30s": the shortest exact-enough form for tables and titles. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${trim(ms / 1000)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms - minutes * 60_000) / 1000);
  return seconds === 0 ? `${minutes}m` : `${minutes}m${seconds}s`;
}

function trim(n: number): string {
  return String(Math.round(n * 10) / 10);
}
