import type http2 from "node:http2";
import type { Clock } from "../core/clock.ts";

/**
 * Keepalive on the front (client-facing) connections, both ways, after gRPC's server keepalive
 * (gRFC A8 "client-side keepalive" and its server-side enforcement in grpc-core's
 * ping_abuse_policy / grpc-go's keepalive.EnforcementPolicy):
 *
 * - Enforcement: a client may ping at most every `minPingIntervalMs` (and, when `permitWithoutCalls`
 *   is false, not at all while it has no call open — gRPC uses 2 h then). A ping sooner than that is a
 *   *strike*; more than `maxPingStrikes` strikes and the connection gets GOAWAY ENHANCE_YOUR_CALM with
 *   debug data "too_many_pings" (what gRPC clients recognise: they double their keepalive time), its
 *   open calls finishing within the grace. Strikes go back to 0 whenever a call starts on the
 *   connection — gRPC resets them when it sends headers or data, which a balancer does for every call
 *   (we watch the calls, not the frames, because node:http2 does not tell us about frames it writes).
 * - Liveness: after `keepaliveTimeMs` without a ping from us, the front pings the client and closes the
 *   connection when no answer comes within `keepaliveTimeoutMs` — a client that vanished without a FIN
 *   (laptop lid, NAT drop) stops holding streams and memory.
 * - Idle timeout (`KeepaliveHooks.idleTimeoutMs`, FrontLimits.idleTimeoutMs): no open call and no frame
 *   either way for that long → GOAWAY and close.
 *
 * Defaults (docs/configuration.md): minPingIntervalMs 5 s, maxPingStrikes 2, permitWithoutCalls true,
 * keepaliveTimeMs 2 h, keepaliveTimeoutMs 20 s. gRPC servers default to 5 min and false; we are more
 * permissive because a balancer must not cut clients that their own grpc-js servers (which do not
 * enforce at all) accepted, while still stopping ping floods.
 */
export interface FrontKeepalive {
  /** Shortest allowed time between two pings from the client. 0: no enforcement. */
  readonly minPingIntervalMs: number;
  /**
   * Pings sooner than allowed that are tolerated; one more and the connection is closed. 0: no limit
   * (strikes are counted but never close), as in grpc-core's GRPC_ARG_HTTP2_MAX_PING_STRIKES.
   */
  readonly maxPingStrikes: number;
  /** Whether clients may ping while they have no call open (else: counted against a 2 h interval). */
  readonly permitWithoutCalls: boolean;
  /** Ping the client after this long (ms) since our last ping. 0: never. */
  readonly keepaliveTimeMs: number;
  /** Close the connection when our ping is not answered within this time (ms). */
  readonly keepaliveTimeoutMs: number;
}

export const defaultFrontKeepalive: FrontKeepalive = {
  minPingIntervalMs: 5000,
  maxPingStrikes: 2,
  permitWithoutCalls: true,
  keepaliveTimeMs: 2 * 60 * 60 * 1000,
  keepaliveTimeoutMs: 20_000,
};

/** gRPC's interval for pings on a connection without calls when they are not permitted. */
export const IDLE_PING_INTERVAL_MS = 2 * 60 * 60 * 1000;

/** HTTP/2 error code ENHANCE_YOUR_CALM (RFC 9113 §7). */
export const ENHANCE_YOUR_CALM = 0xb;

/**
 * The strike counter of one connection (no I/O; time comes in). `onPing` answers whether the ping is
 * one too many, i.e. the connection must be closed.
 */
export class PingStrikes {
  readonly #policy: FrontKeepalive;
  #lastPingAt = Number.NEGATIVE_INFINITY;
  #strikes = 0;

  constructor(policy: FrontKeepalive) {
    this.#policy = policy;
  }

  get strikes(): number {
    return this.#strikes;
  }

  /** A PING from the client at `now`; `openCalls` is the number of calls open on the connection. */
  onPing(now: number, openCalls: number): boolean {
    const p = this.#policy;
    if (p.minPingIntervalMs <= 0) return false;
    const interval =
      openCalls === 0 && !p.permitWithoutCalls
        ? Math.max(IDLE_PING_INTERVAL_MS, p.minPingIntervalMs)
        : p.minPingIntervalMs;
    const tooSoon = now - this.#lastPingAt < interval;
    this.#lastPingAt = now;
    if (!tooSoon) return false;
    this.#strikes++;
    return p.maxPingStrikes > 0 && this.#strikes > p.maxPingStrikes;
  }

