import net from "node:net";
import { formatAddress } from "../core/endpoint.ts";
import { Status } from "../core/status.ts";
import type { ConnectionSettings, H2Stream } from "../http2/connection.ts";
import { CONNECTION_PREFACE, ErrorCode, errorCodeName } from "../http2/frame.ts";
import { H2Transport } from "../platform/h2-transport.ts";
import { systemClock } from "../platform/system.ts";
import { forwardFrameCall, trailersOnlyList } from "./frame-forward.ts";
import { PingStrikes } from "./front-keepalive.ts";
import { encodeGrpcMessage } from "./grpc-response.ts";
import { headerOf } from "./headers.ts";
import { defaultFrontLimits, type ProxyServer, type ProxyServerOptions } from "./proxy-options.ts";

/** A connection that sends nothing recognisable within this time is closed. */
const FIRST_BYTES_TIMEOUT_MS = 10_000;

/**
 * The client-facing listener of the frame-level data path: plain TCP (or unix) sockets, each bound to
 * a pure `Http2Connection` (src/http2/) through `H2Transport`. The first bytes are sniffed: the HTTP/2
 * preface starts a connection; anything else (an HTTP/1.1 request, say) gets a one-line 505 naming
 * what this port speaks.
 *
 * Per connection, here: keepalive enforcement (PingStrikes), liveness pings to quiet clients, the idle
 * timeout, the send-stall sweep (streams whose client opens no window), max connection age with grace
 * (graceful double GOAWAY), and the end of the connection once a GOAWAY is out and its calls are done. Per stream: method, content-type and header-size checks, the
 * route, then `forwardFrameCall`.
 */
