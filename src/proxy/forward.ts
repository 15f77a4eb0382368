import http2 from "node:http2";
import type { Backend, Channel } from "../channel/channel.ts";
import type { Clock } from "../core/clock.ts";
import { formatGrpcTimeout, parseGrpcTimeout } from "../core/grpc-timeout.ts";
import type { CallDone } from "../core/load/load-tracker.ts";
import type { PickContext } from "../core/picker.ts";
import { CLASS_HEADER } from "../core/policies/resume.ts";
import type { RetryThrottle } from "../core/retry-throttle.ts";
import { type CallStatus, Status, type StatusCode } from "../core/status.ts";
import type { Classifier } from "./classify.ts";
import { grpcStatusOf, statusFromRstCode, statusTrailers, trailersOnly } from "./grpc-response.ts";
import { lookupOfRecord } from "./headers.ts";

/**
 * Longest an idempotent call's first response message is held back waiting for its trailers (see
 * #heldHeaders). A second message releases it at once, so only a stream that pauses after its first
 * message waits this long.
 */
const HOLD_MS = 1000;

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants;

export interface ForwardOptions {
  readonly clock: Clock;
  /** Request bytes kept per call so an uncommitted call can be retried elsewhere (gRFC A6). */
  readonly retryBufferBytes: number;
  /** Attempts per call, the first included. */
  readonly maxAttempts: number;
  /**
   * Longest a call waits for a backend to become ready when none is (its deadline, if sooner, bounds
   * it too); then it fails UNAVAILABLE with the channel's reasons.
   */
  readonly queueTimeoutMs: number;
  /** Once per call, after its status is known. `backend` is undefined when no backend was reached. */
  /** `className`: the call's class when a classifier is configured. */
  readonly onCallEnd?: (
    cluster: string,
    backend: Backend | undefined,
    code: number,
    ms: number,
    className: string | undefined,
  ) => void;
  readonly onRetry?: (cluster: string, backend: Backend, reason: string) => void;
  /**
   * Methods safe to run twice: when the connection to their backend is lost before any response byte,
   * they are retried on another backend (other calls get UNAVAILABLE: they may have run).
   */
  readonly isIdempotent?: (path: string) => boolean;
  /**
   * Budget for retries of idempotent calls that reached a backend (gRFC A6 throttling); transparent
   * retries of calls that never left are not counted. Absent: no budget.
   */
  readonly retryThrottle?: RetryThrottle;
  /** Opt-in: add `x-roster-backend: KEY` to response headers (load tests use it for per-backend shares). */
  readonly exposeBackend?: boolean;
  /**
   * The cluster's classifier (classify.ts). When set, every call's class replaces whatever
   * `x-roster-class` the client sent, before the pick (the `resume` policy reads it) and on the way to
   * the backend (whose skills record it). Absent: the header passes untouched.
   */
  readonly classify?: Classifier;
}

/**
 * One proxied call. State machine:
 *
 *   waiting ──pick──▶ attempting ──response headers──▶ committed ──trailers / end──▶ done
 *   attempting ──refused / never sent──▶ (retry) attempting | done(error)
 *   any ──deadline / client reset / proxy error──▶ done
 *
 * "Uncommitted" (waiting, attempting) means no response byte has reached the client, so the call can
 * move to another backend as long as every request byte sent so far is still in the retry buffer.
 */
type CallState = "waiting" | "attempting" | "committed" | "done";

/** A frame nghttp2 could not send on a backend stream; `code` is node's HTTP/2 error code for it. */
interface FrameError {
  type: number;
  code: number;
}

const FRAME_HEADERS = 0x1;

/** Was the frame refused for its size (a header block over the limits), not for the session's state? */
function frameTooLarge(e: FrameError): boolean {
  return (
    e.code === http2.constants.NGHTTP2_FRAME_SIZE_ERROR ||
    e.code === http2.constants.NGHTTP2_COMPRESSION_ERROR
  );
}

/**
 * Whether held response bytes go past the first gRPC message (5-byte prefix: flag, 4-byte big-endian
 * length): then the response is a stream and holding it back would delay it.
 */
function beyondFirstMessage(chunks: readonly Buffer[], total: number): boolean {
  if (total < 5) return false;
  const head = chunks[0]!.length >= 5 ? chunks[0]! : Buffer.concat(chunks as Buffer[], 5);
  return total > 5 + head.readUInt32BE(1);
}

