import { ConfigError } from "../core/errors.ts";
import { parseDuration } from "./duration.ts";

/**
 * The flags of `roster bench` as commander hands them over (strings), or as a script passes them
 * (numbers allowed). Everything is validated by `parseBenchFlags`; nothing here is trusted.
 */
export interface BenchFlags {
  target?: string;
  /** Comma-separated targets run in alternation. */
  compare?: string;
  proto?: string;
  importPath?: string[];
  call?: string;
  data?: string;
  dataFile?: string;
  payloadSize?: string | number;
  streamMessages?: string | number;
  metadata?: string[];
  connections?: string | number;
  concurrency?: string | number;
  rate?: string | number;
  maxInFlight?: string | number;
  duration?: string;
  calls?: string | number;
  warmup?: string;
  timeout?: string;
  connectTimeout?: string;
  workers?: string | number;
  backendHeader?: string;
  backendField?: string;
  slice?: string;
  json?: string;
  html?: string;
  /** false with --no-progress; a bar is drawn only on a TTY anyway. */
  progress?: boolean;
}

export type LoadModel =
  /** `concurrency` calls in flight; each starts when the previous one of its lane ends. */
  | { kind: "closed"; concurrency: number }
  /** `rate` calls/s on a fixed schedule, whatever the server does; at most `maxInFlight` at once. */
  | { kind: "open"; rate: number; maxInFlight: number };

export type StopRule = { kind: "duration"; ms: number } | { kind: "calls"; count: number };

/** Validated settings of one bench run. */
export interface BenchSettings {
  /** One target, or two or more with `compare`. */
  readonly targets: readonly string[];
  readonly compare: boolean;
  readonly protoFile: string;
  readonly importPaths: readonly string[];
  /** Fully qualified, e.g. "pkg.Service". */
  readonly service: string;
  readonly method: string;
  readonly data: string | undefined;
  readonly dataFile: string | undefined;
  readonly payloadSize: number | undefined;
  readonly streamMessages: number;
  /** Lower-case keys; values of `-bin` keys are base64 text. */
  readonly metadata: readonly (readonly [string, string])[];
  readonly connections: number;
  readonly load: LoadModel;
  readonly stop: StopRule;
  readonly warmupMs: number;
  /** Per-call deadline; 0 = none. */
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly workers: number;
  readonly backendHeader: string;
  readonly backendField: string | undefined;
  /** Time each target gets in turn with `compare`. */
  readonly sliceMs: number;
  readonly json: string | undefined;
  readonly html: string | undefined;
  readonly progress: boolean;
}

export const DEFAULTS = {
  concurrency: 16,
  maxInFlight: 10_000,
  duration: "10s",
  warmup: "2s",
  timeout: "10s",
  connectTimeout: "5s",
  slice: "1s",
  backendHeader: "x-roster-backend",
} as const;

const HEADER_NAME = /^[0-9a-z_.-]+$/;

