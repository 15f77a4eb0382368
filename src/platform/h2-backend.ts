import net from "node:net";
import { Backoff, type BackoffOptions, defaultBackoff } from "../core/backoff.ts";
import type { Address } from "../core/endpoint.ts";
import type { ConnectionSettings, H2Stream, StreamOwner } from "../http2/connection.ts";
import { ErrorCode, errorCodeName } from "../http2/frame.ts";
import type { BackendState } from "./backend-connection.ts";
import { H2Transport } from "./h2-transport.ts";
import { systemClock, systemRandom } from "./system.ts";

/**
 * The frame-level HTTP/2 connections to one backend (the data path's twin of BackendConnection, which
 * stays for node:http2 users). Same state machine, one place:
 *
 *   idle ──start()──▶ connecting ──first connection's SETTINGS arrived──▶ ready
 *     ready ──every connection gone──▶ transient-failure ──backoff timer or connectNow()──▶ connecting
 *     connecting ──connect error / timeout──▶ transient-failure
 *     any ──close()──▶ shutdown   (no new streams; connections close once their streams end)
 *
 * "Ready" waits for the server's SETTINGS, not just the TCP connect: a port that accepts but speaks
 * no HTTP/2 (a backend still starting, another program) never becomes ready.
 *
 * Several connections are kept when the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached (up to
 * `maxSessions`). A connection that receives GOAWAY drains: its streams finish, new ones go to a
 * fresh connection opened at once, so the backend stays ready through the hand-over. Each connection is
 * PINGed every `keepaliveMs`; no answer within `keepaliveTimeoutMs` closes it.
 *
 * Cancellations are rate-limited per connection (`cancel`): the RST_STREAMs a connection may carry are
 * a token bucket (`resetBudget`); once it is spent the connection drains and new streams go to a fresh
 * one. Clients that reset calls en masse (rapid reset, CVE-2023-44487) would otherwise pass their
 * resets through the balancer's shared connection, and the backend's own defence (nghttp2: 1000 resets,
 * then 33 a second) would close it with GOAWAY — failing the honest calls on it too.
 */
export interface FrameBackendOptions {
  readonly address: Address;
  /** Called synchronously on every state change. */
  readonly onStateChange: (state: BackendState) => void;
  readonly keepaliveMs?: number;
  readonly keepaliveTimeoutMs?: number;
  readonly maxSessions?: number;
  /** Receive window per stream toward this backend, bytes (response bytes buffered per stream). */
  readonly windowSize?: number;
  readonly connectTimeoutMs?: number;
  readonly backoff?: BackoffOptions;
  readonly settings?: Partial<ConnectionSettings>;
  /**
   * RST_STREAMs one connection may send: `burst` at once, refilled at `perSecond`; past it the
   * connection drains and a fresh one takes new streams. Default 500 and 20/s, half of nghttp2's
   * server-side limit (1000 and 33/s), which node:http2 and grpc-js backends enforce.
   */
  readonly resetBudget?: { readonly burst: number; readonly perSecond: number };
}

function runAll(fns: readonly (() => void)[]): void {
  for (const fn of fns) fn();
}

const DEFAULT_RESET_BUDGET = { burst: 500, perSecond: 20 };

interface Session {
  readonly transport: H2Transport;
  connected: boolean;
  draining: boolean;
  pingTimer: NodeJS.Timeout | undefined;
  pingDeadline: NodeJS.Timeout | undefined;
  connectTimer: NodeJS.Timeout | undefined;
  /** Cancellations this connection may still send (token bucket, see `cancel`). */
  resetTokens: number;
  /** Waiting for the acks of round-trip PINGs sent on it (`afterRoundTrip`), oldest first. */
  roundTrips: (() => void)[];
  /** Round-trip PINGs sent since `roundTripWindowAt` (at most ROUND_TRIP_PINGS per window). */
  roundTripPings: number;
  roundTripWindowAt: number;
  resetRefilledAt: number;
}

const PING_OPAQUE = Buffer.from("rosterKA", "latin1");
/** The payload of `afterRoundTrip`'s PINGs, told apart from keepalive's by their acks. */
const ROUND_TRIP_OPAQUE = Buffer.from("rosterRT", "latin1");
/**
 * Round-trip PINGs one connection carries per ROUND_TRIP_WINDOW_MS. gRPC servers count a PING that
 * comes within 5 minutes of the last one with none of their own HEADERS or DATA in between as a
 * strike, and close the connection (GOAWAY ENHANCE_YOUR_CALM "too_many_pings") past 2 strikes (grpc-go
 * `maxPingStrikes`, C-core `max_ping_strikes`, grpc-java's KeepAliveEnforcer): the first PING on a new
 * connection is free, the second at worst one strike.
 */
const ROUND_TRIP_PINGS = 2;
const ROUND_TRIP_WINDOW_MS = 5 * 60_000;

