// The h2load client of bench/serve-scaling (`--client h2load`): nghttp2's load generator sends the Echo
// call as a raw gRPC frame over ONE HTTP/2 connection (-c 1 -m <concurrency>), so the load costs far
// less CPU than a grpc-js client and the front of `roster serve` is what is measured.
// Pure helpers (the gRPC frame, the per-request log) come from bench/proxy-overhead.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { grpcFrame } from "../proxy-overhead/echo.ts";

export { readLatencies } from "../proxy-overhead/h2load.ts";

export const H2LOAD = "/usr/bin/h2load";
/** The :path of roster.demo.Echo/Echo (proto/roster/demo/echo.proto). */
export const ECHO_PATH = "/roster.demo.Echo/Echo";
/** h2load must end within its duration plus this, or it is killed and the run fails. */
const SLACK_S = 30;
const OUTPUT_LIMIT = 64 * 1024;

export function h2loadAvailable(): boolean {
  return existsSync(H2LOAD);
}

function varint(value: number): number[] {
  const out: number[] = [];
  let n = value >>> 0;
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/**
 * The request body h2load sends: one gRPC length-prefixed message holding
 * roster.demo.EchoRequest { payload = 1 (bytes); work_us = 2 (uint32) }.
 */
export function echoRequestFrame(payload: Uint8Array, workUs: number): Buffer {
  const message = Buffer.concat([
    Buffer.from([0x0a, ...varint(payload.length)]),
    payload,
    Buffer.from(workUs > 0 ? [0x10, ...varint(workUs)] : []),
  ]);
  return grpcFrame(message);
}

export interface H2loadSpec {
  port: number;
  requestFile: string;
  connections: number;
  /** Streams in flight per connection (-m). */
  streams: number;
  /** -D seconds (timing-based run), or undefined with `requests`. */
  durationS?: number;
  /** -n requests (count-based run, for the sample check). */
  requests?: number;
  verbose?: boolean;
  logFile?: string;
}

export interface H2loadResult {
  total: number;
  done: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  /** CPU seconds h2load used (user + system), from bash's `times` after it exited. */
  cpuS: number;
  output: string;
}

/** Process groups of the h2load runs under way (h2load under a bash that reports its CPU). */
const running = new Set<number>();

/** SIGKILLs every h2load still running (usable from an 'exit' handler: synchronous). */
export function killRunningH2load(): void {
  for (const pgid of running) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  running.clear();
}

export async function runH2load(spec: H2loadSpec): Promise<H2loadResult> {
  const args = [
    "-c",
    String(spec.connections),
    "-m",
    String(spec.streams),
    ...(spec.durationS !== undefined ? ["-D", String(spec.durationS)] : ["-n", String(spec.requests ?? 1)]),
    "-d",
    spec.requestFile,
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    ...(spec.verbose ? ["-v"] : []),
    ...(spec.logFile !== undefined ? ["--log-file", spec.logFile] : []),
    `http://127.0.0.1:${spec.port}${ECHO_PATH}`,
  ];
  // bash's `times` prints the CPU time of its finished children (h2load) once h2load has exited.
  const script = `"${H2LOAD}" "$@"; rc=$?; times; exit $rc`;
  const child = spawn("bash", ["-c", script, "h2load", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: killRunningH2load reaches bash and h2load
  });
  if (child.pid === undefined) throw new Error("cannot spawn bash for h2load");
  const pgid = child.pid;
  running.add(pgid);
  let output = "";
  const keep = (chunk: Buffer) => {
    if (output.length < OUTPUT_LIMIT) output += chunk.toString("utf8");
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const limitMs = ((spec.durationS ?? 10) + SLACK_S) * 1000;
  let timer: NodeJS.Timeout | undefined;
  const code = await new Promise<number | string>((resolve) => {
    timer = setTimeout(() => resolve("timeout"), limitMs);
    child.once("exit", (c, signal) => resolve(c ?? signal ?? "unknown"));
  });
  clearTimeout(timer);
  if (code === "timeout") {
    killRunningH2load();
    throw new Error(`h2load did not finish within ${limitMs / 1000} s`);
  }
  running.delete(pgid);
  if (code !== 0) throw new Error(`h2load exited ${code}: ${tail(output)}`);
  const requests =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      output,
    );
  if (requests === null) throw new Error(`cannot parse h2load's output: ${tail(output)}`);
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

/** The second line of bash `times` ("0m1.234s 0m0.567s"): the children's user and system time. */
function childrenCpuSeconds(output: string): number {
  const lines = output.trim().split("\n");
  const last = lines[lines.length - 1] ?? "";
  let seconds = 0;
  for (const t of last.matchAll(/(\d+)m([\d.]+)s/g)) seconds += Number(t[1]) * 60 + Number(t[2]);
  return seconds;
}

function tail(text: string): string {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .slice(-3)
    .join(" | ");
}

export interface VerboseCheck {
  /** Responses whose :status was 200. */
  ok: number;
  /** Header blocks carrying grpc-status (a trailers-only answer: an error, or no reply message). */
  trailersOnly: string[];
  /** Other :status values seen. */
  otherStatuses: string[];
}

/**
 * Reads h2load -v output: h2load prints each response's header block ("[stream_id=N] name: value"),
 * never the trailers. A unary reply with a message has grpc-status in its trailers only; a header
 * block with grpc-status is a trailers-only answer, which for Echo means an error (UNAVAILABLE…).
 */
export function checkVerbose(output: string): VerboseCheck {
  const result: VerboseCheck = { ok: 0, trailersOnly: [], otherStatuses: [] };
  for (const line of output.split("\n")) {
    const m = /^\[stream_id=\d+\] (:?[^:\s]+): (.*)$/.exec(line.trim());
    if (m === null) continue;
    const [, name, value] = m;
    if (name === ":status") {
      if (value === "200") result.ok++;
      else result.otherStatuses.push(value ?? "");
    } else if (name === "grpc-status" || name === "grpc-message") {
      result.trailersOnly.push(`${name}: ${value}`);
    }
  }
  return result;
}