export async function startFrameProxyServer(o: ProxyServerOptions): Promise<ProxyServer> {
  const limits = { ...defaultFrontLimits, ...o.limits };
  const settings: Partial<ConnectionSettings> = {
    maxConcurrentStreams: limits.maxConcurrentStreams,
    maxHeaderListSize: limits.maxHeaderListSize,
    initialWindowSize: Math.min(limits.windowSize, 2 ** 31 - 1),
    connectionWindowSize: Math.min(Math.max(limits.windowSize, 65_535), 2 ** 31 - 1),
  };
  const fronts = new Set<FrontConnection>();
  const unclassified = new Set<net.Socket>();
  let closing = false;

  const tcp = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => {
    socket.on("error", () => {});
    unclassified.add(socket);
    socket.setTimeout(FIRST_BYTES_TIMEOUT_MS, () => socket.destroy());
    socket.once("close", () => unclassified.delete(socket));
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, CONNECTION_PREFACE.length);
      const matches = head.subarray(0, n).equals(CONNECTION_PREFACE.subarray(0, n));
      if (matches && head.length < CONNECTION_PREFACE.length) return; // wait for the rest of the preface
      socket.off("data", onData);
      socket.setTimeout(0);
      unclassified.delete(socket);
      if (matches) {
        if (closing) {
          socket.destroy();
          return;
        }
        socket.pause();
        const front = new FrontConnection(socket, settings, limits, o, () => {
          fronts.delete(front);
          o.onConnection?.(-1);
        });
        fronts.add(front);
        o.onConnection?.(1);
        front.start(head);
        return;
      }
      o.onFrontEvent?.("rejected a non-HTTP/2 connection", {
        firstBytes: head.subarray(0, 16).toString("latin1"),
      });
      const body = "roster: this port speaks gRPC over HTTP/2 (cleartext, prior knowledge), not HTTP/1.x\n";
      socket.end(
        `HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    socket.on("data", onData);
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    if (o.listen.kind === "unix") tcp.listen(o.listen.path, resolve);
    else tcp.listen(o.listen.port, o.listen.host, resolve);
  });
  tcp.on("error", (err) => o.onFrontEvent?.("listener error", { error: err.message }));
  const bound = tcp.address();
  const port = typeof bound === "object" && bound !== null ? bound.port : undefined;
  const address =
    o.listen.kind === "unix"
      ? formatAddress(o.listen)
      : formatAddress({ kind: "tcp", host: o.listen.host, port: port ?? 0 });

  return {
    address,
    port,
    connections: () => fronts.size + unclassified.size,
    close(graceMs = 10_000) {
      closing = true;
      return new Promise<void>((resolve) => {
        tcp.close();
        for (const socket of unclassified) socket.destroy();
        for (const f of fronts) f.shutdown();
        const finish = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          for (const f of fronts) f.destroy();
          setImmediate(finish);
        }, graceMs);
        const check = () => {
          if (fronts.size === 0) finish();
          else setTimeout(check, 20).unref();
        };
        check();
      });
    },
  };
}

type Limits = typeof defaultFrontLimits;

/** One client connection: its transport, keepalive, idle and age timers. */
class FrontConnection {
  readonly #transport: H2Transport;
  readonly #limits: Limits;
  readonly #o: ProxyServerOptions;
  readonly #strikes: PingStrikes;
  readonly #onGone: () => void;
  #closing = false;
  #lastActivity = 0;
  /** The connection's clock-driven checks: idle timeout and send-stall sweep (#tick). */
  #tickTimer: NodeJS.Timeout | undefined;
  readonly #tickMs: number;
  #ageTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #pingDeadline: NodeJS.Timeout | undefined;
  #graceTimer: NodeJS.Timeout | undefined;

  constructor(
    socket: net.Socket,
    settings: Partial<ConnectionSettings>,
    limits: Limits,
    o: ProxyServerOptions,
    onGone: () => void,
  ) {
    this.#limits = limits;
    this.#o = o;
    this.#onGone = onGone;
    this.#strikes = new PingStrikes(limits.keepalive);
    this.#tickMs = Math.min(
      limits.idleTimeoutMs > 0 ? limits.idleTimeoutMs : Number.POSITIVE_INFINITY,
      limits.sendStallTimeoutMs > 0
        ? Math.max(Math.ceil(limits.sendStallTimeoutMs / 4), 1)
        : Number.POSITIVE_INFINITY,
    );
    this.#transport = new H2Transport(
      socket,
      { role: "server", settings, clock: systemClock },
      {
        onStream: (s, headers, endStream) => this.#onStream(s, headers, endStream),
        onStreamHeadersTooLarge: (s, size) => {
          s.conn.sendHeaders(
            s,
            trailersOnlyList({
              code: Status.RESOURCE_EXHAUSTED,
              message: `roster: request headers are ${size} bytes, above the limit of ${limits.maxHeaderListSize} (limits.maxHeaderListSize)`,
            }),
            true,
          );
          o.onFrontEvent?.("rejected a request with oversized headers", { bytes: size });
        },
        onPing: (now) => this.#onPing(now),
        onPingAck: () => {
          clearTimeout(this.#pingDeadline);
          this.#pingDeadline = undefined;
          this.#scheduleLiveness();
        },
        onDrained: () => this.#transport.end(),
        onConnectionError: (code, message, sentByUs) => {
          if (sentByUs)
            o.onFrontEvent?.("client connection error: GOAWAY sent", {
              code: errorCodeName(code),
              error: message,
            });
          else if (code !== ErrorCode.NO_ERROR)
            o.onFrontEvent?.("client sent GOAWAY", { code: errorCodeName(code), error: message });
        },
      },
      {
        onClose: () => this.#onClose(),
        onActivity: () => {
          this.#lastActivity = systemClock.now();
        },
      },
    );
  }

  start(head: Buffer): void {
    const limits = this.#limits;
    this.#lastActivity = systemClock.now();
    if (limits.maxConnectionAgeMs > 0) {
      const age = limits.maxConnectionAgeMs * (0.9 + 0.2 * Math.random());
      this.#ageTimer = setTimeout(() => this.shutdown(), age);
      this.#ageTimer.unref();
    }
    if (Number.isFinite(this.#tickMs)) this.#armTick(this.#tickMs);
    this.#scheduleLiveness();
    this.#transport.start(head);
  }

  /** Graceful close: GOAWAY, open calls get `maxConnectionAgeGraceMs`, then the connection is destroyed. */
  shutdown(code: number = ErrorCode.NO_ERROR, debug = ""): void {
    const conn = this.#transport.conn;
    if (conn.state === "closed") return;
    if (!this.#closing) {
      this.#closing = true;
      this.#graceTimer = setTimeout(() => this.destroy(), this.#limits.maxConnectionAgeGraceMs);
      this.#graceTimer.unref();
    }
    conn.shutdown(code, debug);
  }

  destroy(): void {
    this.#transport.destroy();
  }

  #onStream(s: H2Stream, headers: string[], endStream: boolean): void {
    this.#strikes.onCall();
    const o = this.#o;
    const method = headerOf(headers, ":method");
    if (method !== "POST") {
      reject(s, 405, `roster: gRPC calls use POST, not ${method}`);
      return;
    }
    const contentType = headerOf(headers, "content-type");
    if (contentType === undefined || !contentType.startsWith("application/grpc")) {
      reject(s, 415, `roster: expected content-type application/grpc, got ${contentType ?? "none"}`);
      return;
    }
    const path = headerOf(headers, ":path") ?? "";
    const routed = o.route(path, (name) => headerOf(headers, name));
    if (routed.kind === "none") {
      s.conn.sendHeaders(s, trailersOnlyList({ code: routed.code, message: routed.message }), true);
      o.onNoRoute?.(routed.code);
      return;
    }
    forwardFrameCall(s, headers, endStream, routed.target.channel, routed.target.forward);
  }

  #onPing(now: number): void {
    if (this.#closing) return;
    if (this.#limits.keepalive.minPingIntervalMs <= 0) return;
    const conn = this.#transport.conn;
    if (!this.#strikes.onPing(now, conn.activeStreams)) return;
    this.#o.onFrontEvent?.("client pinged too often: GOAWAY ENHANCE_YOUR_CALM (too_many_pings)", {
      strikes: this.#strikes.strikes,
      minPingIntervalMs: this.#limits.keepalive.minPingIntervalMs,
      openCalls: conn.activeStreams,
    });
    this.shutdown(ErrorCode.ENHANCE_YOUR_CALM, "too_many_pings");
  }

  #scheduleLiveness(): void {
    const k = this.#limits.keepalive;
    if (k.keepaliveTimeMs <= 0) return;
    clearTimeout(this.#pingTimer);
    this.#pingTimer = setTimeout(() => {
      if (this.#transport.closed) return;
      this.#pingDeadline = setTimeout(() => {
        this.#o.onFrontEvent?.("client did not answer a keepalive ping: connection closed", {
          keepaliveTimeoutMs: k.keepaliveTimeoutMs,
        });
        this.destroy();
      }, k.keepaliveTimeoutMs);
      this.#pingDeadline.unref();
      this.#transport.conn.ping(Buffer.from("rosterLV", "latin1"));
    }, k.keepaliveTimeMs);
    this.#pingTimer.unref();
  }

  #armTick(ms: number): void {
    this.#tickTimer = setTimeout(() => this.#tick(), ms);
    this.#tickTimer.unref();
  }

  /**
   * One timer per connection for the checks judged on a clock, not one per stream: every `#tickMs`
   * (a quarter of `sendStallTimeoutMs`, or `idleTimeoutMs` if shorter) the streams whose response has
   * not moved for `sendStallTimeoutMs` are reset (`resetStalledStreams`: their calls cancel the backend
   * streams), and a connection without calls and quiet for `idleTimeoutMs` is closed (a quiet long call
   * is not an idle connection).
   */
  #tick(): void {
    if (this.#transport.closed) return;
    const conn = this.#transport.conn;
    const limits = this.#limits;
    const now = systemClock.now();
    if (limits.sendStallTimeoutMs > 0 && conn.activeStreams > 0) {
      const reset = conn.resetStalledStreams(now, limits.sendStallTimeoutMs);
      if (reset > 0)
        this.#o.onFrontEvent?.("client took no response bytes: its streams were reset (sendStallTimeoutMs)", {
          streams: reset,
          sendStallTimeoutMs: limits.sendStallTimeoutMs,
        });
    }
    let next = this.#tickMs;
    if (limits.idleTimeoutMs > 0 && conn.activeStreams === 0 && !this.#closing) {
      const quietFor = now - this.#lastActivity;
      if (quietFor >= limits.idleTimeoutMs) {
        this.#o.onFrontEvent?.("client connection idle: closed", { idleTimeoutMs: limits.idleTimeoutMs });
        this.shutdown();
        return;
      }
      next = Math.min(next, limits.idleTimeoutMs - quietFor);
    }
    this.#armTick(Math.max(next, 1));
  }

  #onClose(): void {
    clearTimeout(this.#tickTimer);
    clearTimeout(this.#ageTimer);
    clearTimeout(this.#pingTimer);
    clearTimeout(this.#pingDeadline);
    clearTimeout(this.#graceTimer);
    this.#onGone();
  }
}

/** A non-gRPC request: an HTTP status with a text body (and a grpc-status for gRPC-aware tools). */
function reject(s: H2Stream, httpStatus: number, message: string): void {
  s.conn.sendHeaders(
    s,
    [
      ":status",
      String(httpStatus),
      "content-type",
      "text/plain",
      "grpc-status",
      String(httpStatus === 415 ? Status.UNKNOWN : Status.UNIMPLEMENTED),
      "grpc-message",
      encodeGrpcMessage(message),
    ],
    false,
  );
  s.conn.sendData(s, Buffer.from(`${message}\n`), true);
}
