import * as grpc from "@grpc/grpc-js";

/**
 * Heartbeats for long handlers (server-streaming and bidi methods). While the work runs, the handler
 * writes a heartbeat message every `intervalMs` (default 1 s); then the result, and the call ends OK.
 * Proxies that cut a call quiet for too long (nginx's `grpc_read_timeout`, Envoy's
 * `stream_idle_timeout`, cloud load balancers' idle timeouts) see bytes every interval and leave it be.
 *
 * The response message should hold the beat and the result in a oneof (proto/roster/task/v1/task.proto):
 *
 *   message SolveReply { oneof kind { roster.task.v1.Heartbeat heartbeat = 1; Solution result = 2; } }
 *
 *   handlers: {
 *     Solve: withHeartbeats(async (call, signal) => solve(call.request, signal)),
 *   }
 *
 * and the client takes the result with `resultOf(stream)`, which skips the beats. Other message shapes
 * work through `heartbeat` / `result` (server) and `isHeartbeat` / `result` (client).
 */

export interface Heartbeat {
  /** 1, 2, 3… per call. */
  readonly seq: number;
  /** Milliseconds since the work started. */
  readonly elapsed_ms: number;
}

export interface HeartbeatOptions<Res> {
  /** Milliseconds between heartbeats (default 1000). */
  readonly intervalMs?: number;
  /** The message sent as a heartbeat (default `{ heartbeat: beat }`). */
  readonly heartbeat?: (beat: Heartbeat) => unknown;
  /** The message sent with the result (default `{ result }`). */
  readonly result?: (result: Res) => unknown;
}

export const defaultHeartbeatIntervalMs = 1000;

/** What withHeartbeats needs of a grpc-js server-streaming or bidi call. */
export interface WritableCall extends NodeJS.EventEmitter {
  readonly cancelled: boolean;
  write(message: unknown): boolean;
  end(): void;
}

function checkInterval(ms: number, field: string): number {
  if (!Number.isFinite(ms) || ms < 1) throw new RangeError(`${field}: must be a number ≥ 1 (ms), got ${ms}`);
  return ms;
}

/**
 * Wraps `work` into a handler for a server-streaming or bidi method: heartbeats while it runs, then its
 * result, then OK. `signal` aborts when the call is cancelled (the client went away or its deadline
 * passed); heartbeats stop then. A rejection ends the call with its gRPC `code` or UNKNOWN.
 */
export function withHeartbeats<Call extends WritableCall, Res>(
  work: (call: Call, signal: AbortSignal) => Promise<Res> | Res,
  options: HeartbeatOptions<Res> = {},
): (call: Call) => void {
  const intervalMs = checkInterval(options.intervalMs ?? defaultHeartbeatIntervalMs, "intervalMs");
  const beatMessage = options.heartbeat ?? ((beat: Heartbeat) => ({ heartbeat: beat }));
  const resultMessage = options.result ?? ((result: Res) => ({ result }));
  return (call: Call) => {
    const started = performance.now();
    const abort = new AbortController();
    let seq = 0;
    let blocked = false; // a beat is still waiting in grpc-js's buffer: skip beats until it drains
    const onDrain = () => {
      blocked = false;
    };
    call.on("drain", onDrain);
    const timer = setInterval(() => {
      if (blocked || call.cancelled) return;
      seq++;
      const ok = call.write(beatMessage({ seq, elapsed_ms: Math.round(performance.now() - started) }));
      if (!ok) blocked = true;
    }, intervalMs);
    const stop = () => {
      clearInterval(timer);
      call.off("drain", onDrain);
    };
    let answered = false;
    const cancel = () => {
      // grpc-js also says 'cancelled' after every status it sent: only one before the answer counts.
      if (answered) return;
      stop();
      abort.abort(new Error("call cancelled"));
    };
    // A call reset before its handler ran has already said 'cancelled'.
    if (call.cancelled) cancel();
    else call.once("cancelled", cancel);
    Promise.resolve()
      .then(() => work(call, abort.signal))
      .then(
        (result) => {
          answered = true;
          stop();
          if (call.cancelled) return;
          call.write(resultMessage(result));
          call.end();
        },
        (err: unknown) => {
          answered = true;
          stop();
          if (call.cancelled) return;
          call.emit("error", toStatus(err));
        },
      );
  };
}

export function toStatus(err: unknown): { code: number; details: string } {
  const e = err as { code?: unknown; details?: unknown; message?: unknown };
  if (typeof e?.code === "number" && Number.isInteger(e.code) && e.code > 0 && e.code <= 16) {
    return { code: e.code, details: String(e.details ?? e.message ?? "") };
  }
  return { code: grpc.status.UNKNOWN, details: `handler failed: ${String(e?.message ?? err)}` };
}

export interface ResultOptions<Res> {
  /** Default: the message has a `heartbeat` field set. */
  readonly isHeartbeat?: (message: unknown) => boolean;
  /** Default: the message's `result` field. */
  readonly result?: (message: unknown) => Res;
  /** Called for each heartbeat skipped. */
  readonly onHeartbeat?: (message: unknown) => void;
  /**
   * Cancel the call when no message (beat or result) came for this long, ms: the server or the path
   * to it is gone though the connection looks alive. Default: off.
   */
  readonly staleAfterMs?: number;
}

/** What resultOf needs of a grpc-js client stream (plain grpc-js or roster/client's createClient). */
export interface ReadableCall extends NodeJS.EventEmitter {
  cancel(): void;
}

/**
 * The result of a call made to a `withHeartbeats` handler: skips heartbeats, resolves with the
 * result (the last non-heartbeat message's `result`) once the call ends OK, and rejects with the
 * call's error otherwise. Works on any grpc-js ClientReadableStream or ClientDuplexStream.
 */
export function resultOf<Res = unknown>(
  stream: ReadableCall,
  options: ResultOptions<Res> = {},
): Promise<Res> {
  const isHeartbeat =
    options.isHeartbeat ?? ((m: unknown) => (m as { heartbeat?: unknown } | null)?.heartbeat != null);
  const pick = options.result ?? ((m: unknown) => (m as { result: Res }).result);
  const staleAfterMs =
    options.staleAfterMs === undefined ? undefined : checkInterval(options.staleAfterMs, "staleAfterMs");
  return new Promise<Res>((resolve, reject) => {
    let result: { value: Res } | undefined;
    let stale: NodeJS.Timeout | undefined;
    let staleError: Error | undefined;
    const arm = () => {
      if (staleAfterMs === undefined) return;
      clearTimeout(stale);
      stale = setTimeout(() => {
        staleError = new Error(`no heartbeat for ${staleAfterMs} ms: call cancelled`);
        stream.cancel();
      }, staleAfterMs);
    };
    arm();
    stream.on("data", (m: unknown) => {
      arm();
      if (isHeartbeat(m)) options.onHeartbeat?.(m);
      else result = { value: pick(m) };
    });
    stream.once("error", (err: Error) => {
      clearTimeout(stale);
      reject(staleError ?? err);
    });
    stream.once("status", (s: grpc.StatusObject) => {
      clearTimeout(stale);
      if (s.code !== grpc.status.OK) return; // 'error' carries it
      if (result === undefined) reject(new Error("the call ended OK without a result"));
      else resolve(result.value);
    });
  });
}
