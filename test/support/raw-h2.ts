// A raw HTTP/2 client for attack and conformance tests: frames are built with Roster's own encoders
// (src/http2/frame.ts, src/http2/hpack.ts) and written to a plain `net` socket exactly as given, so a
// test can send anything, malformed included. What the server sends back is cut into frames and its
// header blocks are HPACK-decoded in arrival order; tests judge the server by these bytes.
//
//   const c = await RawH2.connect(port);          // preface + SETTINGS, waits for the server's SETTINGS
//   c.send(c.headersFrame(1, requestHeaders(path), { endStream: false }), dataFrame(1, body, true));
//   const r = await c.response(1);                // headers, data, trailers or RST_STREAM of stream 1
//   const g = await c.goaway();                   // the server's GOAWAY (waits, bounded)
//   await c.closedWithin(2000);                   // the server closed the socket
import net from "node:net";
import {
  CONNECTION_PREFACE,
  DEFAULT_WINDOW_SIZE,
  ErrorCode,
  Flag,
  FrameReader,
  FrameType,
  frameHeader,
  MAX_MAX_FRAME_SIZE,
  MAX_WINDOW_SIZE,
  parseGoaway,
  SETTINGS_ACK,
  type Settings,
  settingsFrame,
  windowUpdateFrame,
} from "../../src/http2/frame.ts";
import { HpackDecoder, HpackEncoder } from "../../src/http2/hpack.ts";
import { echoPath, encodeEchoRequest, grpcFrame } from "./echo-backend.ts";

export interface RawFrame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
  /** HEADERS (with its CONTINUATIONs): the decoded list, flat [name, value, …]. */
  readonly headers?: string[];
}

export interface RawResponse {
  headers: string[] | undefined;
  data: Buffer;
  trailers: string[] | undefined;
  rstCode: number | undefined;
}

/** One frame: a 9-byte header and `payload` (any type, flags, stream: nothing is checked). */
export function rawFrame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  return Buffer.concat([frameHeader(payload.length, type, flags, stream), payload]);
}

export function dataFrame(stream: number, payload: Buffer, endStream: boolean, padding?: number): Buffer {
  if (padding === undefined)
    return rawFrame(FrameType.DATA, endStream ? Flag.END_STREAM : 0, stream, payload);
  const body = Buffer.concat([Buffer.from([padding]), payload, Buffer.alloc(padding)]);
  return rawFrame(FrameType.DATA, Flag.PADDED | (endStream ? Flag.END_STREAM : 0), stream, body);
}

/** The request headers of a gRPC call to `path` (lowercase, pseudo-headers first). */
export function grpcRequestHeaders(path: string = echoPath("Echo"), extra: string[] = []): string[] {
  return [
    ":method",
    "POST",
    ":scheme",
    "http",
    ":path",
    path,
    ":authority",
    "roster.test",
    "content-type",
    "application/grpc",
    "te",
    "trailers",
    ...extra,
  ];
}

/** A length-prefixed Echo request message. */
export function echoBody(message: string): Buffer {
  return grpcFrame(encodeEchoRequest({ message }));
}

/** The value of `name` in a flat header list. */
export function header(list: readonly string[] | undefined, name: string): string | undefined {
  if (list === undefined) return undefined;
  for (let i = 0; i < list.length; i += 2) if (list[i] === name) return list[i + 1];
  return undefined;
}

export interface ConnectOptions {
  /** Our SETTINGS (default: none, the RFC's initial values). */
  readonly settings?: Settings;
  /** Send the preface and SETTINGS and wait for the server's SETTINGS (default true). */
  readonly handshake?: boolean;
  /**
   * Raise the connection's receive window to 2^31-1 at the handshake (default true), so that many
   * small responses never wait for a WINDOW_UPDATE (this client sends none by itself).
   */
  readonly bigConnectionWindow?: boolean;
}