  /** A call started: the client is using the connection, so earlier pings are forgiven. */
  onCall(): void {
    this.#strikes = 0;
    this.#lastPingAt = Number.NEGATIVE_INFINITY;
  }
}

export interface KeepaliveHooks {
  readonly clock: Clock;
  /** A connection was closed for pinging too often, or for not answering our ping. */
  readonly onEvent?: (message: string, fields?: Record<string, unknown>) => void;
  /** After GOAWAY for too many pings, how long open calls get before the connection is destroyed. */
  readonly graceMs: number;
  /**
   * A connection with no call open and no frame read or written for this long is closed (GOAWAY, then
   * destroyed after `graceMs`). 0: never. This is also what releases a session nghttp2 has terminated
   * after a protocol error (e.g. a header field over its 64 KiB HPACK limit): node stops reading such
   * a session's socket, so it never sees the client's FIN and the session would otherwise stay in
   * CLOSE-WAIT until the balancer closes.
   */
  readonly idleTimeoutMs?: number;
}

/**
 * Applies `policy` to one front session: counts the client's pings (the 'ping' event), resets strikes
 * as calls start, and pings the client when it has been quiet. Everything it starts ends with the
 * session.
 */
export function watchFrontKeepalive(
  session: http2.ServerHttp2Session,
  policy: FrontKeepalive,
  hooks: KeepaliveHooks,
): void {
  const strikes = new PingStrikes(policy);
  let openCalls = 0;
  let closing = false;
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    t.unref();
    timers.add(t);
  };
  session.once("close", () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
  });

  // One listener per session, shared by its streams: no closure per call on the data path.
  const callEnded = () => {
    openCalls--;
  };
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    openCalls++;
    strikes.onCall();
    stream.once("close", callEnded);
  });

  const idleMs = hooks.idleTimeoutMs ?? 0;
  if (idleMs > 0) {
    // node's session timeout: no frame read or written for idleMs. Open calls keep the connection.
    session.setTimeout(idleMs, () => {
      if (closing || session.destroyed) return;
      if (openCalls > 0) {
        session.setTimeout(idleMs); // re-arm: a quiet long call is not an idle connection
        return;
      }
      closing = true;
      hooks.onEvent?.("client connection idle: closed", { idleTimeoutMs: idleMs });
      try {
        session.close();
      } catch {
        // already closing
      }
      later(hooks.graceMs, () => session.destroy());
      // A session nghttp2 terminated never finishes closing by itself: destroy it at once.
      later(1000, () => {
        if (openCalls === 0) session.destroy();
      });
    });
  }

  if (policy.minPingIntervalMs > 0) {
    session.on("ping", () => {
      if (closing || !strikes.onPing(hooks.clock.now(), openCalls)) return;
      closing = true;
      hooks.onEvent?.("client pinged too often: GOAWAY ENHANCE_YOUR_CALM (too_many_pings)", {
        strikes: strikes.strikes,
        minPingIntervalMs: policy.minPingIntervalMs,
        openCalls,
      });
      try {
        // The last stream id we processed, so open calls finish; debug data as gRPC servers send it.
        session.goaway(ENHANCE_YOUR_CALM, session.state.lastProcStreamID ?? 0, Buffer.from("too_many_pings"));
        session.close();
      } catch {
        session.destroy();
        return;
      }
      later(hooks.graceMs, () => session.destroy());
    });
  }

  if (policy.keepaliveTimeMs > 0) {
    const schedule = () =>
      later(policy.keepaliveTimeMs, () => {
        if (session.closed || session.destroyed) return;
        let answered = false;
        later(policy.keepaliveTimeoutMs, () => {
          if (answered || session.destroyed) return;
          hooks.onEvent?.("client did not answer a keepalive ping: connection closed", {
            keepaliveTimeoutMs: policy.keepaliveTimeoutMs,
          });
          session.destroy();
        });
        try {
          const sent = session.ping((err) => {
            if (err) return; // the session is going away; its close clears our timers
            answered = true;
            schedule();
          });
          if (!sent) answered = true; // too many pings of ours in flight: not the client's fault
        } catch {
          // the session closed meanwhile
        }
      });
    schedule();
  }
}
