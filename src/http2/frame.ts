/**
 * HTTP/2 frame layout (RFC 9113 §4 and §6): constants, a reader that cuts a byte stream into frames,
 * and encoders for every frame the data path sends. Pure: no sockets, no timers.
 *
 * The reader hands each frame's payload out as a view (`subarray`) of the bytes it was given, so a
 * DATA payload can be re-framed onto another connection without copying. Frames that straddle two
 * reads are joined once (Buffer.concat of the leftover and the next read).
 */

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

/** HTTP/2 error codes (RFC 9113 §7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

const ERROR_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

/** "PROTOCOL_ERROR", or "0x2a" for a code RFC 9113 does not name. */
export function errorCodeName(code: number): string {
  return ERROR_NAMES[code] ?? `0x${code.toString(16)}`;
}

export const SettingId = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

export const FRAME_HEADER_SIZE = 9;
/** SETTINGS_MAX_FRAME_SIZE's initial value and smallest allowed value. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
/** SETTINGS_MAX_FRAME_SIZE's largest allowed value. */
export const MAX_MAX_FRAME_SIZE = 16_777_215;
export const DEFAULT_WINDOW_SIZE = 65_535;
export const MAX_WINDOW_SIZE = 2 ** 31 - 1;
export const MAX_STREAM_ID = 2 ** 31 - 1;

/** The client connection preface (RFC 9113 §3.4). */
export const CONNECTION_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/**
 * Receives each complete frame. `payload` is a view into the bytes read (valid as long as the caller
 * keeps it; it is never overwritten by the reader).
 */
export type FrameSink = (type: number, flags: number, streamId: number, payload: Buffer) => void;

/**
 * Cuts a byte stream into frames. `push` returns undefined when every complete frame was delivered,
 * or the length of a frame larger than `maxFrameSize` (a FRAME_SIZE_ERROR for the connection; the
 * reader then delivers nothing more).
 */
export class FrameReader {
  /**
   * The start of a frame not yet whole, as the reads that brought it (kept as they are, joined once
   * when the frame is complete: a frame spread over many reads is copied once, and only that frame —
   * the rest of the read that completes it is not copied).
   */
  #pieces: Buffer[] = [];
  #pendingBytes = 0;
  /** The pending frame's size with its header, once its header is in; 0 before. */
  #pendingFrame = 0;
  #failed = false;
  /** Our SETTINGS_MAX_FRAME_SIZE: frames above it are a FRAME_SIZE_ERROR (RFC 9113 §4.2). */
  maxFrameSize: number;

  constructor(maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
    this.maxFrameSize = maxFrameSize;
  }

  /** Bytes read but not yet a whole frame. */
  get buffered(): number {
    return this.#pendingBytes;
  }

  push(chunk: Buffer, sink: FrameSink): number | undefined {
    if (this.#failed) return undefined;
    let from = 0;
    if (this.#pendingBytes > 0) {
      const pending = this.#pendingBytes;
      let frame = this.#pendingFrame;
      if (frame === 0) {
        if (pending + chunk.length < FRAME_HEADER_SIZE) return this.#keep(chunk);
        const head = Buffer.concat([...this.#pieces, chunk.subarray(0, FRAME_HEADER_SIZE - pending)]);
        const length = (head[0]! << 16) | (head[1]! << 8) | head[2]!;
        if (length > this.maxFrameSize) {
          this.#failed = true;
          this.#drop();
          return length;
        }
        frame = FRAME_HEADER_SIZE + length;
        this.#pendingFrame = frame;
      }
      const need = frame - pending;
      if (chunk.length < need) return this.#keep(chunk);
      this.#pieces.push(chunk.subarray(0, need));
      const whole = Buffer.concat(this.#pieces, frame);
      this.#drop();
      this.#cut(whole, 0, sink);
      if (this.#failed) return undefined;
      from = need;
    }
    return this.#cut(chunk, from, sink);
  }

  /** Delivers the whole frames of `buf` from `at`; keeps the rest. */
  #cut(buf: Buffer, at: number, sink: FrameSink): number | undefined {
    const end = buf.length;
    while (end - at >= FRAME_HEADER_SIZE) {
      const length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
      if (length > this.maxFrameSize) {
        this.#failed = true;
        return length;
      }
      if (end - at - FRAME_HEADER_SIZE < length) {
        this.#pendingFrame = FRAME_HEADER_SIZE + length;
        break;
      }
      const type = buf[at + 3]!;
      const flags = buf[at + 4]!;
      const streamId = buf.readUInt32BE(at + 5) & 0x7fffffff; // the reserved bit is ignored (§4.1)
      const start = at + FRAME_HEADER_SIZE;
      at = start + length;
      sink(type, flags, streamId, buf.subarray(start, at));
      if (this.#failed) return undefined;
    }
    if (at < end) this.#keep(at === 0 ? buf : buf.subarray(at));
    return undefined;
  }

  #keep(piece: Buffer): undefined {
    this.#pieces.push(piece);
    this.#pendingBytes += piece.length;
    return undefined;
  }

  #drop(): void {
    this.#pieces = [];
    this.#pendingBytes = 0;
    this.#pendingFrame = 0;
  }

  /** Stops delivering frames (the connection is closing). */
  stop(): void {
    this.#failed = true;
    this.#drop();
  }
}

/** Writes a 9-byte frame header at `offset` of `out`. */
export function writeFrameHeader(
  out: Buffer,
  offset: number,
  length: number,
  type: number,
  flags: number,
  streamId: number,
): void {
  out[offset] = (length >>> 16) & 0xff;
  out[offset + 1] = (length >>> 8) & 0xff;
  out[offset + 2] = length & 0xff;
  out[offset + 3] = type;
  out[offset + 4] = flags;
  out.writeUInt32BE(streamId & 0x7fffffff, offset + 5);
}

export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  writeFrameHeader(out, 0, length, type, flags, streamId);
  return out;
}

export type Settings = ReadonlyArray<readonly [id: number, value: number]>;

export function settingsFrame(settings: Settings): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + settings.length * 6);
  writeFrameHeader(out, 0, settings.length * 6, FrameType.SETTINGS, 0, 0);
  let at = FRAME_HEADER_SIZE;
  for (const [id, value] of settings) {
    out.writeUInt16BE(id, at);
    out.writeUInt32BE(value >>> 0, at + 2);
    at += 6;
  }
  return out;
}