export class RawH2 {
  readonly socket: net.Socket;
  readonly frames: RawFrame[] = [];
  readonly encoder = new HpackEncoder();
  readonly #decoder = new HpackDecoder({ maxTableSize: 4096, maxHeaderListSize: 16 * 1024 * 1024 });
  readonly #reader = new FrameReader(MAX_MAX_FRAME_SIZE);
  #block: { type: number; flags: number; stream: number; parts: Buffer[] } | undefined;
  #waiters: (() => void)[] = [];
  /** The server ended or reset the connection. */
  closed = false;
  /** When it did (Date.now()), for bounds on how fast the server closes. */
  closedAt = 0;
  /** Bytes received in total (also while the frames are not parsed). */
  bytesIn = 0;
  /** The bytes are not HTTP/2 frames (the server answered something else). */
  raw: Buffer[] = [];
  #parse = true;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      if (!this.#parse) {
        this.raw.push(chunk);
      } else {
        this.#reader.push(chunk, (type, flags, stream, payload) =>
          this.#onFrame(type, flags, stream, Buffer.from(payload)),
        );
      }
      this.#wake();
    });
    // The socket is half-open (allowHalfOpen): our side never closes by itself, so "closed" means
    // the server ended (FIN) or reset the connection, as an attacker that ignores FIN would see it.
    const onGone = () => {
      if (this.closed) return;
      this.closed = true;
      this.closedAt = Date.now();
      this.#wake();
    };
    socket.on("end", onGone);
    socket.on("close", onGone);
  }

  /** A TCP connection to 127.0.0.1:`port`; with the handshake unless `handshake: false`. */
  static async connect(port: number, o: ConnectOptions = {}): Promise<RawH2> {
    const socket = net.connect({ port, host: "127.0.0.1", noDelay: true, allowHalfOpen: true });
    const c = new RawH2(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    if (o.handshake !== false) {
      c.send(CONNECTION_PREFACE, settingsFrame(o.settings ?? []));
      if (o.bigConnectionWindow !== false)
        c.send(windowUpdateFrame(0, MAX_WINDOW_SIZE - DEFAULT_WINDOW_SIZE));
      await c.waitFrame((f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0);
      c.send(SETTINGS_ACK);
    }
    return c;
  }

  /** Keep the received bytes as they are (the server may not answer with HTTP/2). */
  rawMode(): void {
    this.#parse = false;
  }

  send(...bufs: Buffer[]): void {
    if (this.socket.destroyed) return;
    this.socket.write(bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs));
  }

  /** HEADERS (END_HEADERS unless `endHeaders: false`) with a block from our encoder. */
  headersFrame(
    stream: number,
    headers: readonly string[],
    o: { endStream?: boolean; endHeaders?: boolean; padding?: number; priority?: number } = {},
  ): Buffer {
    return this.headersBlockFrame(stream, this.encoder.encode(headers), o);
  }

  /** HEADERS carrying `block` as it is. */
  headersBlockFrame(
    stream: number,
    block: Buffer,
    o: { endStream?: boolean; endHeaders?: boolean; padding?: number; priority?: number } = {},
  ): Buffer {
    let flags = (o.endStream ? Flag.END_STREAM : 0) | (o.endHeaders === false ? 0 : Flag.END_HEADERS);
    const parts: Buffer[] = [];
    if (o.padding !== undefined) {
      flags |= Flag.PADDED;
      parts.push(Buffer.from([o.padding]));
    }
    if (o.priority !== undefined) {
      flags |= Flag.PRIORITY;
      const p = Buffer.alloc(5);
      p.writeUInt32BE(o.priority, 0);
      p[4] = 15;
      parts.push(p);
    }
    parts.push(block);
    if (o.padding !== undefined) parts.push(Buffer.alloc(o.padding));
    return rawFrame(FrameType.HEADERS, flags, stream, Buffer.concat(parts));
  }

  /** A whole unary Echo call on `stream`: HEADERS then one DATA with END_STREAM. */
  echoRequest(stream: number, message: string, extraHeaders: string[] = []): Buffer {
    return Buffer.concat([
      this.headersFrame(stream, grpcRequestHeaders(echoPath("Echo"), extraHeaders)),
      dataFrame(stream, echoBody(message), true),
    ]);
  }

  #onFrame(type: number, flags: number, stream: number, payload: Buffer): void {
    if (type === FrameType.HEADERS || type === FrameType.CONTINUATION) {
      let body = payload;
      if (type === FrameType.HEADERS) {
        let start = 0;
        let end = payload.length;
        if (flags & Flag.PADDED) {
          start = 1;
          end -= payload[0]!;
        }
        if (flags & Flag.PRIORITY) start += 5;
        body = payload.subarray(start, Math.max(start, end));
        this.#block = { type, flags, stream, parts: [body] };
      } else if (this.#block !== undefined) {
        this.#block.parts.push(body);
      }
      if (flags & Flag.END_HEADERS && this.#block !== undefined) {
        const b = this.#block;
        this.#block = undefined;
        const decoded = this.#decoder.decode(Buffer.concat(b.parts));
        const headers = decoded.kind === "ok" ? decoded.headers : [`(hpack ${decoded.kind})`, ""];
        // END_STREAM is on the HEADERS frame, not the CONTINUATION.
        this.frames.push({
          type: FrameType.HEADERS,
          flags: b.flags | Flag.END_HEADERS,
          stream,
          payload,
          headers,
        });
      }
      return;
    }
    this.frames.push({ type, flags, stream, payload });
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  /** Resolves on the next frame or close (or after `ms`). */
  #next(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** The first received frame matching `pred`; rejects after `timeoutMs` or on close without one. */
  async waitFrame(pred: (f: RawFrame) => boolean, timeoutMs = 3000, what = "a frame"): Promise<RawFrame> {
    const until = Date.now() + timeoutMs;
    let from = 0;
    // Bounded by the clock.
    for (;;) {
      for (; from < this.frames.length; from++) if (pred(this.frames[from]!)) return this.frames[from]!;
      if (this.closed) throw new Error(`connection closed before ${what}; got ${this.describe()}`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms; got ${this.describe()}`);
      await this.#next(left);
    }
  }

  /** The server's GOAWAY, parsed. */
  async goaway(timeoutMs = 3000): Promise<{ lastStreamId: number; code: number; debug: string }> {
    const f = await this.waitFrame((x) => x.type === FrameType.GOAWAY, timeoutMs, "GOAWAY");
    const g = parseGoaway(f.payload);
    if (g === undefined) throw new Error("short GOAWAY");
    return { lastStreamId: g.lastStreamId, code: g.code, debug: g.debug.toString("utf8") };
  }

  /** Resolves once the socket is closed; rejects if it is still open after `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<number> {
    const start = Date.now();
    const until = start + timeoutMs;
    // Bounded by the clock.
    while (!this.closed) {
      const left = until - Date.now();
      if (left <= 0) throw new Error(`the server did not close the socket within ${timeoutMs} ms`);
      await this.#next(left);
    }
    return this.closedAt - start;
  }

  /** Waits up to `ms` for the server to close (resolves false if it did not). */
  async staysOpen(ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.closed && Date.now() < until) await this.#next(until - Date.now());
    return !this.closed;
  }

  /** RST_STREAM code received for `stream`, waiting up to `timeoutMs`. */
  async rst(stream: number, timeoutMs = 3000): Promise<number> {
    const f = await this.waitFrame(
      (x) => x.type === FrameType.RST_STREAM && x.stream === stream,
      timeoutMs,
      `RST_STREAM on ${stream}`,
    );
    return f.payload.readUInt32BE(0);
  }

  /** The stream's response once it ended (END_STREAM or RST_STREAM), bounded by `timeoutMs`. */
  async response(stream: number, timeoutMs = 3000): Promise<RawResponse> {
    await this.waitFrame(
      (f) =>
        f.stream === stream &&
        (f.type === FrameType.RST_STREAM ||
          ((f.type === FrameType.HEADERS || f.type === FrameType.DATA) && (f.flags & Flag.END_STREAM) !== 0)),
      timeoutMs,
      `the end of stream ${stream}`,
    );
    const r: RawResponse = {
      headers: undefined,
      data: Buffer.alloc(0),
      trailers: undefined,
      rstCode: undefined,
    };
    const data: Buffer[] = [];
    for (const f of this.frames) {
      if (f.stream !== stream) continue;
      if (f.type === FrameType.HEADERS) {
        if (r.headers === undefined) r.headers = f.headers;
        else r.trailers = f.headers;
      } else if (f.type === FrameType.DATA) {
        const start = f.flags & Flag.PADDED ? 1 : 0;
        const end = f.flags & Flag.PADDED ? f.payload.length - f.payload[0]! : f.payload.length;
        data.push(f.payload.subarray(start, end));
      } else if (f.type === FrameType.RST_STREAM) r.rstCode = f.payload.readUInt32BE(0);
    }
    r.data = Buffer.concat(data);
    return r;
  }

  /** "SETTINGS, HEADERS(1), GOAWAY(PROTOCOL_ERROR)…" for failure messages. */
  describe(): string {
    const names = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]));
    const codes = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k]));
    const parts = this.frames.slice(-20).map((f) => {
      const n = names[f.type] ?? `type${f.type}`;
      if (f.type === FrameType.GOAWAY && f.payload.length >= 8) {
        const code = f.payload.readUInt32BE(4);
        return `GOAWAY(${codes[code] ?? code} "${f.payload.subarray(8).toString()}")`;
      }
      if (f.type === FrameType.RST_STREAM)
        return `RST_STREAM(${f.stream}, ${codes[f.payload.readUInt32BE(0)]})`;
      return `${n}(${f.stream})`;
    });
    return `${parts.join(", ") || "no frames"}${this.closed ? ", closed" : ""}`;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** An HPACK integer (RFC 7541 §5.1) with a `prefixBits` prefix whose high bits are `first`. */