export class FrameBackend {
  readonly #o: FrameBackendOptions;
  readonly #backoff: Backoff;
  #state: BackendState = { kind: "idle" };
  #sessions: Session[] = [];
  #retryTimer: NodeJS.Timeout | undefined;
  #lastError = "";

  constructor(options: FrameBackendOptions) {
    this.#o = options;
    this.#backoff = new Backoff(systemRandom, options.backoff ?? defaultBackoff);
  }

  get state(): BackendState {
    return this.#state;
  }

  /** Connections open (connected or connecting), for status pages. */
  get sessionCount(): number {
    return this.#sessions.length;
  }

  start(): void {
    if (this.#state.kind !== "idle") return;
    this.#connect();
  }

  /** In reconnect backoff: try now instead of waiting for the timer. No-op in any other state. */
  connectNow(): void {
    if (this.#state.kind !== "transient-failure") return;
    clearTimeout(this.#retryTimer);
    this.#connect();
  }

  /**
   * Calls `fn` once the backend has read everything sent to it so far: a PING is sent now on each
   * connected connection, after whatever is queued on it, and `fn` runs when the last ack is back (a
   * connection that closes first counts as answered). Never synchronously. A connection that has
   * carried its ROUND_TRIP_PINGS in the window is not asked (it counts as answered on the next turn),
   * nor is anything when no connection is connected.
   */
  afterRoundTrip(fn: () => void): void {
    const now = systemClock.now();
    const asked: Session[] = [];
    for (const s of this.#sessions) {
      if (!s.connected || s.draining || s.transport.closed) continue;
      if (now - s.roundTripWindowAt >= ROUND_TRIP_WINDOW_MS) {
        s.roundTripWindowAt = now;
        s.roundTripPings = 0;
      }
      if (s.roundTripPings < ROUND_TRIP_PINGS) asked.push(s);
    }
    if (asked.length === 0) {
      setImmediate(fn);
      return;
    }
    let left = asked.length;
    const one = () => {
      if (--left === 0) fn();
    };
    for (const s of asked) {
      s.roundTripPings++;
      s.roundTrips.push(one);
      s.transport.conn.ping(ROUND_TRIP_OPAQUE);
    }
  }

  /**
   * Opens a stream on the least-busy usable connection, opening another when every usable one is at
   * the peer's stream limit. Undefined when the backend is not ready or has no capacity left (the
   * caller treats that as "never reached the backend": safe to retry elsewhere).
   */
  open(headers: readonly string[], endStream: boolean, owner: StreamOwner): H2Stream | undefined {
    if (this.#state.kind !== "ready") return undefined;
    let best: Session | undefined;
    let live = 0;
    for (const s of this.#sessions) {
      if (s.draining) continue;
      live++;
      if (!s.transport.conn.canOpenStream()) continue;
      if (best === undefined || s.transport.conn.localActive < best.transport.conn.localActive) best = s;
    }
    if (best === undefined) {
      if (live >= (this.#o.maxSessions ?? 8)) return undefined;
      // Streams opened before the new connection's SETTINGS arrive are sent right after the preface;
      // the server refuses any beyond its limit with REFUSED_STREAM, which the caller retries.
      best = this.#openSession();
    }
    return best.transport.conn.openStream(headers, endStream, owner);
  }

  /**
   * Resets `stream` (one this backend opened) with `code`, counted against its connection's reset
   * budget: once the budget is spent the connection drains (its open streams finish) and the next
   * streams go to a fresh connection.
   */
  cancel(stream: H2Stream, code: number = ErrorCode.CANCEL): void {
    if (stream.closed) return;
    const conn = stream.conn;
    conn.resetStream(stream, code);
    let session: Session | undefined;
    for (const s of this.#sessions) if (s.transport.conn === conn) session = s;
    if (session === undefined || session.draining) return;
    const budget = this.#o.resetBudget ?? DEFAULT_RESET_BUDGET;
    const now = systemClock.now();
    session.resetTokens = Math.min(
      budget.burst,
      session.resetTokens + ((now - session.resetRefilledAt) * budget.perSecond) / 1000,
    );
    session.resetRefilledAt = now;
    session.resetTokens -= 1;
    if (session.resetTokens < 1) {
      this.#lastError = `connection drained after ${budget.burst} cancellations (reset budget)`;
      this.#drain(session);
    }
  }

  /** Stops new streams; open streams finish, then connections close. */
  close(): void {
    if (this.#state.kind === "shutdown") return;
    this.#setState({ kind: "shutdown" });
    clearTimeout(this.#retryTimer);
    for (const s of this.#sessions) this.#drain(s);
  }

  /** Closes at once; open streams end with onReset. */
  destroy(): void {
    this.close();
    for (const s of [...this.#sessions]) s.transport.destroy();
  }

  #setState(state: BackendState): void {
    this.#state = state;
    this.#o.onStateChange(state);
  }

  #connect(): void {
    if (this.#state.kind === "shutdown") return;
    this.#setState({ kind: "connecting" });
    this.#openSession();
  }

  #openSession(): Session {
    const address = this.#o.address;
    const socket =
      address.kind === "unix"
        ? net.connect({ path: address.path })
        : net.connect({ host: address.host, port: address.port, noDelay: true });
    socket.pause();
    let session: Session;
    const windowSize = this.#o.windowSize;
    const transport = new H2Transport(
      socket,
      {
        role: "client",
        clock: systemClock,
        settings: {
          maxConcurrentStreams: 0, // a backend may not open streams toward us
          ...(windowSize !== undefined ? { initialWindowSize: windowSize } : {}),
          ...this.#o.settings,
        },
      },
      {
        onRemoteSettings: (first) => {
          if (first) this.#onConnected(session);
        },
        onGoaway: () => this.#drain(session),
        onDrained: () => session.transport.end(),
        onPingAck: (opaque) => {
          if (opaque.equals(ROUND_TRIP_OPAQUE)) {
            session.roundTrips.shift()?.();
            return;
          }
          clearTimeout(session.pingDeadline);
          session.pingDeadline = undefined;
          this.#schedulePing(session);
        },
        onConnectionError: (code, message, sentByUs) => {
          this.#lastError = sentByUs
            ? `protocol error: ${message}`
            : `GOAWAY ${errorCodeName(code)}: ${message}`;
        },
      },
      {
        onClose: (error) => {
          if (error !== undefined) this.#lastError = error.message;
          this.#onSessionClosed(session);
        },
      },
    );
    session = {
      transport,
      connected: false,
      draining: false,
      pingTimer: undefined,
      pingDeadline: undefined,
      connectTimer: undefined,
      resetTokens: (this.#o.resetBudget ?? DEFAULT_RESET_BUDGET).burst,
      resetRefilledAt: systemClock.now(),
      roundTrips: [],
      roundTripPings: 0,
      roundTripWindowAt: systemClock.now(),
    };
    this.#sessions.push(session);
    const connectTimeoutMs = this.#o.connectTimeoutMs ?? 5000;
    session.connectTimer = setTimeout(() => {
      if (!session.connected) transport.destroy(new Error(`connect timed out after ${connectTimeoutMs} ms`));
    }, connectTimeoutMs);
    session.connectTimer.unref();
    // The preface and SETTINGS are queued now and written once the socket connects.
    transport.start();
    return session;
  }

  #onConnected(session: Session): void {
    clearTimeout(session.connectTimer);
    if (session.draining || session.transport.closed) return;
    session.connected = true;
    this.#schedulePing(session);
    this.#backoff.reset();
    if (this.#state.kind !== "ready" && this.#state.kind !== "shutdown") this.#setState({ kind: "ready" });
  }

  #drain(session: Session): void {
    if (session.draining) return;
    session.draining = true;
    const conn = session.transport.conn;
    // Closed once its last stream ends (onDrained; at once when it has none).
    conn.shutdown();
    if (this.#state.kind === "ready" && !this.#sessions.some((s) => !s.draining)) {
      // Keep serving without a gap: a fresh connection replaces the drained one.
      this.#openSession();
    }
  }

  #onSessionClosed(session: Session): void {
    clearTimeout(session.connectTimer);
    clearTimeout(session.pingTimer);
    clearTimeout(session.pingDeadline);
    this.#sessions = this.#sessions.filter((s) => s !== session);
    // Its round trips will never be acked: they are over.
    // (after this close has been handled: the state below changes first).
    const roundTrips = session.roundTrips.splice(0);
    if (roundTrips.length > 0) setImmediate(() => runAll(roundTrips));
    if (this.#state.kind === "shutdown") return;
    const live = this.#sessions.filter((s) => !s.draining);
    if (live.some((s) => s.connected)) return;
    if (live.length > 0) return; // a replacement is still connecting; its own close brings us back here
    this.#setState({ kind: "transient-failure", error: this.#lastError || "connection closed" });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), this.#backoff.next());
    this.#retryTimer.unref();
  }

  #schedulePing(session: Session): void {
    const every = this.#o.keepaliveMs ?? 20_000;
    if (every <= 0 || session.transport.closed) return;
    clearTimeout(session.pingTimer);
    session.pingTimer = setTimeout(() => {
      if (session.transport.closed) return;
      const timeoutMs = this.#o.keepaliveTimeoutMs ?? 10_000;
      session.pingDeadline = setTimeout(() => {
        this.#lastError = `keepalive ping not answered in ${timeoutMs} ms`;
        session.transport.destroy(new Error(this.#lastError));
      }, timeoutMs);
      session.pingDeadline.unref();
      session.transport.conn.ping(PING_OPAQUE);
    }, every);
    session.pingTimer.unref();
  }
}
