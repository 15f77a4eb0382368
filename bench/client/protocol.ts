// What run.ts and runner.ts (one client process per measured run) say to each other over IPC.

/** One client configuration. */
export interface ClientSpec {
  /** Name in the tables: "plain", "roster rr", "auto", "fixed-3", … */
  label: string;
  /** plain: a grpc-js client (generated constructor) with the given policy in its service config; roster: createClient. */
  kind: "plain" | "roster";
  /** grpc-js load-balancing policy: "round_robin", "roster_least_request", … */
  policy: string;
  /** roster only: a fixed pool (min = max = N); absent: the preset's automatic pool. */
  fixedChannels?: number;
}

export interface RunSpec {
  client: ClientSpec;
  /** grpc-js target over every backend: "ipv4:127.0.0.1:p1,127.0.0.1:p2,…". */
  target: string;
  /** roster only: "inRegion" | "lowLatency" | "laptop". */
  preset: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** Per-call deadline, ms (both clients). */
  deadlineMs: number;
  /** roster only: limiter.maxConcurrent override (0: the preset's). */
  limiterMax: number;
  /** Calls sent one at a time before the load, each checked (status OK, payload echoed). */
  checkCalls: number;
}

export interface RunResult {
  elapsedS: number;
  /** Calls that ended OK inside the window. */
  calls: number;
  /** Calls that ended with an error inside the window, by status name. */
  errors: Record<string, number>;
  firstError: string | undefined;
  badPayloads: number;
  /** served_by → calls, inside the window. */
  servedBy: Record<string, number>;
  /** Latency percentiles of the OK calls of the window, ms (hdr-histogram-js, 3 significant digits). */
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  /** The window's latency histogram (µs), compressed base64. */
  histogram: string;
  /** This client process's CPU during the window (user + system), µs. */
  clientCpuUs: number;
  /** roster only: the pool's size at the end of the window, its largest and time-weighted mean size in the window, channels ever opened. */
  pool?: { end: number; max: number; mean: number; opened: number };
  /** roster only: calls that waited in the limiter's queue at the window's end. */
  queuedAtEnd?: number;
}

export type RunnerMessage =
  | { type: "window-start" }
  | { type: "window-end" }
  | { type: "result"; result: RunResult }
  | { type: "failed"; message: string };