/** Turns flags into settings; throws a ConfigError naming the flag at fault. */
export function parseBenchFlags(flags: BenchFlags): BenchSettings {
  const targets = parseTargets(flags);
  if (flags.proto === undefined || flags.proto === "") throw new ConfigError("--proto", "is required");
  if (flags.call === undefined) throw new ConfigError("--call", "is required (pkg.Service/Method)");
  const { service, method } = parseCall(flags.call);

  const given = (["data", "dataFile"] as const).filter((k) => flags[k] !== undefined);
  if (given.length > 1) throw new ConfigError("--data", "give --data or --data-file, not both");

  const concurrency = optionalInt(flags.concurrency, "--concurrency", 1, 100_000);
  const rate = optionalNumber(flags.rate, "--rate");
  if (concurrency !== undefined && rate !== undefined) {
    throw new ConfigError(
      "--rate",
      "choose --concurrency (closed loop) or --rate (open loop), not both; --max-in-flight caps an open loop",
    );
  }
  const maxInFlight = optionalInt(flags.maxInFlight, "--max-in-flight", 1, 1_000_000);
  if (maxInFlight !== undefined && rate === undefined) {
    throw new ConfigError("--max-in-flight", "applies to the open loop only (--rate)");
  }
  const load: LoadModel =
    rate !== undefined
      ? { kind: "open", rate, maxInFlight: maxInFlight ?? DEFAULTS.maxInFlight }
      : { kind: "closed", concurrency: concurrency ?? DEFAULTS.concurrency };

  const calls = optionalInt(flags.calls, "--calls", 1, Number.MAX_SAFE_INTEGER);
  if (calls !== undefined && flags.duration !== undefined) {
    throw new ConfigError("--calls", "give --duration or --calls, not both");
  }
  const stop: StopRule =
    calls !== undefined
      ? { kind: "calls", count: calls }
      : { kind: "duration", ms: positiveDuration(flags.duration ?? DEFAULTS.duration, "--duration") };

  const workers = optionalInt(flags.workers, "--workers", 1, 64) ?? 1;
  if (load.kind === "closed" && workers > load.concurrency) {
    throw new ConfigError("--workers", `${workers} workers cannot share --concurrency ${load.concurrency}`);
  }
  if (stop.kind === "calls" && workers > stop.count) {
    throw new ConfigError("--workers", `${workers} workers cannot share --calls ${stop.count}`);
  }

  const backendHeader = (flags.backendHeader ?? DEFAULTS.backendHeader).toLowerCase();
  if (!HEADER_NAME.test(backendHeader)) {
    throw new ConfigError("--backend-header", `"${flags.backendHeader}" is not a valid header name`);
  }
  const backendField = flags.backendField;
  if (backendField !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(backendField)) {
    throw new ConfigError("--backend-field", `"${backendField}" is not a field name`);
  }

  const sliceText = flags.slice ?? DEFAULTS.slice;
  if (flags.slice !== undefined && targets.length < 2) {
    throw new ConfigError("--slice", "applies to --compare only");
  }

  const sliceMs = positiveDuration(sliceText, "--slice");
  if (targets.length > 1 && load.kind === "open" && (load.rate / workers) * (sliceMs / 1000) < 1) {
    throw new ConfigError(
      "--slice",
      `${sliceText} holds less than one call per worker at --rate ${load.rate}; make it longer`,
    );
  }

  return {
    targets,
    compare: targets.length > 1,
    protoFile: flags.proto,
    importPaths: flags.importPath ?? [],
    service,
    method,
    data: flags.data,
    dataFile: flags.dataFile,
    payloadSize: optionalInt(flags.payloadSize, "--payload-size", 0, 1 << 30),
    streamMessages: optionalInt(flags.streamMessages, "--stream-messages", 1, 1_000_000) ?? 1,
    metadata: (flags.metadata ?? []).map(parseMetadata),
    connections: optionalInt(flags.connections, "--connections", 1, 10_000) ?? 1,
    load,
    stop,
    warmupMs: parseDuration(flags.warmup ?? DEFAULTS.warmup, "--warmup"),
    timeoutMs: parseDuration(flags.timeout ?? DEFAULTS.timeout, "--timeout"),
    connectTimeoutMs: positiveDuration(flags.connectTimeout ?? DEFAULTS.connectTimeout, "--connect-timeout"),
    workers,
    backendHeader,
    backendField,
    sliceMs,
    json: nonEmpty(flags.json, "--json"),
    html: nonEmpty(flags.html, "--html"),
    progress: flags.progress ?? true,
  };
}

function parseTargets(flags: BenchFlags): string[] {
  if (flags.target !== undefined && flags.compare !== undefined) {
    throw new ConfigError("--compare", "lists every target itself; drop --target");
  }
  if (flags.compare !== undefined) {
    const list = flags.compare
      .split(",")
      .map((t) => t.trim())
      .filter((t) => t !== "");
    if (list.length < 2) throw new ConfigError("--compare", "needs two or more targets: T1,T2[,...]");
    for (const t of list) checkTarget(t, "--compare");
    if (new Set(list).size !== list.length) throw new ConfigError("--compare", "lists a target twice");
    return list;
  }
  if (flags.target === undefined) throw new ConfigError("--target", "is required (HOST:PORT)");
  checkTarget(flags.target, "--target");
  return [flags.target];
}