export function forwardCall(
  front: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  channel: Channel,
  options: ForwardOptions,
): void {
  new ForwardedCall(front, headers, channel, options).start();
}

class ForwardedCall {
  readonly #front: http2.ServerHttp2Stream;
  readonly #headers: http2.IncomingHttpHeaders;
  readonly #channel: Channel;
  readonly #o: ForwardOptions;
  readonly #startedAt: number;
  #state: CallState = "waiting";
  #backend: Backend | undefined;
  #stream: http2.ClientHttp2Stream | undefined;
  #loadDone: CallDone | undefined;
  #tried: Set<string> | undefined;
  #attempts = 0;
  /** Request chunks sent so far, while they fit the retry buffer; undefined once given up. */
  #buffer: Buffer[] | undefined = [];
  #buffered = 0;
  #frontEnded = false;
  #responded = false;
  #trailers: http2.OutgoingHttpHeaders | undefined;
  /**
   * The start of an idempotent call's response (headers, then data), held back until its trailers, a
   * short timer, or the retry buffer's size: until then nothing reached the client and the call can
   * still move to another backend.
   */
  #heldHeaders: http2.IncomingHttpHeaders | undefined;
  #heldData: Buffer[] = [];
  #heldBytes = 0;
  #holdTimer: NodeJS.Timeout | undefined;
  #deadlineAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Bounds a wait in the channel's queue (queueTimeoutMs); set while waiting. */
  #queueTimer: NodeJS.Timeout | undefined;
  #cancelWait: (() => void) | undefined;

  constructor(
    front: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    channel: Channel,
    o: ForwardOptions,
  ) {
    this.#front = front;
    this.#headers = headers;
    this.#channel = channel;
    this.#o = o;
    this.#startedAt = o.clock.now();
  }

