import type { Backend, Channel } from "../channel/channel.ts";
import type { Clock } from "../core/clock.ts";
import type { Address } from "../core/endpoint.ts";
import type { RetryThrottle } from "../core/retry-throttle.ts";
import type { FrameBackend } from "../platform/h2-backend.ts";
import type { Classifier } from "./classify.ts";
import { defaultFrontKeepalive, type FrontKeepalive } from "./front-keepalive.ts";
import type { HeaderLookup } from "./headers.ts";
import type { RouteResult } from "./routes.ts";

// The proxy's options and limits: the front (frame-server.ts) and the forwarding of one call
// (frame-forward.ts): types, and the front's defaults. (They were shared with the node:http2 path,
// removed once the frame-level one passed every test: issue 10.)

/** Limits of the front (client-facing) HTTP/2 connections. */
export interface FrontLimits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients. */
  readonly maxConcurrentStreams: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE, bytes: larger header blocks are refused. */
  readonly maxHeaderListSize: number;
  /** Flow-control window per stream and per connection, bytes. */
  readonly windowSize: number;
  /**
   * A client connection older than this (±10% jitter) gets GOAWAY so the client reconnects — through
   * any connection-level balancer in front, which then spreads it (gRPC's MAX_CONNECTION_AGE).
   * 0 = never.
   */
  readonly maxConnectionAgeMs: number;
  /** After that GOAWAY, how long open calls get before the connection is closed. */
  readonly maxConnectionAgeGraceMs: number;
  /** Ping enforcement (strikes → GOAWAY ENHANCE_YOUR_CALM) and liveness pings (front-keepalive.ts). */
  readonly keepalive: FrontKeepalive;
  /**
   * A connection with no open call and no frame read or written for this long is closed (Envoy's
   * `idle_timeout`, default 1 h). 0 = never.
   */
  readonly idleTimeoutMs: number;
  /**
   * A stream whose response bytes wait for a window the client does not open (or for a socket it does
   * not read), with no byte going out for this long, is reset with RST_STREAM CANCEL and its backend
   * stream cancelled (nginx's `send_timeout`, 60 s; a slow reader that takes some bytes is not
   * stalled). Judged by a sweep every quarter of it. 0 = never.
   */
  readonly sendStallTimeoutMs: number;
}

export const defaultFrontLimits: FrontLimits = {
  maxConcurrentStreams: 1000,
  maxHeaderListSize: 60 * 1024,
  windowSize: 16 * 1024 * 1024,
  maxConnectionAgeMs: 0,
  maxConnectionAgeGraceMs: 30_000,
  keepalive: defaultFrontKeepalive,
  idleTimeoutMs: 60 * 60 * 1000,
  sendStallTimeoutMs: 60_000,
};

/** Where a call goes: its cluster's channel and that cluster's forward settings. */
export interface CallTarget {
  readonly channel: Channel<FrameBackend>;
  readonly forward: ForwardOptions;
}

export interface ProxyServerOptions {
  readonly listen: Address;
  /**
   * The cluster of each call (routes.ts), asked once per stream with its `:path` and headers;
   * synchronous, never throws. The owner may swap the route table behind it at any time (config
   * reload): a stream keeps the target it was given. `none` is answered trailers-only with its status.
   */
  readonly route: (path: string, header: HeaderLookup) => RouteResult<CallTarget>;
  /** A call no route took was answered with `code`. */
  readonly onNoRoute?: (code: number) => void;
  readonly limits?: Partial<FrontLimits>;
  readonly onConnection?: (delta: 1 | -1) => void;
  /**
   * Something worth a log line happened at the front (rejected request, protocol error). `level` is
   * "debug" for what is routine and harmless (a TCP probe that connects and sends nothing); absent: warn.
   */
  readonly onFrontEvent?: (message: string, fields?: Record<string, unknown>, level?: "debug") => void;
}

export interface ProxyServer {
  /** "127.0.0.1:PORT" or "unix:PATH" as actually bound. */
  readonly address: string;
  readonly port: number | undefined;
  /** Open client connections. */
  connections(): number;
  /**
   * Stops accepting, sends GOAWAY to every client so open calls finish, and resolves when all are
   * closed or `graceMs` has passed (then remaining sessions are destroyed).
   */
  close(graceMs?: number): Promise<void>;
}

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
