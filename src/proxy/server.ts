import http2 from "node:http2";
import net from "node:net";
import type { Channel } from "../channel/channel.ts";
import { type Address, formatAddress } from "../core/endpoint.ts";
import { Status } from "../core/status.ts";
import type { FrameBackend } from "../platform/h2-backend.ts";
import { systemClock } from "../platform/system.ts";
import { type ForwardOptions, forwardCall } from "./forward.ts";
import { defaultFrontKeepalive, type FrontKeepalive, watchFrontKeepalive } from "./front-keepalive.ts";
import { encodeGrpcMessage, trailersOnly } from "./grpc-response.ts";
import { type HeaderLookup, lookupOfRecord } from "./headers.ts";
import type { RouteResult } from "./routes.ts";

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
}

export const defaultFrontLimits: FrontLimits = {
  maxConcurrentStreams: 1000,
  maxHeaderListSize: 60 * 1024,
  windowSize: 16 * 1024 * 1024,
  maxConnectionAgeMs: 0,
  maxConnectionAgeGraceMs: 30_000,
  keepalive: defaultFrontKeepalive,
  idleTimeoutMs: 60 * 60 * 1000,
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

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** A connection that sends nothing recognisable within this time is closed. */
const FIRST_BYTES_TIMEOUT_MS = 10_000;

/**
 * The client-facing listener. A plain TCP (or unix) server looks at the first bytes of each
 * connection: the HTTP/2 preface goes to the HTTP/2 server (cleartext, prior knowledge, as gRPC
 * clients speak it); anything else — an HTTP/1.1 request, say — gets a short HTTP/1.1 answer saying
 * what this port speaks, instead of a silent close.
 */
export async function startProxyServer(o: ProxyServerOptions): Promise<ProxyServer> {
  const limits = { ...defaultFrontLimits, ...o.limits };
  const sessions = new Set<http2.ServerHttp2Session>();
  const h2 = http2.createServer({
    settings: {
      maxConcurrentStreams: limits.maxConcurrentStreams,
      maxHeaderListSize: limits.maxHeaderListSize,
      initialWindowSize: limits.windowSize,
    },
    maxHeaderListPairs: 2000,
    maxSessionMemory: 64,
  });

  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    o.onConnection?.(1);
    watchFrontKeepalive(session, limits.keepalive, {
      clock: systemClock,
      graceMs: limits.maxConnectionAgeGraceMs,
      idleTimeoutMs: limits.idleTimeoutMs,
      ...(o.onFrontEvent ? { onEvent: o.onFrontEvent } : {}),
    });
    let ageTimer: NodeJS.Timeout | undefined;
    if (limits.maxConnectionAgeMs > 0) {
      const age = limits.maxConnectionAgeMs * (0.9 + 0.2 * Math.random());
      ageTimer = setTimeout(() => {
        session.close(); // GOAWAY: open calls finish, new ones go to a new connection
        ageTimer = setTimeout(() => session.destroy(), limits.maxConnectionAgeGraceMs);
        ageTimer.unref();
      }, age);
      ageTimer.unref();
    }
    session.once("close", () => {
      clearTimeout(ageTimer);
      sessions.delete(session);
      o.onConnection?.(-1);
    });
    session.on("error", (err) => o.onFrontEvent?.("client connection error", { error: err.message }));
    try {
      session.setLocalWindowSize(limits.windowSize);
    } catch {
      // the session may already be closing
    }
  });
  h2.on("sessionError", (err) => o.onFrontEvent?.("client session error", { error: err.message }));
  h2.on(
    "stream",
    (
      stream: http2.ServerHttp2Stream,
      headers: http2.IncomingHttpHeaders,
      _flags: number,
      rawHeaders: string[],
    ) => {
      const method = headers[":method"];
      if (method !== "POST") {
        reject(stream, 405, `roster: gRPC calls use POST, not ${method}`);
        return;
      }
      const contentType = headers["content-type"];
      if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) {
        reject(stream, 415, `roster: expected content-type application/grpc, got ${contentType ?? "none"}`);
        return;
      }
      // SETTINGS_MAX_HEADER_LIST_SIZE binds a client only once it has acknowledged our SETTINGS, so a
      // first request can exceed it; count it ourselves (RFC 9113 §6.5.2: name + value + 32 per field).
      let size = 0;
      for (let i = 0; i < rawHeaders.length; i += 2)
        size += rawHeaders[i]!.length + rawHeaders[i + 1]!.length + 32;
      if (size > limits.maxHeaderListSize) {
        stream.on("error", () => {});
        stream.respond(
          trailersOnly({
            code: Status.RESOURCE_EXHAUSTED,
            message: `roster: request headers are ${size} bytes, above the limit of ${limits.maxHeaderListSize} (limits.maxHeaderListSize)`,
          }),
          { endStream: true },
        );
        o.onFrontEvent?.("rejected a request with oversized headers", { bytes: size });
        return;
      }
      const path = headers[":path"];
      const routed = o.route(typeof path === "string" ? path : "", lookupOfRecord(headers));
      if (routed.kind === "none") {
        stream.on("error", () => {});
        stream.respond(trailersOnly({ code: routed.code, message: routed.message }), { endStream: true });
        o.onNoRoute?.(routed.code);
        return;
      }
      forwardCall(stream, headers, routed.target.channel, routed.target.forward);
    },
  );

  // Connections whose first bytes have not arrived yet: counted, timed out, and closed by close().
  const unclassified = new Set<net.Socket>();
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {});
    unclassified.add(socket);
    socket.setTimeout(FIRST_BYTES_TIMEOUT_MS, () => socket.destroy());
    let head: Buffer = Buffer.alloc(0);
    socket.once("close", () => {
      // A TCP health probe (a port check) connects and closes without a byte: routine, not a warning.
      if (unclassified.delete(socket) && head.length === 0) {
        o.onFrontEvent?.("a connection closed before sending any bytes (a TCP probe?)", {}, "debug");
      }
    });
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, PREFACE.length);
      const matches = head.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (matches && head.length < PREFACE.length) return; // wait for the rest of the preface
      socket.off("data", onData);
      socket.setTimeout(0);
      unclassified.delete(socket);
      if (matches) {
        // Put the bytes back: the HTTP/2 session reads what is already buffered on the socket first.
        socket.pause();
        socket.unshift(head);
        h2.emit("connection", socket);
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
    connections: () => sessions.size + unclassified.size,
    close(graceMs = 10_000) {
      return new Promise<void>((resolve) => {
        tcp.close();
        for (const socket of unclassified) socket.destroy();
        for (const s of sessions) s.close();
        const finish = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          for (const s of sessions) s.destroy();
          setImmediate(finish);
        }, graceMs);
        const check = () => {
          if (sessions.size === 0) finish();
          else setTimeout(check, 20).unref();
        };
        check();
      });
    },
  };
}

function reject(stream: http2.ServerHttp2Stream, httpStatus: number, message: string): void {
  stream.on("error", () => {});
  stream.respond(
    {
      ":status": httpStatus,
      "content-type": "text/plain",
      "grpc-status": String(httpStatus === 415 ? Status.UNKNOWN : Status.UNIMPLEMENTED),
      "grpc-message": encodeGrpcMessage(message),
    },
    { endStream: false },
  );
  stream.end(`${message}\n`);
}
