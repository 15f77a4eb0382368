import type { Backend, Channel } from "../channel/channel.ts";
import { formatGrpcTimeout, parseGrpcTimeout } from "../core/grpc-timeout.ts";
import type { CallDone } from "../core/load/load-tracker.ts";
import type { PickContext } from "../core/picker.ts";
import { CLASS_HEADER } from "../core/policies/resume.ts";
import { type CallStatus, Status } from "../core/status.ts";
import type { H2Stream, StreamOwner } from "../http2/connection.ts";
import type { FrameBackend } from "../platform/h2-backend.ts";
import { decideAfterReset } from "./call-decision.ts";
import { encodeGrpcMessage } from "./grpc-response.ts";
import { headerOf } from "./headers.ts";
import type { ForwardOptions } from "./proxy-options.ts";

/**
 * One proxied call on the frame-level data path: a server-role stream on a client's connection (the
 * front) mapped to a client-role stream on a pooled backend connection. Header blocks arrive decoded
 * once (flat [name, value, …] lists) and are encoded once for the other side; DATA payloads pass
 * through as views of the bytes read (re-framed, not copied, above 1 KiB).
 *
 * Phases (a tagged value, one place):
 *
 *   waiting ──pick──▶ attempting ──response headers──▶ committed ──trailers──▶ done
 *                        │  └─ idempotent: ──▶ holding (headers + first message held) ──▶ committed
 *                        └──refused / never sent / lost (decideAfterReset)──▶ waiting (retry) | done
 *   any ──deadline / client reset / failure──▶ done
 *
 * Uncommitted (waiting, attempting, holding) means no response byte reached the client, so the call
 * can move to another backend while every request byte sent so far is in the retry buffer.
 *
 * Flow control: bytes read on one side are consumed (their window given back) only once the other
 * side has queued them below HIGH_WATER; otherwise they are owed and given back on `onWritable`. So a
 * slow reader on either side stalls its own stream, and the balancer holds at most a window plus
 * HIGH_WATER per stream.
 */

/** Queued bytes on the far stream past which the near stream's window is not given back. */
const HIGH_WATER = 64 * 1024;
/** Longest an idempotent call's first response message is held back waiting for its trailers. */
const HOLD_MS = 1000;
const EMPTY = Buffer.alloc(0);

type Phase =
  | { readonly kind: "waiting" }
  | { readonly kind: "attempting" }
  | { readonly kind: "holding"; readonly headers: string[]; data: Buffer[]; bytes: number }
  | { readonly kind: "committed" }
  | { readonly kind: "done" };

const WAITING: Phase = { kind: "waiting" };
const ATTEMPTING: Phase = { kind: "attempting" };
const COMMITTED: Phase = { kind: "committed" };
const DONE: Phase = { kind: "done" };

export interface FrameCallHooks {
  /** A stream on the backend side, from the chosen backend. */
  readonly openStream: (
    backend: Backend,
    headers: readonly string[],
    owner: StreamOwner,
  ) => H2Stream | undefined;
}

export function forwardFrameCall(
  front: H2Stream,
  headers: string[],
  endStream: boolean,
  channel: Channel<FrameBackend>,
  options: ForwardOptions,
): void {
  const call = new FrameCall(front, headers, channel, options);
  front.owner = call;
  call.start(endStream);
}

