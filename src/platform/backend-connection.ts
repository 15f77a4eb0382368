import http2 from "node:http2";
import net from "node:net";
import { Backoff, type BackoffOptions, defaultBackoff } from "../core/backoff.ts";
import type { Address } from "../core/endpoint.ts";
import { formatAddress } from "../core/endpoint.ts";
import { systemRandom } from "./system.ts";

/**
 * The HTTP/2 sessions to one backend.
 *
 * State machine (tagged union, one place):
 *
 *   idle ──start()──▶ connecting ──first session connected──▶ ready
 *     ready ──all sessions gone──▶ transient-failure ──backoff timer──▶ connecting
 *     connecting ──connect error──▶ transient-failure
 *     transient-failure ──connectNow()──▶ connecting   (the backoff step ends early; backoff not reset)
 *     any ──close()──▶ shutdown   (no new streams; sessions close once their streams end)
 *
 * Several sessions are kept when the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached. A session that
 * receives GOAWAY is "draining": its open streams finish on it, new streams go to a fresh session.
 * Each session is PINGed every `keepaliveMs`; no answer within `keepaliveTimeoutMs` destroys it.
 *
 * It is the channel's BackendLink (channel/backend-link.ts) — structurally: platform does not import
 * channel — and adds `request`, the node:http2 stream the proxy forwards a call on.
 */
export type BackendState =
  | { kind: "idle" }
  | { kind: "connecting" }
  | { kind: "ready" }
  | { kind: "transient-failure"; error: string }
  | { kind: "shutdown" };

export interface BackendConnectionOptions {
  readonly address: Address;
  /** Called synchronously on every state change. */
  readonly onStateChange: (state: BackendState) => void;
  readonly keepaliveMs?: number;
  readonly keepaliveTimeoutMs?: number;
  readonly maxSessions?: number;
  /** HTTP/2 stream and connection flow-control window, bytes. */
  readonly windowSize?: number;
  readonly connectTimeoutMs?: number;
  readonly backoff?: BackoffOptions;
}

interface Slot {
  readonly session: http2.ClientHttp2Session;
  active: number;
  connected: boolean;
  draining: boolean;
  pingTimer: NodeJS.Timeout | undefined;
}

const DEFAULT_WINDOW = 16 * 1024 * 1024;

export class BackendConnection {
  readonly #o: BackendConnectionOptions;
  readonly #authority: string;
  readonly #backoff: Backoff;
  #state: BackendState = { kind: "idle" };
  #slots: Slot[] = [];
  #retryTimer: NodeJS.Timeout | undefined;
  #lastError = "";

  constructor(options: BackendConnectionOptions) {
    this.#o = options;
    this.#authority =
      options.address.kind === "tcp" ? `http://${formatAddress(options.address)}` : "http://localhost";
    this.#backoff = new Backoff(systemRandom, options.backoff ?? defaultBackoff);
  }

  get state(): BackendState {
    return this.#state;
  }

  /** Sessions open (connected or connecting), for status pages. */
  get sessionCount(): number {
    return this.#slots.length;
  }

