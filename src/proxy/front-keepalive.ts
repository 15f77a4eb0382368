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
 *   (frame-server.ts calls `PingStrikes.onCall` as each call starts).
 * - Liveness: after `keepaliveTimeMs` without a ping from us, the front pings the client and closes the
 *   connection when no answer comes within `keepaliveTimeoutMs` — a client that vanished without a FIN
 *   (laptop lid, NAT drop) stops holding streams and memory.
 * - Idle timeout (FrontLimits.idleTimeoutMs, applied in frame-server.ts): no open call and no frame
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