/** The call is its own pick context (no object or closure made per pick). */
class FrameCall implements StreamOwner, PickContext {
  readonly #front: H2Stream;
  /** The request headers, rewritten in place (grpc-timeout, class) before each attempt. */
  readonly #headers: string[];
  readonly #channel: Channel<FrameBackend>;
  readonly #o: ForwardOptions;
  readonly #startedAt: number;
  readonly #path: string;
  #phase: Phase = WAITING;
  #backend: Backend<FrameBackend> | undefined;
  #stream: H2Stream | undefined;
  #loadDone: CallDone | undefined;
  #tried: Set<string> | undefined;
  #attempts = 0;
  /** Request bytes so far while they fit the retry buffer; undefined once given up. */
  #buffer: Buffer[] | undefined = [];
  #buffered = 0;
  #frontEnded = false;
  /** Response headers went to the client. */
  #responded = false;
  /** Front bytes read but not yet given back (the backend stream's queue was full). */
  #owedFront = 0;
  /** Backend bytes read but not yet given back (the client's stream queue was full). */
  #owedBackend = 0;
  #timeoutIndex = -1;
  #deadlineAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #holdTimer: NodeJS.Timeout | undefined;
  /** Bounds a wait in the channel's queue (queueTimeoutMs). */
  #queueTimer: NodeJS.Timeout | undefined;
  #cancelWait: (() => void) | undefined;

  constructor(front: H2Stream, headers: string[], channel: Channel<FrameBackend>, o: ForwardOptions) {
    this.#front = front;
    this.#headers = headers;
    this.#channel = channel;
    this.#o = o;
    this.#startedAt = o.clock.now();
    this.#path = headerOf(headers, ":path") ?? "";
  }