  start(): void {
    const front = this.#front;
    front.on("error", () => {}); // errors surface as 'close'; an unhandled 'error' would crash the process
    front.on("data", (chunk: Buffer) => this.#onFrontData(chunk));
    front.on("end", () => this.#onFrontEnd());
    front.on("close", () => this.#onFrontClose());
    front.on("wantTrailers", () => this.#onWantTrailers());

    const timeout = this.#headers["grpc-timeout"];
    if (typeof timeout === "string") {
      const ms = parseGrpcTimeout(timeout);
      if (ms === undefined) {
        this.#fail({ code: Status.INTERNAL, message: `roster: malformed grpc-timeout header "${timeout}"` });
        return;
      }
      this.#deadlineAt = this.#startedAt + ms;
      this.#timer = setTimeout(() => this.#onDeadline(), ms);
    }
    const classify = this.#o.classify;
    if (classify !== undefined) {
      const headers = this.#headers;
      delete headers[CLASS_HEADER];
      headers[CLASS_HEADER] = classify(lookupOfRecord(headers));
    }
    this.#pickAndStart();
  }

  // --- picking --------------------------------------------------------------------------------

  #pickAndStart(): void {
    if (this.#state === "done") return;
    this.#cancelWait = undefined;
    clearTimeout(this.#queueTimer);
    this.#queueTimer = undefined;
    const headers = this.#headers;
    const ctx: PickContext = {
      path: (headers[":path"] as string | undefined) ?? "",
      header: (name) => {
        const v = headers[name];
        return Array.isArray(v) ? v[0] : v;
      },
      ...(this.#tried ? { exclude: this.#tried } : {}),
    };
    const result = this.#channel.pick(ctx);
    switch (result.kind) {
      case "pick":
        this.#attempt(this.#channel.backendOf(result.candidate));
        return;
      case "fail":
        this.#fail(result.status);
        return;
      case "queue": {
        // The pick has asked the backends asleep in backoff to connect now (channel.ts, Readiness).
        this.#state = "waiting";
        this.#cancelWait = this.#channel.onPickerChange(() => this.#pickAndStart());
        const waitMs = this.#o.queueTimeoutMs;
        const left =
          this.#deadlineAt === undefined ? Number.POSITIVE_INFINITY : this.#deadlineAt - this.#o.clock.now();
        // A deadline sooner than the queue timeout ends the wait itself (#onDeadline).
        if (waitMs < left) {
          this.#queueTimer = setTimeout(() => {
            if (this.#state !== "waiting") return;
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

  #attempt(backend: Backend): void {
    this.#attempts++;
    this.#backend = backend;
    const headers = this.#headers;
    if (this.#deadlineAt !== undefined) {
      headers["grpc-timeout"] = formatGrpcTimeout(Math.max(this.#deadlineAt - this.#o.clock.now(), 0));
    }
    let stream: http2.ClientHttp2Stream;
    try {
      stream = backend.request(headers as http2.OutgoingHttpHeaders);
    } catch (err) {
      // The stream never left: always safe to try elsewhere.
      this.#retryOrFail(backend, `could not open a stream: ${(err as Error).message}`, Status.UNAVAILABLE);
      return;
    }
    this.#state = "attempting";
    this.#stream = stream;
    this.#loadDone = backend.load.begin(this.#o.clock.now());

    stream.on("error", () => {}); // handled in 'close' from rstCode and session state
    stream.on("response", (h, flags) => {
      if (stream === this.#stream) this.#onResponse(h, flags);
    });
    stream.on("data", (chunk: Buffer) => {
      if (stream === this.#stream) this.#onBackendData(stream, chunk);
    });
    stream.on("trailers", (t) => {
      if (stream !== this.#stream) return;
      if (this.#heldHeaders !== undefined) this.#releaseHeld(stream);
      this.#trailers = t as http2.OutgoingHttpHeaders;
    });
    stream.on("end", () => {
      if (stream === this.#stream && this.#state === "committed") this.#front.end();
    });
    // Node detaches stream.session before 'close', so keep the session to tell a lost connection
    // from a stream reset.
    const session = stream.session;
    let frameError: FrameError | undefined;
    stream.on("frameError", (type: number, code: number) => {
      frameError ??= { type, code };
    });
    stream.on("close", () => {
      if (stream === this.#stream) this.#onBackendClose(stream, backend, session, frameError);
    });

    if (this.#buffer !== undefined) {
      for (const chunk of this.#buffer) stream.write(chunk);
      if (this.#buffered > this.#o.retryBufferBytes) this.#dropRetryBuffer();
    }
    if (this.#frontEnded) stream.end();
    if (this.#front.isPaused()) this.#front.resume();
  }

  /** May an idempotent call that reached a backend be tried again elsewhere? */
  #idempotentRetryAllowed(): boolean {
    return (
      this.#state === "attempting" &&
      this.#buffer !== undefined &&
      this.#attempts < this.#o.maxAttempts &&
      this.#o.isIdempotent?.(this.#headers[":path"] as string) === true &&
      (this.#o.retryThrottle?.allows() ?? true)
    );
  }

  #retryOrFail(backend: Backend, reason: string, code: StatusCode): void {
    const canRetry =
      this.#buffer !== undefined &&
      this.#attempts < this.#o.maxAttempts &&
      this.#state !== "done" &&
      !this.#front.destroyed;
    if (canRetry) {
      backend.stats.retries++;
      this.#o.onRetry?.(this.#channel.name, backend, reason);
      this.#tried ??= new Set();
      this.#tried.add(backend.key);
      this.#stream = undefined;
      this.#dropHeld();
      this.#pickAndStart();
      return;
    }
    this.#fail({ code, message: `roster: backend ${backend.key} ${reason}` });
  }

  // --- request direction ----------------------------------------------------------------------

  #onFrontData(chunk: Buffer): void {
    const stream = this.#stream;
    if (this.#buffer !== undefined) {
      this.#buffer.push(chunk);
      this.#buffered += chunk.length;
    }
    if (stream === undefined) {
      // Waiting for a backend: hold the bytes, but stop reading once the buffer is full.
      if (this.#buffered > this.#o.retryBufferBytes) this.#front.pause();
      return;
    }
    if (this.#buffered > this.#o.retryBufferBytes) this.#dropRetryBuffer();
    if (!stream.write(chunk)) {
      this.#front.pause();
      stream.once("drain", () => this.#front.resume());
    }
  }

  #onFrontEnd(): void {
    this.#frontEnded = true;
    this.#stream?.end();
  }

  #dropRetryBuffer(): void {
    this.#buffer = undefined;
    this.#buffered = 0;
  }

  #onFrontClose(): void {
    if (this.#state === "done") return;
    // The client reset the stream or went away: cancel the backend stream (RST_STREAM CANCEL).
    this.#stream?.close(NGHTTP2_CANCEL);
    this.#complete(Status.CANCELLED, "cancelled");
  }

  // --- response direction ---------------------------------------------------------------------

  #onResponse(headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, flags: number): void {
    if (flags & NGHTTP2_FLAG_END_STREAM) {
      const code = grpcStatusOf(headers) ?? Status.UNKNOWN;
      if (code === Status.UNAVAILABLE && this.#idempotentRetryAllowed()) {
        // An idempotent call the backend refused with UNAVAILABLE (overloaded, shutting down): nothing
        // went to the client yet, so another backend may answer it.
        const backend = this.#backend!;
        this.#o.retryThrottle?.record(true);
        this.#loadDone?.(this.#o.clock.now(), "failure");
        this.#loadDone = undefined;
        this.#retryOrFail(backend, "answered UNAVAILABLE", Status.UNAVAILABLE);
        return;
      }
      // Trailers-only response: stays trailers-only.
      if (this.#commit()) {
        this.#front.respond(this.#withBackend(headers), { endStream: true });
        this.#complete(grpcStatusOf(headers) ?? Status.UNKNOWN, "ok");
      }
      return;
    }
    if (this.#buffer !== undefined && this.#o.isIdempotent?.(this.#headers[":path"] as string)) {
      // An idempotent call stays retryable until its answer is complete: a worker killed between writing
      // the message and the trailers (grpc-js writes them in separate ticks) would otherwise fail a call
      // that another backend can run. Held until the trailers, a second message (a stream: release),
      // HOLD_MS, or the retry buffer's size.
      this.#heldHeaders = headers;
      return;
    }
    this.#sendHeaders(headers);
  }

  #releaseHeld(stream: http2.ClientHttp2Stream): void {
    const headers = this.#heldHeaders;
    if (headers === undefined) return;
    const data = this.#heldData;
    this.#dropHeld();
    this.#sendHeaders(headers);
    for (const chunk of data) this.#writeToFront(stream, chunk);
  }

  #dropHeld(): void {
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    this.#heldHeaders = undefined;
    this.#heldData = [];
    this.#heldBytes = 0;
  }

  /** Commits the call and sends the response headers (waiting for trailers). */
  #sendHeaders(headers: http2.IncomingHttpHeaders): void {
    if (this.#commit()) this.#front.respond(this.#withBackend(headers), { waitForTrailers: true });
  }

  /** No response byte has gone to the client before this: from here the call cannot move. */
  #commit(): boolean {
    this.#state = "committed";
    this.#dropRetryBuffer();
    this.#heldHeaders = undefined;
    const front = this.#front;
    if (front.destroyed || front.closed) return false;
    this.#responded = true;
    return true;
  }

  #withBackend(headers: http2.IncomingHttpHeaders): http2.OutgoingHttpHeaders {
    if (this.#o.exposeBackend && this.#backend !== undefined) headers["x-roster-backend"] = this.#backend.key;
    return headers as http2.OutgoingHttpHeaders;
  }

  #onBackendData(stream: http2.ClientHttp2Stream, chunk: Buffer): void {
    if (this.#heldHeaders !== undefined) {
      this.#heldData.push(chunk);
      this.#heldBytes += chunk.length;
      if (this.#heldBytes > this.#o.retryBufferBytes || beyondFirstMessage(this.#heldData, this.#heldBytes)) {
        this.#releaseHeld(stream);
      } else this.#holdTimer ??= setTimeout(() => this.#releaseHeld(stream), HOLD_MS);
      return;
    }
    this.#writeToFront(stream, chunk);
  }

  #writeToFront(stream: http2.ClientHttp2Stream, chunk: Buffer): void {
    if (!this.#front.write(chunk)) {
      stream.pause();
      this.#front.once("drain", () => stream.resume());
    }
  }

  #onWantTrailers(): void {
    const trailers =
      this.#trailers ??
      statusTrailers({
        code: Status.INTERNAL,
        message: "roster: backend ended the response without trailers",
      });
    this.#front.sendTrailers(trailers);
    if (this.#state !== "done")
      this.#complete(grpcStatusOf(trailers as http2.IncomingHttpHeaders) ?? Status.UNKNOWN, "ok");
  }

  #onBackendClose(
    stream: http2.ClientHttp2Stream,
    backend: Backend,
    session: http2.Http2Session | undefined,
    frameError: FrameError | undefined,
  ): void {
    if (this.#state === "done") return;
    if (this.#state === "committed" && this.#trailers !== undefined) return; // normal end; trailers go out via wantTrailers
    const rst = stream.rstCode ?? NGHTTP2_NO_ERROR;
    // Destroyed, not merely closed: a session draining after GOAWAY still finishes its streams.
    const connectionLost = session === undefined || session.destroyed;
    this.#loadDone?.(this.#o.clock.now(), "failure");
    this.#loadDone = undefined;

    if (frameError !== undefined && frameTooLarge(frameError)) {
      // We could not send a frame to the backend because it is larger than HTTP/2 allows (a header
      // block over the field limit): a local failure that another backend would share, not retried.
      this.#fail({
        code: Status.INTERNAL,
        message: `roster: could not send the call to backend ${backend.key} (request headers too large?)`,
      });
      return;
    }
    if (this.#state === "attempting") {
      // Never reached the application: refused (REFUSED_STREAM, or above a GOAWAY's last stream id,
      // which nghttp2 reports as REFUSED_STREAM), or never sent at all.
      // A HEADERS frame nghttp2 could not send (the session began closing under it, as when a
      // worker drains) never reached the application either.
      const neverSent =
        stream.id === undefined ||
        stream.pending ||
        (frameError !== undefined && frameError.type === FRAME_HEADERS);
      if (rst === NGHTTP2_REFUSED_STREAM || neverSent) {
        this.#retryOrFail(
          backend,
          rst === NGHTTP2_REFUSED_STREAM ? "refused the stream" : "closed before the call was sent",
          Status.UNAVAILABLE,
        );
        return;
      }
    }
    if (connectionLost) {
      const path = this.#headers[":path"] as string;
      const idempotent = this.#o.isIdempotent?.(path) === true;
      if (this.#idempotentRetryAllowed()) {
        this.#o.retryThrottle?.record(true);
        this.#retryOrFail(backend, "was lost during an idempotent call", Status.UNAVAILABLE);
        return;
      }
      const why =
        this.#state !== "attempting"
          ? "the response had already begun"
          : !idempotent
            ? `the call may have run and ${path} is not marked idempotent`
            : this.#buffer === undefined
              ? "the request was larger than the retry buffer"
              : this.#attempts >= this.#o.maxAttempts
                ? `all ${this.#attempts} attempts failed`
                : "the retry budget is spent (too many failures in this cluster)";
      this.#fail({
        code: Status.UNAVAILABLE,
        message: `roster: connection to backend ${backend.key} was lost during the call (did it crash?); not retried: ${why}`,
      });
      return;
    }
    // A real RST_STREAM from the backend: pass the same code on, so the client sees what it would
    // have seen directly.
    if (rst !== NGHTTP2_NO_ERROR && rst !== NGHTTP2_CANCEL) {
      this.#front.close(rst);
      this.#complete(statusFromRstCode(rst), "failure");
      return;
    }
    this.#fail({
      code: statusFromRstCode(rst),
      message: `roster: backend ${backend.key} closed the stream (code ${rst})`,
    });
  }

  #onDeadline(): void {
    if (this.#state === "done") return;
    this.#stream?.close(NGHTTP2_CANCEL);
    const ms = Math.round(this.#o.clock.now() - this.#startedAt);
    // Still waiting for a backend: say why none was ready.
    const why =
      this.#state === "waiting" ? ` waiting for a backend: ${this.#channel.unavailableMessage()}` : "";
    this.#fail({ code: Status.DEADLINE_EXCEEDED, message: `roster: deadline exceeded after ${ms} ms${why}` });
  }

  // --- ending ---------------------------------------------------------------------------------

  /** Ends the call with a status made by the balancer. */
  #fail(status: CallStatus): void {
    if (this.#state === "done") return;
    const front = this.#front;
    const stream = this.#stream;
    if (stream !== undefined && !stream.closed) stream.close(NGHTTP2_CANCEL);
    this.#stream = undefined;
    if (!front.destroyed && !front.closed) {
      if (!this.#responded) {
        this.#responded = true;
        front.respond(trailersOnly(status), { endStream: true });
      } else {
        this.#trailers = statusTrailers(status);
        if (!front.writableEnded) front.end();
      }
    }
    this.#complete(status.code, "failure");
  }

  #complete(code: number, outcome: "ok" | "failure" | "cancelled"): void {
    if (this.#state === "done") return;
    this.#state = "done";
    clearTimeout(this.#timer);
    clearTimeout(this.#queueTimer);
    clearTimeout(this.#holdTimer);
    this.#cancelWait?.();
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
      this.#o.classify === undefined ? undefined : (this.#headers[CLASS_HEADER] as string),
    );
  }
}