export function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  // Bounded: 7 bits per turn.
  while (rest >= 128) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** A header list as HPACK literals without indexing, new names, no Huffman (the peer's table is untouched). */
export function literalBlock(headers: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = Buffer.from(headers[i]!, "latin1");
    const value = Buffer.from(headers[i + 1]!, "latin1");
    parts.push(Buffer.from([0]), hpackInt(name.length, 7), name, hpackInt(value.length, 7), value);
  }
  return Buffer.concat(parts);
}

/** A literal header field with incremental indexing, new name (RFC 7541 §6.2.1): enters the peer's table. */
export function indexedLiteral(name: string, value: string): Buffer {
  const n = Buffer.from(name, "latin1");
  const v = Buffer.from(value, "latin1");
  return Buffer.concat([Buffer.from([0x40]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v]);
}

/**
 * Sends an HPACK bomb on `stream`: a request header block that adds a 4000-byte entry to the dynamic
 * table and then references it 12,000 times (~48 MB decoded from a ~16 KB block), as HEADERS
 * (END_STREAM) + CONTINUATION.
 */
export function sendHpackBomb(a: RawH2, stream: number): void {
  const block = Buffer.concat([
    literalBlock(grpcRequestHeaders()),
    indexedLiteral("x-bomb", "v".repeat(4000)),
    Buffer.alloc(12_000, 0x80 | 62),
  ]);
  a.send(a.headersBlockFrame(stream, block.subarray(0, 16_000), { endHeaders: false, endStream: true }));
  a.send(rawFrame(FrameType.CONTINUATION, Flag.END_HEADERS, stream, block.subarray(16_000)));
}