  start(endStream: boolean): void {
    this.#frontEnded = endStream;
    const headers = this.#headers;
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i] === "grpc-timeout") {
        this.#timeoutIndex = i + 1;
        break;
      }
    }
    if (this.#timeoutIndex >= 0) {
      const raw = headers[this.#timeoutIndex]!;
      const ms = parseGrpcTimeout(raw);
      if (ms === undefined) {
        this.#fail({ code: Status.INTERNAL, message: `roster: malformed grpc-timeout header "${raw}"` });
        return;
      }
      this.#deadlineAt = this.#startedAt + ms;
      this.#timer = setTimeout(() => this.#onDeadline(), ms);
    }
    const classify = this.#o.classify;
    if (classify !== undefined) {
      const value = classify((name) => headerOf(headers, name));
      // Whatever class the client sent is replaced.
      for (let i = headers.length - 2; i >= 0; i -= 2) {
        if (headers[i] === CLASS_HEADER) headers.splice(i, 2);
      }
      headers.push(CLASS_HEADER, value);
    }
    deferStart(this);
  }

  /** Runs the deferred first pick (`deferStart`), unless the client has already reset the call. */
  startNow(): void {
    if (this.#phase.kind === "waiting") this.#pickAndStart();
  }

  // --- picking --------------------------------------------------------------------------------

  // PickContext
  get path(): string {
    return this.#path;
  }

  header(name: string): string | undefined {
    return headerOf(this.#headers, name);
  }

  get exclude(): ReadonlySet<string> | undefined {
    return this.#tried;
  }

  #pickAndStart(): void {
    if (this.#phase.kind === "done") return;
    this.#cancelWait = undefined;
    const result = this.#channel.pick(this);
    switch (result.kind) {
      case "pick":
        this.#attempt(this.#channel.backendOf(result.candidate));
        return;
      case "fail":
        this.#fail(result.status);
        return;
      case "queue": {
        // The pick has asked the backends asleep in backoff to connect now (channel.ts, Readiness).
        this.#phase = WAITING;
        this.#cancelWait = this.#channel.onPickerChange(() => this.#pickAndStart());
        if (this.#queueTimer !== undefined) return;
        const waitMs = this.#o.queueTimeoutMs;
        const left =
          this.#deadlineAt === undefined ? Number.POSITIVE_INFINITY : this.#deadlineAt - this.#o.clock.now();
        // A deadline sooner than the queue timeout ends the wait itself (#onDeadline).
        if (waitMs < left) {
          this.#queueTimer = setTimeout(() => {
            if (this.#phase.kind !== "waiting") return;
            this.#fail({
              code: Status.UNAVAILABLE,
              message: `roster: ${this.#channel.unavailableMessage()}; waited ${waitMs} ms (queueTimeoutMs)`,
            });
          }, waitMs);
        }
        return;
      }
    }
  }

  #attempt(backend: Backend<FrameBackend>): void {
    clearTimeout(this.#queueTimer);
    this.#queueTimer = undefined;
    this.#attempts++;
    this.#backend = backend;
    if (this.#deadlineAt !== undefined) {
      this.#headers[this.#timeoutIndex] = formatGrpcTimeout(
        Math.max(this.#deadlineAt - this.#o.clock.now(), 0),
      );
    }
    const buffer = this.#buffer;
    const stream = backend.connection.open(this.#headers, false, this);
    if (stream === undefined) {
      this.#retryOrFail(backend, "had no connection able to take the call");
      return;
    }
    this.#phase = ATTEMPTING;
    this.#stream = stream;
    this.#loadDone = backend.load.begin(this.#o.clock.now());
    const conn = stream.conn;
    if (buffer !== undefined && buffer.length > 0) {
      for (let i = 0; i < buffer.length; i++) {
        conn.sendData(stream, buffer[i]!, this.#frontEnded && i === buffer.length - 1);
      }
    } else if (this.#frontEnded) conn.sendData(stream, EMPTY, true);
    // Bytes read while waiting were kept, not given back: give them back now that they are sent.
    this.#giveBackFront();
  }

  #retryOrFail(backend: Backend, reason: string): void {
    const canRetry =
      this.#buffer !== undefined && this.#attempts < this.#o.maxAttempts && this.#phase.kind !== "done";
    if (canRetry) {
      backend.stats.retries++;
      this.#o.onRetry?.(this.#channel.name, backend, reason);
      this.#tried ??= new Set();
      this.#tried.add(backend.key);
      this.#stream = undefined;
      this.#dropHeld();
      this.#phase = WAITING;
      this.#pickAndStart();
      return;
    }
    this.#fail({
      code: Status.UNAVAILABLE,
      message: `roster: backend ${backend.key} ${reason}`,
    });
  }

  // --- StreamOwner: both streams report here; `s` says which ------------------------------

  onHeaders(s: H2Stream, headers: string[], endStream: boolean): void {
    if (s === this.#front) {
      // Request trailers: gRPC has none; treat the block as the end of the request.
      if (endStream) this.#onFrontEnd();
      return;
    }
    if (s !== this.#stream) return;
    if (this.#phase.kind === "attempting") this.#onResponseHeaders(s, headers, endStream);
    else if (endStream) this.#onTrailers(headers);
  }

  onData(s: H2Stream, data: Buffer, endStream: boolean): void {
    if (s === this.#front) {
      this.#onFrontData(data);
      if (endStream) this.#onFrontEnd();
      return;
    }
    if (s !== this.#stream) return;
    this.#onBackendData(s, data);
    if (endStream && this.#phase.kind !== "done") {
      // A response must end with trailers (gRPC over HTTP/2).
      this.#releaseHeld();
      this.#fail({ code: Status.INTERNAL, message: "roster: backend ended the response without trailers" });
    }
  }

  onReset(s: H2Stream, code: number, byPeer: boolean): void {
    if (s === this.#front) {
      this.#onFrontReset();
      return;
    }
    if (s !== this.#stream || this.#phase.kind === "done") return;
    this.#onBackendReset(s, code, byPeer);
  }

  onWritable(s: H2Stream): void {
    if (s === this.#front) {
      // The client took what we queued: give the backend its window back.
      const stream = this.#stream;
      if (stream !== undefined && this.#owedBackend > 0) {
        const n = this.#owedBackend;
        this.#owedBackend = 0;
        stream.conn.consume(stream, n);
      }
      return;
    }
    if (s === this.#stream) this.#giveBackFront();
  }

  #giveBackFront(): void {
    const n = this.#owedFront;
    if (n === 0) return;
    const stream = this.#stream;
    if (stream !== undefined && stream.pendingBytes > HIGH_WATER) return;
    if (stream === undefined && this.#buffered > this.#o.retryBufferBytes) return;
    this.#owedFront = 0;
    this.#front.conn.consume(this.#front, n);
  }

  // --- request direction ----------------------------------------------------------------------

  #onFrontData(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const stream = this.#stream;
    if (this.#buffer !== undefined) {
      // Small reads are copied so the retry buffer does not pin whole socket reads.
      this.#buffer.push(chunk.length <= 4096 ? Buffer.from(chunk) : chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > this.#o.retryBufferBytes && stream !== undefined) this.#dropRetryBuffer();
    }
    this.#owedFront += chunk.length;
    if (stream === undefined) {
      // Waiting for a backend: hold the bytes, and stop giving the window back once the buffer is full.
      if (this.#buffered <= this.#o.retryBufferBytes) this.#giveBackFront();
      return;
    }
    stream.conn.sendData(stream, chunk, false);
    if (stream.pendingBytes <= HIGH_WATER) this.#giveBackFront();
  }

  #onFrontEnd(): void {
    if (this.#frontEnded) return;
    this.#frontEnded = true;
    const stream = this.#stream;
    if (stream !== undefined) stream.conn.sendData(stream, EMPTY, true);
  }

  #dropRetryBuffer(): void {
    this.#buffer = undefined;
    this.#buffered = 0;
  }

  #onFrontReset(): void {
    if (this.#phase.kind === "done") return;
    // The client reset the stream or went away: cancel the backend stream.
    this.#cancelBackend();
    this.#complete(Status.CANCELLED, "cancelled");
  }

  #cancelBackend(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream !== undefined && !stream.closed) this.#backend!.connection.cancel(stream);
  }

  // --- response direction ---------------------------------------------------------------------

  #onResponseHeaders(s: H2Stream, headers: string[], endStream: boolean): void {
    if (endStream) {
      const code = grpcStatusOf(headers) ?? Status.UNKNOWN;
      if (code === Status.UNAVAILABLE && this.#idempotentRetryAllowed()) {
        // An idempotent call the backend refused with UNAVAILABLE (overloaded, shutting down): nothing
        // went to the client yet, so another backend may answer it.
        const backend = this.#backend!;
        this.#o.retryThrottle?.record(true);
        this.#loadDone?.(this.#o.clock.now(), "failure");
        this.#loadDone = undefined;
        this.#cancelStream(s);
        this.#retryOrFail(backend, "answered UNAVAILABLE");
        return;
      }
      // Trailers-only response: stays trailers-only.
      this.#commit();
      this.#front.conn.sendHeaders(this.#front, this.#withBackend(headers), true);
      this.#complete(code, "ok");
      return;
    }
    if (this.#buffer !== undefined && this.#o.isIdempotent?.(this.#path) === true) {
      // Held until the trailers, a second message, HOLD_MS, or the retry buffer's size: a worker killed
      // between the message and the trailers would otherwise fail a call another backend can run.
      this.#phase = { kind: "holding", headers, data: [], bytes: 0 };
      return;
    }
    this.#sendResponseHeaders(headers);
  }

  #cancelStream(s: H2Stream): void {
    if (!s.closed) this.#backend!.connection.cancel(s);
    if (this.#stream === s) this.#stream = undefined;
  }

  #sendResponseHeaders(headers: string[]): void {
    this.#commit();
    this.#responded = true;
    this.#front.conn.sendHeaders(this.#front, this.#withBackend(headers), false);
  }

  /** No response byte has gone to the client before this: from here the call cannot move. */
  #commit(): void {
    this.#phase = COMMITTED;
    this.#dropRetryBuffer();
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
  }

  #withBackend(headers: string[]): string[] {
    if (this.#o.exposeBackend && this.#backend !== undefined)
      headers.push("x-roster-backend", this.#backend.key);
    return headers;
  }

  #releaseHeld(): void {
    const phase = this.#phase;
    if (phase.kind !== "holding") return;
    this.#sendResponseHeaders(phase.headers);
    for (const chunk of phase.data) this.#writeToFront(chunk, chunk.length);
  }

  #dropHeld(): void {
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
  }

  #onBackendData(s: H2Stream, chunk: Buffer): void {
    const phase = this.#phase;
    if (phase.kind === "holding") {
      phase.data.push(chunk);
      phase.bytes += chunk.length;
      if (phase.bytes > this.#o.retryBufferBytes || beyondFirstMessage(phase.data, phase.bytes))
        this.#releaseHeld();
      else {
        // Held bytes are bounded by the retry buffer: give their window back.
        s.conn.consume(s, chunk.length);
        this.#holdTimer ??= setTimeout(() => this.#releaseHeld(), HOLD_MS);
      }
      return;
    }
    if (phase.kind !== "committed") {
      s.conn.consume(s, chunk.length);
      return;
    }
    this.#writeToFront(chunk, chunk.length);
  }

  /** Forwards `chunk` to the client; `owed` of it is still to be given back to the backend stream. */
  #writeToFront(chunk: Buffer, owed: number): void {
    const front = this.#front;
    front.conn.sendData(front, chunk, false);
    const stream = this.#stream;
    if (stream === undefined) return;
    if (front.pendingBytes <= HIGH_WATER) stream.conn.consume(stream, owed + this.#takeOwedBackend());
    else this.#owedBackend += owed;
  }

  #takeOwedBackend(): number {
    const n = this.#owedBackend;
    this.#owedBackend = 0;
    return n;
  }

  #onTrailers(headers: string[]): void {
    if (this.#phase.kind === "holding") {
      const phase = this.#phase;
      this.#sendResponseHeaders(phase.headers);
      for (const chunk of phase.data) this.#front.conn.sendData(this.#front, chunk, false);
    }
    this.#front.conn.sendHeaders(this.#front, headers, true);
    this.#complete(grpcStatusOf(headers) ?? Status.UNKNOWN, "ok");
  }

  #idempotentRetryAllowed(): boolean {
    return (
      (this.#phase.kind === "attempting" || this.#phase.kind === "holding") &&
      this.#buffer !== undefined &&
      this.#attempts < this.#o.maxAttempts &&
      this.#o.isIdempotent?.(this.#path) === true &&
      (this.#o.retryThrottle?.allows() ?? true)
    );
  }

  #onBackendReset(s: H2Stream, code: number, _byPeer: boolean): void {
    const backend = this.#backend!;
    this.#loadDone?.(this.#o.clock.now(), "failure");
    this.#loadDone = undefined;
    const uncommitted = this.#phase.kind === "attempting" || this.#phase.kind === "holding";
    const idempotent = this.#o.isIdempotent?.(this.#path) === true;
    const connectionLost = s.conn.state === "closed";
    const budgetAllows = !connectionLost || !idempotent ? true : (this.#o.retryThrottle?.allows() ?? true);
    const decision = decideAfterReset({
      code,
      connectionLost,
      neverConnected: !s.conn.remoteSettingsSeen,
      uncommitted,
      buffered: this.#buffer !== undefined,
      attempts: this.#attempts,
      maxAttempts: this.#o.maxAttempts,
      idempotent,
      budgetAllows,
      path: this.#path,
      backend: backend.key,
    });
    this.#stream = undefined;
    switch (decision.kind) {
      case "retry":
        if (!decision.transparent) this.#o.retryThrottle?.record(true);
        this.#retryOrFail(backend, decision.reason);
        return;
      case "fail":
        this.#fail(decision.status);
        return;
      case "pass-reset":
        this.#front.conn.resetStream(this.#front, decision.code);
        this.#complete(decision.status, "failure");
        return;
    }
  }

  #onDeadline(): void {
    if (this.#phase.kind === "done") return;
    this.#cancelBackend();
    const ms = Math.round(this.#o.clock.now() - this.#startedAt);
    const why =
      this.#phase.kind === "waiting" ? ` waiting for a backend: ${this.#channel.unavailableMessage()}` : "";
    this.#fail({ code: Status.DEADLINE_EXCEEDED, message: `roster: deadline exceeded after ${ms} ms${why}` });
  }

  // --- ending ---------------------------------------------------------------------------------

  /** Ends the call with a status made by the balancer. */
  #fail(status: CallStatus): void {
    if (this.#phase.kind === "done") return;
    this.#cancelBackend();
    const front = this.#front;
    if (!front.closed) {
      if (!this.#responded) {
        this.#responded = true;
        front.conn.sendHeaders(front, trailersOnlyList(status), true);
      } else front.conn.sendHeaders(front, statusTrailersList(status), true);
    }
    this.#complete(status.code, "failure");
  }

  #complete(code: number, outcome: "ok" | "failure" | "cancelled"): void {
    if (this.#phase.kind === "done") return;
    this.#phase = DONE;
    clearTimeout(this.#timer);
    clearTimeout(this.#holdTimer);
    clearTimeout(this.#queueTimer);
    this.#cancelWait?.();
    this.#buffer = undefined;
    const stream = this.#stream;
    // The backend finished its half; if ours is still open (the client had not finished sending),
    // end it so the backend stream does not linger.
    if (stream !== undefined && !stream.closed && !stream.localEnded)
      this.#backend!.connection.cancel(stream);
    const now = this.#o.clock.now();
    const backend = this.#backend;
    this.#loadDone?.(
      now,
      outcome === "ok"
        ? code === Status.OK
          ? "success"
          : "failure"
        : outcome === "cancelled"
          ? "cancelled"
          : "failure",
    );
    this.#loadDone = undefined;
    if (backend !== undefined) {
      backend.stats.calls++;
      if (code !== Status.OK) backend.stats.failures++;
      this.#o.retryThrottle?.record(code === Status.UNAVAILABLE);
    }
    this.#o.onCallEnd?.(
      this.#channel.name,
      backend,
      code,
      now - this.#startedAt,
      this.#o.classify === undefined ? undefined : headerOf(this.#headers, CLASS_HEADER),
    );
  }
}

/**
 * New calls pick and open their backend stream once the bytes read with them have all been handled
 * (a microtask: after the socket's data callback, before any other I/O), not while their HEADERS
 * frame is parsed. A client that opens a stream and resets it in the same read — rapid reset,
 * CVE-2023-44487, sends HEADERS and RST_STREAM together — then costs no backend stream at all; other
 * calls start no later than before (one batch per read, no timer).
 */
let pendingStarts: FrameCall[] = [];

function deferStart(call: FrameCall): void {
  if (pendingStarts.length === 0) queueMicrotask(runPendingStarts);
  pendingStarts.push(call);
}

function runPendingStarts(): void {
  const calls = pendingStarts;
  pendingStarts = [];
  for (const call of calls) call.startNow();
}

/** Whether held response bytes go past the first gRPC message (5-byte prefix: flag, length). */
function beyondFirstMessage(chunks: readonly Buffer[], total: number): boolean {
  if (total < 5) return false;
  const head = chunks[0]!.length >= 5 ? chunks[0]! : Buffer.concat(chunks as Buffer[], 5);
  return total > 5 + head.readUInt32BE(1);
}

function grpcStatusOf(headers: readonly string[]): number | undefined {
  const v = headerOf(headers, "grpc-status");
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isInteger(n) ? n : undefined;
}

export function trailersOnlyList(status: CallStatus): string[] {
  return [
    ":status",
    "200",
    "content-type",
    "application/grpc",
    "grpc-status",
    String(status.code),
    "grpc-message",
    encodeGrpcMessage(status.message),
  ];
}

export function statusTrailersList(status: CallStatus): string[] {
  return ["grpc-status", String(status.code), "grpc-message", encodeGrpcMessage(status.message)];
}