  start(): void {
    if (this.#state.kind !== "idle") return;
    this.#connect();
  }

  /**
   * In transient-failure, ends the backoff step now and connects (the channel calls it when a call
   * finds no ready backend). The backoff is not reset, so a failed attempt starts the next, longer
   * step; only a connected session resets it. In any other state: nothing.
   */
  connectNow(): void {
    if (this.#state.kind !== "transient-failure") return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#connect();
  }

  /**
   * Calls `fn` on the next turn without asking the backend (BackendLink allows it): this link is not
   * the data path's, so nothing is paced by it (FrameBackend asks with a PING).
   */
  afterRoundTrip(fn: () => void): void {
    setImmediate(fn);
  }

  /**
   * Opens a stream on the least-busy usable session, opening another session when every usable one is
   * at the peer's stream limit. Throws when the backend is not ready (the caller treats that as
   * "never reached the backend": safe to retry elsewhere).
   */
  request(headers: http2.OutgoingHttpHeaders): http2.ClientHttp2Stream {
    if (this.#state.kind !== "ready") throw new Error(`backend is ${this.#state.kind}`);
    // A session still connecting counts as capacity (Node queues the stream until it connects), so a
    // burst during a GOAWAY hand-over does not open a session per call.
    let best: Slot | undefined;
    let open = 0;
    for (const s of this.#slots) {
      if (s.draining) continue;
      open++;
      if (s.active >= this.#limit(s)) continue;
      if (best === undefined || s.active < best.active) best = s;
    }
    if (best === undefined) {
      // Every session is at the peer's stream limit: open one more (bounded); past the bound, queue on
      // the least busy — nghttp2 holds the stream until the peer allows it.
      if (open < (this.#o.maxSessions ?? 8)) {
        best = this.#openSession();
      } else {
        for (const s of this.#slots) {
          if (!s.draining && (best === undefined || s.active < best.active)) best = s;
        }
      }
      if (best === undefined) throw new Error("backend has no usable session");
    }
    const slot = best;
    const stream = slot.session.request(headers, { endStream: false });
    slot.active++;
    stream.once("close", () => {
      slot.active--;
    });
    return stream;
  }

  /** Stops new streams; open streams finish, then sessions close. */
  close(): void {
    if (this.#state.kind === "shutdown") return;
    this.#setState({ kind: "shutdown" });
    clearTimeout(this.#retryTimer);
    for (const s of this.#slots) this.#drain(s);
  }

  /** Closes at once, resetting open streams. */
  destroy(): void {
    this.close();
    for (const s of [...this.#slots]) s.session.destroy();
  }

  #limit(s: Slot): number {
    return s.session.remoteSettings?.maxConcurrentStreams ?? 100;
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

  #openSession(): Slot {
    const address = this.#o.address;
    const window = this.#o.windowSize ?? DEFAULT_WINDOW;
    const session = http2.connect(this.#authority, {
      settings: { initialWindowSize: window, enablePush: false },
      // A backend speaks gRPC: headers can be large (binary metadata), streams are long-lived.
      maxSessionMemory: 64,
      // Our own socket so Nagle is off (small gRPC frames must not wait for ACKs).
      createConnection: () =>
        address.kind === "unix"
          ? net.connect({ path: address.path })
          : net.connect({ host: address.host, port: address.port, noDelay: true }),
    });
    const slot: Slot = { session, active: 0, connected: false, draining: false, pingTimer: undefined };
    this.#slots.push(slot);
    const connectTimer = setTimeout(() => {
      if (!slot.connected)
        session.destroy(new Error(`connect timed out after ${this.#o.connectTimeoutMs ?? 5000} ms`));
    }, this.#o.connectTimeoutMs ?? 5000);
    connectTimer.unref();
    session.once("connect", () => {
      clearTimeout(connectTimer);
      // close()/destroy() may have come while connecting: the session is no use then (and Node throws
      // ERR_HTTP2_INVALID_SESSION from setLocalWindowSize on it).
      if (session.destroyed || session.closed || slot.draining) return;
      slot.connected = true;
      session.setLocalWindowSize(window);
      this.#schedulePing(slot);
      this.#backoff.reset();
      if (this.#state.kind !== "ready" && this.#state.kind !== "shutdown") this.#setState({ kind: "ready" });
    });
    session.on("goaway", () => this.#drain(slot));
    session.on("error", (err: Error) => {
      this.#lastError = err.message;
    });
    session.once("close", () => {
      clearTimeout(connectTimer);
      clearTimeout(slot.pingTimer);
      this.#slots = this.#slots.filter((s) => s !== slot);
      this.#afterSessionGone();
    });
    return slot;
  }

  #drain(slot: Slot): void {
    if (slot.draining) return;
    slot.draining = true;
    // close() lets open streams finish, refuses new ones, then ends the session.
    slot.session.close();
    if (this.#state.kind === "ready" && !this.#slots.some((s) => !s.draining)) {
      // Keep serving without a gap: a fresh session replaces the drained one.
      this.#openSession();
    }
  }

  #afterSessionGone(): void {
    if (this.#state.kind === "shutdown") return;
    const live = this.#slots.filter((s) => !s.draining);
    if (live.some((s) => s.connected)) return;
    if (live.length > 0) {
      // Only sessions still connecting remain: a GOAWAY hand-over (or extra capacity) in progress.
      // Stay as we are: streams queue on the connecting session, and one that never gets sent is
      // retried elsewhere; if it fails to connect, its 'close' brings us back here with none left.
      return;
    }
    const error = this.#lastError || "connection closed";
    this.#setState({ kind: "transient-failure", error });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), this.#backoff.next());
    this.#retryTimer.unref();
  }

  #schedulePing(slot: Slot): void {
    const every = this.#o.keepaliveMs ?? 20_000;
    if (every <= 0) return;
    slot.pingTimer = setTimeout(() => {
      if (slot.session.destroyed || slot.session.closed) return;
      const timeout = setTimeout(
        () =>
          slot.session.destroy(
            new Error(`keepalive ping not answered in ${this.#o.keepaliveTimeoutMs ?? 10_000} ms`),
          ),
        this.#o.keepaliveTimeoutMs ?? 10_000,
      );
      timeout.unref();
      const sent = slot.session.ping((err) => {
        clearTimeout(timeout);
        if (!err) this.#schedulePing(slot);
      });
      if (!sent) clearTimeout(timeout);
    }, every);
    slot.pingTimer.unref();
  }
}