/** HOST:PORT, [IPv6]:PORT or unix:PATH. */
export function checkTarget(target: string, field: string): void {
  if (/^unix:.+/.test(target)) return;
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/.exec(target);
  const port = m === null ? Number.NaN : Number(m[2]);
  if (m === null || port < 1 || port > 65535) {
    throw new ConfigError(field, `"${target}" is not HOST:PORT, [IPv6]:PORT or unix:PATH`);
  }
}

/** `pkg.Service/Method`, `/pkg.Service/Method` or `pkg.Service.Method`. */
export function parseCall(text: string): { service: string; method: string } {
  const trimmed = text.trim().replace(/^\//, "");
  const slash = trimmed.lastIndexOf("/");
  const cut = slash >= 0 ? slash : trimmed.lastIndexOf(".");
  const service = trimmed.slice(0, Math.max(cut, 0));
  const method = trimmed.slice(cut + 1);
  const ident = /^[A-Za-z_][A-Za-z0-9_]*$/;
  if (cut <= 0 || !ident.test(method) || !service.split(".").every((part) => ident.test(part))) {
    throw new ConfigError("--call", `"${text}" is not pkg.Service/Method`);
  }
  return { service, method };
}

/** `key=value`; the key is lower-cased; `-bin` values must be base64. */
export function parseMetadata(text: string): [string, string] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new ConfigError("--metadata", `"${text}" is not key=value`);
  const key = text.slice(0, eq).trim().toLowerCase();
  const value = text.slice(eq + 1);
  if (!HEADER_NAME.test(key)) throw new ConfigError("--metadata", `"${key}" is not a valid metadata key`);
  if (key.startsWith("grpc-") || key === "te" || key === "content-type" || key === "user-agent") {
    throw new ConfigError("--metadata", `"${key}" is reserved for the gRPC transport`);
  }
  if (key.endsWith("-bin")) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
      throw new ConfigError("--metadata", `the value of binary key "${key}" must be base64`);
    }
  } else if (!/^[\x20-\x7e]*$/.test(value)) {
    throw new ConfigError("--metadata", `the value of "${key}" must be printable ASCII (use a -bin key)`);
  }
  return [key, value];
}

function nonEmpty(v: string | undefined, field: string): string | undefined {
  if (v === undefined) return undefined;
  if (v.trim() === "") throw new ConfigError(field, "needs a file name");
  return v;
}

function toNumber(v: string | number, field: string): number {
  const n = typeof v === "number" ? v : v.trim() === "" ? Number.NaN : Number(v);
  if (!Number.isFinite(n)) throw new ConfigError(field, `"${v}" is not a number`);
  return n;
}

function optionalInt(v: string | number | undefined, field: string, min: number, max: number) {
  if (v === undefined) return undefined;
  const n = toNumber(v, field);
  if (!Number.isInteger(n)) throw new ConfigError(field, `must be a whole number, got ${v}`);
  if (n < min) throw new ConfigError(field, `must be at least ${min}, got ${v}`);
  if (n > max) throw new ConfigError(field, `must be at most ${max}, got ${v}`);
  return n;
}

function optionalNumber(v: string | number | undefined, field: string): number | undefined {
  if (v === undefined) return undefined;
  const n = toNumber(v, field);
  if (n <= 0) throw new ConfigError(field, `must be more than 0, got ${v}`);
  if (n > 10_000_000) throw new ConfigError(field, `must be at most 10000000, got ${v}`);
  return n;
}

function positiveDuration(text: string, field: string): number {
  const ms = parseDuration(text, field);
  if (ms <= 0) throw new ConfigError(field, "must be longer than 0");
  return ms;
}
