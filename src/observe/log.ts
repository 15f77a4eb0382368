/**
 * Structured logging: pino, one JSON object per line, to stderr by default (stdout stays free for a
 * command's own output, e.g. `roster bench --json`).
 *
 * Lines carry `level` as a label ("info", not 30) and `time` as ISO-8601, so they read well without
 * pino-pretty; `err` and `error` fields go through pino's error serializer (message, type, stack).
 * Writes are synchronous, like Node's own stderr on files and pipes: the lines before a crash or a
 * `process.exit()` are never lost, and Roster logs events (backend state, reloads), not every call.
 */
import pino from "pino";
import { ConfigError } from "../core/errors.ts";

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** trace, debug, info, warn, error, fatal or silent (any case). Default: env ROSTER_LOG_LEVEL, else "info". */
  level?: string;
  /** The `name` field of every line. */
  name?: string;
  /** A file descriptor or a file path (appended to). Default 2 (stderr). */
  destination?: number | string;
}

export const LOG_LEVELS: readonly string[] = [...Object.keys(pino.levels.values), "silent"];

export function createLogger(options: LoggerOptions = {}): Logger {
  const fromEnv = options.level === undefined;
  const raw = fromEnv ? process.env["ROSTER_LOG_LEVEL"] || "info" : options.level!;
  const level = parseLogLevel(raw, fromEnv ? "ROSTER_LOG_LEVEL" : "logLevel");

  const dest = options.destination ?? 2;
  let stream: pino.DestinationStream;
  try {
    stream = pino.destination({ dest, sync: true });
  } catch (err) {
    throw new ConfigError("log destination", `cannot open ${dest}: ${(err as Error).message}`);
  }
  return pino(
    {
      level,
      ...(options.name === undefined ? {} : { name: options.name }),
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
    },
    stream,
  );
}

/** "INFO " → "info"; anything else than a known level throws a ConfigError naming `field` and the levels. */
export function parseLogLevel(text: string, field = "logLevel"): string {
  const level = text.trim().toLowerCase();
  if (!LOG_LEVELS.includes(level)) {
    throw new ConfigError(field, `unknown log level "${text}"; levels are ${LOG_LEVELS.join(", ")}`);
  }
  return level;
}
