// Runs h2load (pinned to the load core) and reads what it measured.
import { readFileSync, rmSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { type ChildRegistry, lastLines } from "./proc.ts";

export interface LoadSpec {
  port: number;
  urlPath: string;
  requestFile: string;
  connections: number;
  streams: number;
  /** Seconds of load (`-D`); ignored when `requests` is given. */
  durationS: number;
  /** A fixed number of calls (`-n`) instead of a duration. */
  requests?: number;
  /** Give up on h2load after this many seconds; default durationS + 30. */
  timeoutS?: number;
  core: number;
  /** Per-request log to write (and read back); none for warm-up. */
  logFile: string | undefined;
}

export interface LoadResult {
  total: number;
  done: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  /** CPU seconds h2load used (user + system), from the shell's `times`. */
  cpuS: number;
  output: string;
}

const SLACK_S = 30;

export async function runH2load(registry: ChildRegistry, spec: LoadSpec): Promise<LoadResult> {
  const args = [
    "-c",
    String(spec.connections),
    "-m",
    String(spec.streams),
    ...(spec.requests === undefined ? ["-D", String(spec.durationS)] : ["-n", String(spec.requests)]),
    "-d",
    spec.requestFile,
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    ...(spec.logFile === undefined ? [] : ["--log-file", spec.logFile]),
    `http://127.0.0.1:${spec.port}${spec.urlPath}`,
  ];
  // bash's `times` prints the CPU time of its finished children (h2load) after h2load exits.
  const script = `taskset -c ${spec.core} h2load "$@"; rc=$?; times; exit $rc`;
  const child = registry.spawn("h2load", "bash", ["-c", script, "h2load", ...args]);
  let output = "";
  child.proc.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  const limitMs = (spec.timeoutS ?? spec.durationS + SLACK_S) * 1000;
  const exit = await Promise.race([child.exited, sleep(limitMs).then(() => "timeout" as const)]);
  if (exit === "timeout") {
    await registry.kill(child);
    throw new Error(`h2load did not finish within ${limitMs / 1000} s`);
  }
  if (exit !== 0) throw new Error(`h2load exited ${exit}: ${lastLines(child.tail())}`);
  const requests =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      output,
    );
  if (requests === null) throw new Error(`cannot parse h2load output: ${lastLines(output)}`);
  const n = (i: number): number => Number(requests[i]);
  return {
    total: n(1),
    done: n(3),
    succeeded: n(4),
    failed: n(5),
    errored: n(6),
    timeout: n(7),
    cpuS: childrenCpuSeconds(output),
    output,
  };
}

/** Parses the second line of bash `times` ("0m1.234s 0m0.567s": children's user and system). */
function childrenCpuSeconds(output: string): number {
  const lines = output.trim().split("\n");
  const last = lines[lines.length - 1] ?? "";
  const times = [...last.matchAll(/(\d+)m([\d.]+)s/g)];
  let seconds = 0;
  for (const t of times) seconds += Number(t[1]) * 60 + Number(t[2]);
  return seconds;
}

export interface Latencies {
  count: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
}

/**
 * Percentiles of the per-request durations in an h2load --log-file (tab-separated: start µs since
 * epoch, HTTP status, µs until the end of the response), counting only HTTP 200 responses.
 * Deletes the file afterwards: at 15k calls/s it grows by ~0.5 MB a second.
 */
export function readLatencies(logFile: string): Latencies {
  const text = readFileSync(logFile, "utf8");
  rmSync(logFile, { force: true });
  const values: number[] = [];
  let start = 0;
  // One pass over the text, bounded by its length.
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const firstTab = text.indexOf("\t", start);
    const secondTab = firstTab < 0 ? -1 : text.indexOf("\t", firstTab + 1);
    if (secondTab > 0 && secondTab < end && text.slice(firstTab + 1, secondTab) === "200") {
      values.push(Number(text.slice(secondTab + 1, end)));
    }
    start = end + 1;
  }
  const sorted = Float64Array.from(values).sort();
  return {
    count: sorted.length,
    p50Ms: percentile(sorted, 0.5) / 1000,
    p99Ms: percentile(sorted, 0.99) / 1000,
    p999Ms: percentile(sorted, 0.999) / 1000,
  };
}

/** Nearest-rank percentile of sorted values; NaN when there are none. */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1] ?? Number.NaN;
}