export const SETTINGS_ACK: Buffer = frameHeader(0, FrameType.SETTINGS, Flag.ACK, 0);

export function pingFrame(ack: boolean, opaque: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + 8);
  writeFrameHeader(out, 0, 8, FrameType.PING, ack ? Flag.ACK : 0, 0);
  opaque.copy(out, FRAME_HEADER_SIZE, 0, 8);
  return out;
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + 4);
  writeFrameHeader(out, 0, 4, FrameType.RST_STREAM, 0, streamId);
  out.writeUInt32BE(code >>> 0, FRAME_HEADER_SIZE);
  return out;
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + 4);
  writeFrameHeader(out, 0, 4, FrameType.WINDOW_UPDATE, 0, streamId);
  out.writeUInt32BE(increment & 0x7fffffff, FRAME_HEADER_SIZE);
  return out;
}

export function goawayFrame(lastStreamId: number, code: number, debug = ""): Buffer {
  const debugBytes = Buffer.from(debug, "utf8");
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + 8 + debugBytes.length);
  writeFrameHeader(out, 0, 8 + debugBytes.length, FrameType.GOAWAY, 0, 0);
  out.writeUInt32BE(lastStreamId & 0x7fffffff, FRAME_HEADER_SIZE);
  out.writeUInt32BE(code >>> 0, FRAME_HEADER_SIZE + 4);
  debugBytes.copy(out, FRAME_HEADER_SIZE + 8);
  return out;
}

/**
 * A header block as HEADERS + CONTINUATION frames no larger than `maxFrameSize`, in one buffer
 * (the block is copied once, behind the frame headers).
 */
export function headersFrames(
  streamId: number,
  block: Buffer,
  endStream: boolean,
  maxFrameSize: number,
): Buffer {
  const frames = Math.max(1, Math.ceil(block.length / maxFrameSize));
  const out = Buffer.allocUnsafe(block.length + frames * FRAME_HEADER_SIZE);
  let at = 0;
  let from = 0;
  for (let i = 0; i < frames; i++) {
    const n = Math.min(maxFrameSize, block.length - from);
    const last = i === frames - 1;
    const type = i === 0 ? FrameType.HEADERS : FrameType.CONTINUATION;
    const flags = (last ? Flag.END_HEADERS : 0) | (i === 0 && endStream ? Flag.END_STREAM : 0);
    writeFrameHeader(out, at, n, type, flags, streamId);
    at += FRAME_HEADER_SIZE;
    block.copy(out, at, from, from + n);
    at += n;
    from += n;
  }
  return out;
}

/** A parsed GOAWAY payload, or undefined when it is shorter than 8 bytes (FRAME_SIZE_ERROR). */
export function parseGoaway(
  payload: Buffer,
): { lastStreamId: number; code: number; debug: Buffer } | undefined {
  if (payload.length < 8) return undefined;
  return {
    lastStreamId: payload.readUInt32BE(0) & 0x7fffffff,
    code: payload.readUInt32BE(4),
    debug: payload.subarray(8),
  };
}

/**
 * The content of a DATA or HEADERS payload without its padding (RFC 9113 §6.1, §6.2) and, for
 * HEADERS, without the priority fields. Undefined when the padding is as long as the payload or
 * longer (a PROTOCOL_ERROR), or the payload is too short for the fields its flags announce.
 */
export function unpad(payload: Buffer, flags: number, type: number): Buffer | undefined {
  let start = 0;
  let end = payload.length;
  if (flags & Flag.PADDED) {
    if (end < 1) return undefined;
    const pad = payload[0]!;
    start = 1;
    end -= pad;
  }
  if (type === FrameType.HEADERS && flags & Flag.PRIORITY) start += 5;
  if (end < start) return undefined;
  return start === 0 && end === payload.length ? payload : payload.subarray(start, end);
}
