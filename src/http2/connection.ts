import {
  CONNECTION_PREFACE,
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW_SIZE,
  ErrorCode,
  errorCodeName,
  Flag,
  FRAME_HEADER_SIZE,
  FrameReader,
  FrameType,
  goawayFrame,
  MAX_MAX_FRAME_SIZE,
  MAX_STREAM_ID,
  MAX_WINDOW_SIZE,
  parseGoaway,
  pingFrame,
  rstStreamFrame,
  SETTINGS_ACK,
  SettingId,
  settingsFrame,
  unpad,
  windowUpdateFrame,
  writeFrameHeader,
} from "./frame.ts";
import { HpackDecoder, HpackEncoder } from "./hpack.ts";
import { giveSlab, OutBuffer, SLAB_SIZE, takeSlab } from "./out-buffer.ts";

/**
 * One HTTP/2 connection (RFC 9113) as a pure state machine: bytes and calls in, frames and callbacks
 * out. No sockets and no timers: the platform feeds `receive(bytes, now)`, writes what `takeOutput()`
 * returns (once per turn of the event loop, so frames of many streams share one write), and owns
 * every timer (settings/ping timeouts, idle and age limits). Time comes in as `now` (ms) where a rule
 * needs it.
 *
 * Streams (§5.1), as flags on `H2Stream` rather than a state name, because the two directions close
 * independently:
 *
 *   idle ──HEADERS──▶ open ──END_STREAM received──▶ half-closed(remote) ─┐
 *                      └──END_STREAM sent──▶ half-closed(local) ─────────┴─▶ closed
 *   any ──RST_STREAM either way, or the connection gone──▶ closed
 *
 * `remoteEnded`/`localEnded` say which half is closed; `closed` that the stream is gone from the
 * connection (its id is then only remembered as "≤ highest id seen", so late frames for it are
 * ignored as §5.1 allows after a reset). A server that sends END_STREAM while the client is still
 * sending resets the rest with RST_STREAM NO_ERROR (§8.1), as nghttp2 does.
 *
 * Connection: `open` → `draining` (GOAWAY sent or received: no new streams; the graceful close sends
 * GOAWAY(2^31−1), a PING, and GOAWAY(last id) once the PING comes back, as grpc-go and Envoy do) →
 * `closed` (a fatal GOAWAY was sent: the platform closes the socket after writing the output).
 *
 * Flow control: the receive window of each stream is given back only as the owner `consume()`s the
 * bytes (so a stalled far side stalls only its own stream); the connection's receive window is given
 * back as bytes arrive, unless the bytes held unconsumed on the connection pass
 * `maxConnectionBufferBytes` (then it too waits for consumption). Sends beyond the peer's windows are
 * queued per stream and go out as WINDOW_UPDATEs arrive; `H2Stream.pendingBytes` tells the owner how
 * much is queued, and `onWritable` says when the queue is empty again.
 *
 * Defences owned here (each a table test in connection.test.ts): frame-size, padding and state
 * violations get the error the RFC names; header blocks are bounded in bytes and CONTINUATION frames;
 * decoded header lists past `maxHeaderListSize` are refused per stream with the HPACK state kept in
 * sync (HPACK bomb); streams past MAX_CONCURRENT_STREAMS are refused; streams the client opens and
 * resets before the response began ("premature resets", CVE-2023-44487), and streams refused, are
 * counted and a connection with too many gets GOAWAY ENHANCE_YOUR_CALM; control answers (SETTINGS/PING
 * ACKs, RST_STREAM) queued and not yet written to the socket beyond `maxQueuedControlFrames` (the peer
 * provokes answers faster than it reads them: nghttp2's outbound-queue flood rule) close the
 * connection the same way; streams whose queued DATA has not moved for a timeout (the peer opens no
 * window) are reset CANCEL by the platform's periodic `resetStalledStreams` sweep; a request or
 * response whose DATA does not add up to its content-length is reset PROTOCOL_ERROR before the bytes
 * past it reach the owner.
 */

export type Role = "client" | "server";

export interface ConnectionSettings {
  /** Peer-initiated streams open at once (SETTINGS_MAX_CONCURRENT_STREAMS we send). */
  readonly maxConcurrentStreams: number;
  /** Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE we send). */
  readonly initialWindowSize: number;
  /** Our receive window for the whole connection (raised by a WINDOW_UPDATE at start). */
  readonly connectionWindowSize: number;
  /** Unconsumed received bytes on the connection past which its window is no longer given back at once. */
  readonly maxConnectionBufferBytes: number;
  /** Largest frame we accept (SETTINGS_MAX_FRAME_SIZE we send). */
  readonly maxFrameSize: number;
  /** Largest decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE we send); larger: the stream is refused. */
  readonly maxHeaderListSize: number;
  /** Our HPACK decoder's table size (SETTINGS_HEADER_TABLE_SIZE we send). */
  readonly headerTableSize: number;
  /** Encoded header block bytes accepted across HEADERS + CONTINUATION before the connection is closed. */
  readonly maxHeaderBlockBytes: number;
  /** CONTINUATION frames accepted in one header block. */
  readonly maxContinuationFrames: number;
  /**
   * Premature resets (the client resets a stream before its response began) tolerated: once a
   * connection has opened `minStreamsForResetCheck` streams, more than `maxPrematureResetRatio` of
   * them reset prematurely → GOAWAY ENHANCE_YOUR_CALM (Envoy's premature-reset rule).
   */
  readonly minStreamsForResetCheck: number;
  readonly maxPrematureResetRatio: number;
  /**
   * Control frames we answer (SETTINGS/PING ACKs, RST_STREAM) queued and not yet written to the socket
   * (taken, but not reported by `controlFramesWritten`) past which the connection gets GOAWAY
   * ENHANCE_YOUR_CALM: nghttp2's `max_outbound_ack` / Envoy's `max_outbound_control_frames`, both 1000.
   */
  readonly maxQueuedControlFrames: number;
}

export const defaultConnectionSettings: ConnectionSettings = {
  maxConcurrentStreams: 1000,
  initialWindowSize: 1024 * 1024,
  connectionWindowSize: 16 * 1024 * 1024,
  maxConnectionBufferBytes: 64 * 1024 * 1024,
  maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
  maxHeaderListSize: 64 * 1024,
  headerTableSize: 4096,
  maxHeaderBlockBytes: 256 * 1024,
  maxContinuationFrames: 64,
  minStreamsForResetCheck: 100,
  maxPrematureResetRatio: 0.5,
  maxQueuedControlFrames: 1000,
};

/** Per-stream events, delivered to the stream's owner (the proxy's call). */
export interface StreamOwner {
  /**
   * A header block on the stream: response headers or trailers (client role), trailers (server
   * role; the request headers come through `ConnectionHandler.onStream`).
   */
  onHeaders(s: H2Stream, headers: string[], endStream: boolean): void;
  /** DATA payload (a view of the bytes read; padding removed). Give the window back with `consume`. */
  onData(s: H2Stream, data: Buffer, endStream: boolean): void;
  /**
   * The stream is gone without a clean end: `code` is the peer's RST_STREAM code, or the error we
   * reset it with (`byPeer` false), or REFUSED_STREAM for a stream above a GOAWAY's last id, or
   * the connection's error when the connection closed.
   */
  onReset(s: H2Stream, code: number, byPeer: boolean): void;
  /** Every byte queued on the stream has been framed (its send queue is empty again). */
  onWritable(s: H2Stream): void;
}

export interface ConnectionHandler {
  /** Frames are waiting in `takeOutput()`; called once until they are taken. */
  onOutput(): void;
  /** Server role: a new request stream. Set `s.owner` before returning, or reset the stream. */
  onStream?(s: H2Stream, headers: string[], endStream: boolean): void;
  /** Server role: a request whose header list decoded past `maxHeaderListSize` (`size` bytes). */
  onStreamHeadersTooLarge?(s: H2Stream, size: number): void;
  /** The peer's first SETTINGS arrived (client role: the connection is usable), or later ones. */
  onRemoteSettings?(first: boolean): void;
  /** The peer sent a PING (not an ACK). Its ACK is already queued. */
  onPing?(now: number): void;
  onPingAck?(opaque: Buffer): void;
  onGoaway?(lastStreamId: number, code: number, debug: string): void;
  /** After our final GOAWAY, no stream is left: the connection can be closed. */
  onDrained?(): void;
  /** A stream was removed from the connection (ended both ways or reset). */
  onStreamClosed?(s: H2Stream): void;
  /**
   * We sent a fatal GOAWAY (`sentByUs`) or the peer's GOAWAY carried an error: the connection is
   * over; close the socket once the output is written.
   */
  onConnectionError?(code: number, message: string, sentByUs: boolean): void;
}

export class H2Stream {
  readonly id: number;
  /** The connection it belongs to (every operation on the stream is a method of it). */
  readonly conn: Http2Connection;
  owner: StreamOwner | undefined;
  /** Both halves done or reset: the stream is no longer in the connection. */
  closed = false;
  remoteEnded = false;
  /** END_STREAM sent (or queued behind pending data). */
  localEnded = false;
  /** HEADERS sent (response headers for the server role). */
  headersSent = false;
  /** Header blocks received on it (1: headers, 2: headers and trailers). */
  headerBlocks = 0;
  /** Bytes the peer may still send us on this stream. */
  recvWindow: number;
  /** Received and consumed bytes not yet given back by a WINDOW_UPDATE. */
  recvToAck = 0;
  /** Received bytes the owner has not consumed yet. */
  unconsumed = 0;
  /** Bytes we may still send (may go negative after a SETTINGS change, §6.9.2). */
  sendWindow: number;
  /**
   * DATA queued behind the send windows: copies of our own (the caller's buffer is never kept), in
   * pooled slabs (`pendingSlabs[i]`: the slab `pending[i]` lies in, given back when no queued piece
   * uses it) or, for small pieces, plain buffers (`null`).
   */
  pending: Buffer[] = [];
  pendingSlabs: (Buffer | null)[] = [];
  /** The slab queued copies are being packed into, and its bytes used. */
  fillSlab: Buffer | undefined;
  fillUsed = 0;
  pendingBytes = 0;
  /** END_STREAM (with `pendingTrailers`, or an empty DATA) waits behind `pending`. */
  pendingEnd = false;
  pendingTrailers: string[] | undefined;
  /** The queue waited for a window since it was last empty (`onWritable` is due when it empties). */
  stalled = false;
  /** DATA bytes ever queued with `sendData` (less `pendingBytes`: the bytes framed so far). */
  dataQueued = 0;
  /** Send-stall sweep (`resetStalledStreams`): when it first saw the queue not moving (-1: not stalled)… */
  stallSince = -1;
  /** …and the bytes framed at that time. */
  stallSent = 0;
  /** The content-length the peer declared (-1: none), and the DATA bytes received against it. */
  contentLength = -1;
  dataReceived = 0;
  /** Opaque slot for the owner (e.g. its index); the connection never reads it. */
  tag: unknown;

  constructor(conn: Http2Connection, id: number, recvWindow: number, sendWindow: number) {
    this.conn = conn;
    this.id = id;
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
  }
}

type ConnState = "open" | "draining" | "closed";

interface HeaderBlockInProgress {
  streamId: number;
  endStream: boolean;
  fragments: Buffer[];
  bytes: number;
  frames: number;
}

const GRACEFUL_PING = Buffer.from("rosterGA", "latin1");
const EMPTY = Buffer.alloc(0);
/** Marks a queued piece that is still the caller's buffer (only while `sendData` runs). */
const LENT: Buffer = Buffer.alloc(0);
/** Queued pieces up to this size are kept as plain copies rather than in a slab. */
const SMALL_COPY = 4096;

/** Headers a request must not carry (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

export class Http2Connection {
  readonly role: Role;
  readonly settings: ConnectionSettings;
  readonly #h: ConnectionHandler;
  readonly #reader: FrameReader;
  readonly #decoder: HpackDecoder;
  readonly #encoder: HpackEncoder;
  readonly #streams = new Map<number, H2Stream>();
  #state: ConnState = "open";
  readonly #out = new OutBuffer();
  #outSignalled = false;
  /** Control answers queued and not yet reported written (`#queueControl`, `controlFramesWritten`). */
  #queuedControl = 0;
  /** Of those, the ones still in `#out`, and the ones in the output last taken. */
  #controlInOut = 0;
  #controlTaken = 0;
  /** Client role: waiting for the server's preface? Server role: waiting for the client's preface bytes. */
  #prefaceLeft: number;
  #remoteSettingsSeen = false;

  // Peer's settings (what we may send).
  peerMaxConcurrentStreams = Number.POSITIVE_INFINITY;
  peerInitialWindowSize = DEFAULT_WINDOW_SIZE;
  peerMaxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  peerMaxHeaderListSize = Number.POSITIVE_INFINITY;

  #connSendWindow = DEFAULT_WINDOW_SIZE;
  #connRecvWindow = DEFAULT_WINDOW_SIZE;
  #connRecvToAck = 0;
  #connUnconsumed = 0;
  /** Streams with queued DATA and stream window left, waiting for the connection window. */
  readonly #blocked = new Set<H2Stream>();
  /** The platform's write buffer is full (the peer does not read): DATA stays in the stream queues. */
  #sendHeld = false;

  #nextStreamId: number;
  /** Highest stream id the peer opened (server role) — also GOAWAY's last-stream-id. */
  #lastPeerStreamId = 0;
  /** Streams we opened that are still open (client role), and peer-opened ones (server role). */
  #localActive = 0;
  #peerActive = 0;
  #header: HeaderBlockInProgress | undefined;
  /** A GOAWAY we received: streams we opened above it never reached the application. */
  goawayReceived: { lastStreamId: number; code: number } | undefined;
  #gracefulPingSent = false;
  #streamsOpened = 0;
  #prematureResets = 0;

  constructor(role: Role, handler: ConnectionHandler, settings: Partial<ConnectionSettings> = {}) {
    this.role = role;
    this.settings = { ...defaultConnectionSettings, ...settings };
    this.#h = handler;
    this.#reader = new FrameReader(this.settings.maxFrameSize);
    this.#decoder = new HpackDecoder({
      maxTableSize: this.settings.headerTableSize,
      maxHeaderListSize: this.settings.maxHeaderListSize,
    });
    this.#encoder = new HpackEncoder();
    this.#nextStreamId = role === "client" ? 1 : 2;
    this.#prefaceLeft = role === "server" ? CONNECTION_PREFACE.length : 0;
  }

  /** Queues our preface (client) and SETTINGS, and raises the connection window. Call once. */
  start(): void {
    const s = this.settings;
    if (this.role === "client") this.#push(CONNECTION_PREFACE);
    const list: [number, number][] = [
      [SettingId.MAX_CONCURRENT_STREAMS, s.maxConcurrentStreams],
      [SettingId.INITIAL_WINDOW_SIZE, s.initialWindowSize],
      [SettingId.MAX_FRAME_SIZE, s.maxFrameSize],
      [SettingId.MAX_HEADER_LIST_SIZE, s.maxHeaderListSize],
    ];
    if (this.role === "client") list.unshift([SettingId.ENABLE_PUSH, 0]);
    if (s.headerTableSize !== 4096) list.unshift([SettingId.HEADER_TABLE_SIZE, s.headerTableSize]);
    this.#push(settingsFrame(list));
    if (s.connectionWindowSize > DEFAULT_WINDOW_SIZE) {
      this.#push(windowUpdateFrame(0, s.connectionWindowSize - DEFAULT_WINDOW_SIZE));
      this.#connRecvWindow = s.connectionWindowSize;
    }
  }

  get state(): ConnState {
    return this.#state;
  }

  /** The peer's SETTINGS have arrived (client role: a server is really there). */
  get remoteSettingsSeen(): boolean {
    return this.#remoteSettingsSeen;
  }

  /** Streams open on the connection, both directions. */
  get activeStreams(): number {
    return this.#streams.size;
  }

  get lastPeerStreamId(): number {
    return this.#lastPeerStreamId;
  }

  /** Client role: may a new stream be opened now (open, not past the peer's stream limit or ids)? */
  canOpenStream(): boolean {
    return (
      this.#state === "open" &&
      this.goawayReceived === undefined &&
      this.#localActive < this.peerMaxConcurrentStreams &&
      this.#nextStreamId <= MAX_STREAM_ID
    );
  }

  /** Local streams open (client role). */
  get localActive(): number {
    return this.#localActive;
  }

  stream(id: number): H2Stream | undefined {
    return this.#streams.get(id);
  }

  streams(): IterableIterator<H2Stream> {
    return this.#streams.values();
  }

  /**
   * Frames waiting to be written, in order; the caller writes them and they are forgotten here (it
   * reports the control frames among them, `takenControlFrames`, once written).
   */
  takeOutput(): Buffer[] | undefined {
    this.#outSignalled = false;
    this.#controlTaken = this.#controlInOut;
    this.#controlInOut = 0;
    const out = this.#out.take();
    // An idle connection keeps no slab (a thousand quiet clients hold no output memory).
    if (this.#streams.size === 0) this.#out.release();
    return out;
  }

  /** The number of the output last taken, for `outputWritten`. */
  get outputSeq(): number {
    return this.#out.seq;
  }

  /**
   * The platform has written every output taken up to number `seq` (its write callback ran): the
   * slabs holding them are reused. Never call it earlier — the socket still reads them.
   */
  outputWritten(seq: number): void {
    this.#out.written(seq);
  }

  /**
   * Control answers (SETTINGS/PING ACKs, RST_STREAMs) in the output last taken. They count against
   * `maxQueuedControlFrames` until the platform reports them written with `controlFramesWritten`, as
   * nghttp2 counts them until they leave its outbound queue: a peer that sends PINGs or SETTINGS faster
   * than it reads our answers fills the socket's buffer, the reports stop, and the count grows.
   */
  get takenControlFrames(): number {
    return this.#controlTaken;
  }

  /** `n` control frames taken with `takeOutput` are written (the socket took them). */
  controlFramesWritten(n: number): void {
    this.#queuedControl = Math.max(this.#queuedControl - n, 0);
  }

  // --- receiving ------------------------------------------------------------------------------

  /** Bytes read from the peer. `now` is the platform clock (ms). */
  receive(chunk: Buffer, now: number): void {
    if (this.#state === "closed") return;
    let data = chunk;
    if (this.#prefaceLeft > 0) {
      const offset = CONNECTION_PREFACE.length - this.#prefaceLeft;
      const n = Math.min(this.#prefaceLeft, data.length);
      if (!data.subarray(0, n).equals(CONNECTION_PREFACE.subarray(offset, offset + n))) {
        this.#fatal(ErrorCode.PROTOCOL_ERROR, "the connection did not start with the HTTP/2 preface");
        return;
      }
      this.#prefaceLeft -= n;
      if (n === data.length) return;
      data = data.subarray(n);
    }
    this.#now = now;
    const tooLong = this.#reader.push(data, this.#onFrame);
    if (tooLong !== undefined)
      this.#fatal(
        ErrorCode.FRAME_SIZE_ERROR,
        `a frame of ${tooLong} bytes is above SETTINGS_MAX_FRAME_SIZE ${this.settings.maxFrameSize}`,
      );
  }

  #now = 0;

  readonly #onFrame = (type: number, flags: number, streamId: number, payload: Buffer): void => {
    if (this.#state === "closed") return;
    if (!this.#remoteSettingsSeen && type !== FrameType.SETTINGS) {
      // §3.4: the preface's SETTINGS must come first.
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "the first frame was not SETTINGS");
      return;
    }
    if (
      this.#header !== undefined &&
      (type !== FrameType.CONTINUATION || streamId !== this.#header.streamId)
    ) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted by another frame (§6.10)");
      return;
    }
    switch (type) {
      case FrameType.DATA:
        this.#onData(flags, streamId, payload);
        return;
      case FrameType.HEADERS:
        this.#onHeadersFrame(flags, streamId, payload);
        return;
      case FrameType.CONTINUATION:
        this.#onContinuation(flags, streamId, payload);
        return;
      case FrameType.PRIORITY:
        this.#onPriority(streamId, payload);
        return;
      case FrameType.RST_STREAM:
        this.#onRstStream(streamId, payload);
        return;
      case FrameType.SETTINGS:
        this.#onSettings(flags, streamId, payload);
        return;
      case FrameType.PUSH_PROMISE:
        // We never enable push, and clients cannot push (§8.4).
        this.#fatal(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE received (push is disabled)");
        return;
      case FrameType.PING:
        this.#onPing(flags, streamId, payload);
        return;
      case FrameType.GOAWAY:
        this.#onGoaway(streamId, payload);
        return;
      case FrameType.WINDOW_UPDATE:
        this.#onWindowUpdate(streamId, payload);
        return;
      default:
        return; // unknown frame types are ignored (§4.1, §5.5)
    }
  };

  #isPeerStreamId(id: number): boolean {
    return this.role === "server" ? id % 2 === 1 : id % 2 === 0;
  }

  /** A stream id the peer could have used and that is now closed (not idle). */
  #isClosedId(id: number): boolean {
    return this.#isPeerStreamId(id) ? id <= this.#lastPeerStreamId : id < this.#nextStreamId;
  }

  #onData(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
      return;
    }
    const length = payload.length;
    // Flow control counts the whole frame, padding included (§6.9.1).
    if (length > this.#connRecvWindow) {
      this.#fatal(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection's flow-control window");
      return;
    }
    this.#connRecvWindow -= length;
    const s = this.#streams.get(streamId);
    if (s === undefined) {
      this.#giveBackConnection(length);
      if (!this.#isClosedId(streamId))
        this.#fatal(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${streamId}`);
      // A closed stream (we reset it, or it just ended): frames in flight are ignored (§5.1 "closed").
      return;
    }
    if (s.remoteEnded || s.headerBlocks === 0) {
      // After END_STREAM: STREAM_CLOSED (§5.1); before the response headers: malformed (§8.1).
      this.#giveBackConnection(length);
      this.#resetStream(s, s.remoteEnded ? ErrorCode.STREAM_CLOSED : ErrorCode.PROTOCOL_ERROR, false);
      return;
    }
    if (length > s.recvWindow) {
      this.#giveBackConnection(length);
      this.#resetStream(s, ErrorCode.FLOW_CONTROL_ERROR, false);
      return;
    }
    s.recvWindow -= length;
    const data = unpad(payload, flags, FrameType.DATA);
    if (data === undefined) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "DATA padding is longer than the frame");
      return;
    }
    if (s.contentLength >= 0 && !this.#dataWithinContentLength(s, data.length, flags)) {
      this.#giveBackConnection(length);
      this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      return;
    }
    // Padding is consumed at once; the data when the owner says so.
    const padding = length - data.length;
    this.#connUnconsumed += data.length;
    s.unconsumed += data.length;
    if (this.#connUnconsumed <= this.settings.maxConnectionBufferBytes) this.#giveBackConnection(length);
    else this.#connOwed += length;
    if (padding > 0) this.#giveBackStream(s, padding);
    const end = (flags & Flag.END_STREAM) !== 0;
    if (end) s.remoteEnded = true;
    s.owner?.onData(s, data, end);
    if (end) this.#maybeClose(s);
  }

  /** Connection window owed back once buffered bytes fall under the limit. */
  #connOwed = 0;

  #giveBackConnection(n: number): void {
    this.#connRecvToAck += n;
    if (this.#connRecvToAck >= this.settings.connectionWindowSize / 2) {
      this.#connRecvWindow += this.#connRecvToAck;
      this.#pushWindowUpdate(0, this.#connRecvToAck);
      this.#connRecvToAck = 0;
    }
  }

  #giveBackStream(s: H2Stream, n: number): void {
    s.recvToAck += n;
    if (s.remoteEnded || s.closed) return; // nothing more will come: no update needed
    if (s.recvToAck >= this.settings.initialWindowSize / 2) {
      s.recvWindow += s.recvToAck;
      this.#pushWindowUpdate(s.id, s.recvToAck);
      s.recvToAck = 0;
    }
  }

  /**
   * The owner has passed on `n` bytes received on `s`: their window goes back to the peer (batched:
   * a WINDOW_UPDATE once half a window is owed).
   */
  consume(s: H2Stream, n: number): void {
    if (n <= 0) return;
    s.unconsumed -= n;
    this.#connUnconsumed -= n;
    if (this.#connOwed > 0 && this.#connUnconsumed <= this.settings.maxConnectionBufferBytes) {
      const owed = this.#connOwed;
      this.#connOwed = 0;
      this.#giveBackConnection(owed);
    }
    if (!s.closed) this.#giveBackStream(s, n);
  }

  #onHeadersFrame(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
      return;
    }
    const fragment = unpad(payload, flags, FrameType.HEADERS);
    if (fragment === undefined) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "HEADERS padding or priority fields longer than the frame");
      return;
    }
    if (flags & Flag.PRIORITY) {
      const offset = flags & Flag.PADDED ? 1 : 0;
      const dependency = payload.readUInt32BE(offset) & 0x7fffffff;
      if (dependency === streamId) {
        // §5.3.1: a stream cannot depend on itself. Still decode the block to keep HPACK in sync.
        this.#selfDependent = streamId;
      }
    }
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (fragment.length > this.settings.maxHeaderBlockBytes) {
      this.#fatal(ErrorCode.ENHANCE_YOUR_CALM, "header block larger than the limit");
      return;
    }
    if (flags & Flag.END_HEADERS) {
      this.#onHeaderBlock(streamId, fragment, endStream);
      return;
    }
    this.#header = { streamId, endStream, fragments: [fragment], bytes: fragment.length, frames: 0 };
  }

  #selfDependent = 0;

  #onContinuation(flags: number, streamId: number, payload: Buffer): void {
    const h = this.#header;
    if (h === undefined || h.streamId !== streamId) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block in progress");
      return;
    }
    h.frames++;
    h.bytes += payload.length;
    if (h.bytes > this.settings.maxHeaderBlockBytes || h.frames > this.settings.maxContinuationFrames) {
      // CONTINUATION flood: a block that never ends is cut off here, not buffered forever.
      this.#fatal(
        ErrorCode.ENHANCE_YOUR_CALM,
        `header block over ${h.bytes > this.settings.maxHeaderBlockBytes ? `${this.settings.maxHeaderBlockBytes} bytes` : `${this.settings.maxContinuationFrames} CONTINUATION frames`}`,
      );
      return;
    }
    h.fragments.push(payload);
    if (flags & Flag.END_HEADERS) {
      this.#header = undefined;
      this.#onHeaderBlock(streamId, Buffer.concat(h.fragments, h.bytes), h.endStream);
    }
  }

  #onHeaderBlock(streamId: number, block: Buffer, endStream: boolean): void {
    const decoded = this.#decoder.decode(block);
    if (decoded.kind === "compression-error") {
      this.#fatal(ErrorCode.COMPRESSION_ERROR, `HPACK: ${decoded.message}`);
      return;
    }
    const selfDependent = this.#selfDependent === streamId;
    this.#selfDependent = 0;
    let s = this.#streams.get(streamId);
    if (s === undefined) {
      if (this.#isClosedId(streamId)) {
        // Trailers in flight for a stream we reset: decoded (HPACK stays in sync), then ignored. A
        // client's block without END_STREAM cannot be trailers: it opens a stream id already used or
        // skipped (§5.1.1).
        if (this.role === "server" && this.#isPeerStreamId(streamId) && !endStream)
          this.#fatal(ErrorCode.PROTOCOL_ERROR, `HEADERS reusing stream ${streamId} (ids must increase)`);
        return;
      }
      if (!this.#isPeerStreamId(streamId) || this.role === "client") {
        this.#fatal(
          ErrorCode.PROTOCOL_ERROR,
          `HEADERS opening stream ${streamId}, which is not the peer's to open`,
        );
        return;
      }
      // A new request (server role).
      this.#lastPeerStreamId = streamId;
      this.#streamsOpened++;
      s = new H2Stream(this, streamId, this.settings.initialWindowSize, this.peerInitialWindowSize);
      s.headerBlocks = 1;
      if (endStream) s.remoteEnded = true;
      if (this.#state !== "open") {
        // After our GOAWAY: ids above its last-stream-id are ignored; we sent 2^31-1 first, so only
        // the final GOAWAY makes this happen. Refuse so the client retries elsewhere.
        this.#queueControl(rstStreamFrame(streamId, ErrorCode.REFUSED_STREAM));
        return;
      }
      if (this.#peerActive >= this.settings.maxConcurrentStreams) {
        this.#queueControl(rstStreamFrame(streamId, ErrorCode.REFUSED_STREAM));
        // A refused stream ended before its response too: one that keeps opening past the limit is
        // flooding, and meets the premature-reset rule (node:http2 closes after 100 refusals).
        this.#prematureResets++;
        if (this.#tooManyPrematureResets())
          this.#fatal(
            ErrorCode.ENHANCE_YOUR_CALM,
            `too many streams refused past SETTINGS_MAX_CONCURRENT_STREAMS or reset before their response (${this.#prematureResets} of ${this.#streamsOpened})`,
          );
        return;
      }
      this.#streams.set(streamId, s);
      this.#peerActive++;
      if (selfDependent) {
        this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
        return;
      }
      if (decoded.kind === "too-large") {
        if (this.#h.onStreamHeadersTooLarge !== undefined) this.#h.onStreamHeadersTooLarge(s, decoded.size);
        else this.#resetStream(s, ErrorCode.REFUSED_STREAM, false);
        return;
      }
      // A block repeated byte for byte (same table) was checked when it first came.
      const repeat = decoded.repeat;
      if (repeat === undefined || repeat.note !== CHECKED) {
        if (checkRequestHeaders(decoded.headers) !== undefined) {
          this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
          return;
        }
        if (repeat !== undefined) repeat.note = CHECKED;
      }
      if (!this.#acceptContentLength(s, decoded.headers, true, endStream)) {
        this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
        return;
      }
      this.#h.onStream?.(s, decoded.headers, endStream);
      if (s.owner === undefined && !s.closed) this.#resetStream(s, ErrorCode.REFUSED_STREAM, false);
      else if (endStream) this.#maybeClose(s);
      return;
    }
    // Headers on an open stream: response headers / trailers (client), trailers (server).
    if (s.remoteEnded) {
      this.#resetStream(s, ErrorCode.STREAM_CLOSED, false);
      return;
    }
    if (selfDependent) {
      this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      return;
    }
    if (decoded.kind === "too-large") {
      this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      return;
    }
    const isTrailers = this.role === "server" || s.headerBlocks >= 1;
    if (isTrailers && !endStream) {
      // Trailers must end the stream (§8.1); a second non-final block is malformed. 1xx informational
      // responses are the exception for clients: skip them and wait for the real headers.
      if (!(this.role === "client" && isInformational(decoded.headers))) {
        this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      }
      return;
    }
    if (this.role === "client" && s.headerBlocks === 0 && isInformational(decoded.headers)) return;
    if (
      !this.#acceptContentLength(
        s,
        decoded.headers,
        this.role === "client" && s.headerBlocks === 0,
        endStream,
      )
    ) {
      this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      return;
    }
    s.headerBlocks++;
    if (endStream) s.remoteEnded = true;
    s.owner?.onHeaders(s, decoded.headers, endStream);
    if (endStream) this.#maybeClose(s);
  }

  /**
   * RFC 9113 §8.1.1: a request or response whose content-length differs from the sum of its DATA
   * payloads is malformed (a stream error PROTOCOL_ERROR, and an intermediary must not pass it on). At
   * the message's first header block (`first`) the declared length is noted — a value that is not
   * digits, or two different values, is malformed at once; 204 and 304 responses carry no content
   * whatever they declare (HEAD is not tracked: our client role sends gRPC POSTs). A block that ends
   * the stream (HEADERS with END_STREAM, trailers) must come after exactly that many bytes.
   */
  #acceptContentLength(s: H2Stream, headers: readonly string[], first: boolean, endStream: boolean): boolean {
    if (first) {
      const n = declaredContentLength(headers);
      if (Number.isNaN(n)) return false;
      if (n >= 0 && !(this.role === "client" && hasNoContent(headers))) s.contentLength = n;
    }
    return !endStream || s.contentLength < 0 || s.dataReceived === s.contentLength;
  }

  /** Counts `n` DATA bytes against `s.contentLength`: false once past it, or short of it at END_STREAM. */
  #dataWithinContentLength(s: H2Stream, n: number, flags: number): boolean {
    s.dataReceived += n;
    if (s.dataReceived > s.contentLength) return false;
    return (flags & Flag.END_STREAM) === 0 || s.dataReceived === s.contentLength;
  }

  #onPriority(streamId: number, payload: Buffer): void {
    if (streamId === 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
      return;
    }
    const s = this.#streams.get(streamId);
    if (payload.length !== 5) {
      // A stream error (§6.3); a PRIORITY for an idle stream has no stream to reset.
      if (s !== undefined) this.#resetStream(s, ErrorCode.FRAME_SIZE_ERROR, false);
      else this.#queueControl(rstStreamFrame(streamId, ErrorCode.FRAME_SIZE_ERROR));
      return;
    }
    if ((payload.readUInt32BE(0) & 0x7fffffff) === streamId) {
      if (s !== undefined) this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      else this.#queueControl(rstStreamFrame(streamId, ErrorCode.PROTOCOL_ERROR));
    }
    // Otherwise ignored: RFC 9113 deprecates the priority scheme; no state is kept for it.
  }

  #onRstStream(streamId: number, payload: Buffer): void {
    if (streamId === 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
      return;
    }
    if (payload.length !== 4) {
      this.#fatal(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes");
      return;
    }
    const s = this.#streams.get(streamId);
    if (s === undefined) {
      if (!this.#isClosedId(streamId))
        this.#fatal(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${streamId}`);
      return;
    }
    const code = payload.readUInt32BE(0);
    if (this.role === "server" && !s.headersSent) {
      this.#prematureResets++;
      if (this.#tooManyPrematureResets()) {
        this.#close(s, code, true);
        this.#fatal(
          ErrorCode.ENHANCE_YOUR_CALM,
          `too many streams reset before their response (${this.#prematureResets} of ${this.#streamsOpened})`,
        );
        return;
      }
    }
    this.#close(s, code, true);
  }

  #tooManyPrematureResets(): boolean {
    return (
      this.#streamsOpened >= this.settings.minStreamsForResetCheck &&
      this.#prematureResets > this.#streamsOpened * this.settings.maxPrematureResetRatio
    );
  }

  #onSettings(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
      return;
    }
    if (flags & Flag.ACK) {
      if (payload.length !== 0) this.#fatal(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      return;
    }
    if (payload.length % 6 !== 0) {
      this.#fatal(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 bytes");
      return;
    }
    for (let at = 0; at < payload.length; at += 6) {
      const id = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      switch (id) {
        case SettingId.HEADER_TABLE_SIZE:
          this.#encoder.setPeerMaxTableSize(value);
          break;
        case SettingId.ENABLE_PUSH:
          if (value > 1 || (this.role === "client" && value !== 0)) {
            this.#fatal(ErrorCode.PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH ${value}`);
            return;
          }
          break;
        case SettingId.MAX_CONCURRENT_STREAMS:
          this.peerMaxConcurrentStreams = value;
          break;
        case SettingId.INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW_SIZE) {
            this.#fatal(ErrorCode.FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${value}`);
            return;
          }
          const delta = value - this.peerInitialWindowSize;
          this.peerInitialWindowSize = value;
          for (const s of this.#streams.values()) {
            s.sendWindow += delta;
            if (s.sendWindow > MAX_WINDOW_SIZE) {
              this.#fatal(ErrorCode.FLOW_CONTROL_ERROR, "a SETTINGS change overflowed a stream window");
              return;
            }
          }
          if (delta > 0)
            for (const s of [...this.#streams.values()])
              if (s.pendingBytes > 0 || s.pendingEnd) this.#flushStream(s);
          break;
        }
        case SettingId.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
            this.#fatal(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value}`);
            return;
          }
          this.peerMaxFrameSize = value;
          break;
        case SettingId.MAX_HEADER_LIST_SIZE:
          this.peerMaxHeaderListSize = value;
          break;
        default:
          break; // unknown settings are ignored (§6.5.2)
      }
    }
    this.#queueControl(SETTINGS_ACK);
    const first = !this.#remoteSettingsSeen;
    this.#remoteSettingsSeen = true;
    this.#h.onRemoteSettings?.(first);
  }

  #onPing(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
      return;
    }
    if (payload.length !== 8) {
      this.#fatal(ErrorCode.FRAME_SIZE_ERROR, "PING payload is not 8 bytes");
      return;
    }
    if (flags & Flag.ACK) {
      if (this.#gracefulPingSent && payload.equals(GRACEFUL_PING)) {
        // The peer has seen our first GOAWAY: every stream it opened before is now known.
        this.#finalGoaway(ErrorCode.NO_ERROR, "");
        return;
      }
      this.#h.onPingAck?.(payload);
      return;
    }
    this.#queueControl(pingFrame(true, payload));
    this.#h.onPing?.(this.#now);
  }

  #finalGoawaySent = false;

  #onGoaway(streamId: number, payload: Buffer): void {
    if (streamId !== 0) {
      this.#fatal(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
      return;
    }
    const g = parseGoaway(payload);
    if (g === undefined) {
      this.#fatal(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY payload shorter than 8 bytes");
      return;
    }
    const previous = this.goawayReceived;
    // A later GOAWAY may only lower the last stream id (§6.8).
    const last = previous === undefined ? g.lastStreamId : Math.min(previous.lastStreamId, g.lastStreamId);
    this.goawayReceived = { lastStreamId: last, code: g.code };
    if (this.#state === "open") this.#state = "draining";
    const debug = g.debug.toString("utf8", 0, Math.min(g.debug.length, 256));
    this.#h.onGoaway?.(last, g.code, debug);
    // Streams we opened above the last id were never processed: refused, safe to retry (§6.8).
    for (const s of [...this.#streams.values()]) {
      if (!this.#isPeerStreamId(s.id) && s.id > last) this.#close(s, ErrorCode.REFUSED_STREAM, true);
    }
    if (g.code !== ErrorCode.NO_ERROR) {
      this.#h.onConnectionError?.(
        g.code,
        `peer sent GOAWAY ${errorCodeName(g.code)}${debug ? ` (${debug})` : ""}`,
        false,
      );
    }
  }

  #onWindowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) {
      this.#fatal(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes");
      return;
    }
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) {
      if (increment === 0) {
        this.#fatal(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 for the connection");
        return;
      }
      this.#connSendWindow += increment;
      if (this.#connSendWindow > MAX_WINDOW_SIZE) {
        this.#fatal(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1");
        return;
      }
      if (this.#blocked.size > 0) {
        for (const s of [...this.#blocked]) {
          this.#blocked.delete(s);
          this.#flushStream(s);
          if (this.#connSendWindow <= 0) break;
        }
      }
      return;
    }
    const s = this.#streams.get(streamId);
    if (s === undefined) {
      if (!this.#isClosedId(streamId))
        this.#fatal(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${streamId}`);
      return;
    }
    if (increment === 0) {
      this.#resetStream(s, ErrorCode.PROTOCOL_ERROR, false);
      return;
    }
    s.sendWindow += increment;
    if (s.sendWindow > MAX_WINDOW_SIZE) {
      this.#resetStream(s, ErrorCode.FLOW_CONTROL_ERROR, false);
      return;
    }
    if (s.pendingBytes > 0 || s.pendingEnd) this.#flushStream(s);
  }

  // --- sending --------------------------------------------------------------------------------

  /**
   * Client role: opens a stream with `headers` (flat [name, value, …]; pseudo-headers first).
   * Returns undefined when `canOpenStream()` is false.
   */
  openStream(headers: readonly string[], endStream: boolean, owner: StreamOwner): H2Stream | undefined {
    if (!this.canOpenStream()) return undefined;
    const id = this.#nextStreamId;
    this.#nextStreamId += 2;
    const s = new H2Stream(this, id, this.settings.initialWindowSize, this.peerInitialWindowSize);
    s.owner = owner;
    this.#streams.set(id, s);
    this.#localActive++;
    this.#writeHeaders(s, headers, endStream);
    return s;
  }

  /** Sends response headers (server role), or trailers when `endStream` and data may be queued. */
  sendHeaders(s: H2Stream, headers: readonly string[], endStream: boolean): void {
    if (s.closed || s.localEnded) return;
    if (endStream && s.headersSent && (s.pendingBytes > 0 || s.pendingEnd)) {
      // Trailers wait behind queued DATA; they are encoded when they go out, so HPACK state follows
      // the order of frames on the wire.
      s.pendingTrailers = headers as string[];
      s.pendingEnd = true;
      s.localEnded = true;
      return;
    }
    this.#writeHeaders(s, headers, endStream);
  }

  #writeHeaders(s: H2Stream, headers: readonly string[], endStream: boolean): void {
    this.#pushHeaders(s.id, headers, endStream);
    s.headersSent = true;
    if (endStream) {
      s.localEnded = true;
      this.#afterLocalEnd(s);
    }
  }

  /**
   * Queues DATA on `s` (sent as the windows allow); `endStream` ends our half of the stream. What the
   * windows let out now is copied into the output; the rest is copied into the stream's queue. Either
   * way `data` is not kept: the caller may reuse it once this returns.
   */
  sendData(s: H2Stream, data: Buffer, endStream: boolean): void {
    if (s.closed || s.localEnded) return;
    if (endStream) {
      s.localEnded = true;
      s.pendingEnd = true;
    }
    const n = data.length;
    if (n > 0) {
      // Lent to the queue for the flush below (it is the last piece; flushing takes from the front).
      s.pending.push(data);
      s.pendingSlabs.push(LENT);
      s.pendingBytes += n;
      s.dataQueued += n;
    }
    this.#flushStream(s);
    if (n > 0 && !s.closed && s.pendingBytes > 0) this.#keepLent(s);
  }

  /** Replaces the lent piece left at the end of `s`'s queue with a copy of our own. */
  #keepLent(s: H2Stream): void {
    const last = s.pending.length - 1;
    if (last < 0 || s.pendingSlabs[last] !== LENT) return;
    const rest = s.pending[last]!;
    s.pending.length = last;
    s.pendingSlabs.length = last;
    if (rest.length <= SMALL_COPY) {
      // Small: a plain copy (node's own pool) beats a slab.
      s.pending.push(Buffer.from(rest));
      s.pendingSlabs.push(null);
      return;
    }
    let from = 0;
    while (from < rest.length) {
      let slab = s.fillSlab;
      if (slab === undefined || s.fillUsed === SLAB_SIZE) {
        slab = takeSlab();
        s.fillSlab = slab;
        s.fillUsed = 0;
      }
      const k = Math.min(SLAB_SIZE - s.fillUsed, rest.length - from);
      const at = s.fillUsed;
      slab.set(rest.subarray(from, from + k), at);
      s.fillUsed += k;
      from += k;
      s.pending.push(slab.subarray(at, at + k));
      s.pendingSlabs.push(slab);
    }
  }

  /** `s`'s first queued piece has gone out whole: drop it, and give its slab back if nothing else uses it. */
  #shiftPending(s: H2Stream): void {
    s.pending.shift();
    const slab = s.pendingSlabs.shift();
    if (slab === undefined || slab === null || slab === LENT) return;
    // Other queued pieces may lie in it (small copies can sit between two pieces of one slab).
    if (s.pendingSlabs.includes(slab)) return;
    if (slab === s.fillSlab) {
      // Nothing queued lies in it any more: pack from its beginning again, or, with the queue empty,
      // give it back (a long stream that once waited for a window keeps no slab while it flows).
      if (s.pending.length > 0) {
        s.fillUsed = 0;
        return;
      }
      s.fillSlab = undefined;
      s.fillUsed = 0;
    }
    giveSlab(slab);
  }

  /** The queue of `s` is empty or dropped: its slabs go back to the pool. */
  #releasePending(s: H2Stream): void {
    const slabs = s.pendingSlabs;
    for (let i = 0; i < slabs.length; i++) {
      const slab = slabs[i]!;
      // Each slab once (its pieces need not be adjacent); the fill slab below.
      if (slab !== null && slab !== LENT && slab !== s.fillSlab && slabs.indexOf(slab) === i) giveSlab(slab);
    }
    s.pending = [];
    s.pendingSlabs = [];
    if (s.fillSlab !== undefined) giveSlab(s.fillSlab);
    s.fillSlab = undefined;
    s.fillUsed = 0;
    s.pendingBytes = 0;
  }

  /**
   * The send-stall sweep, called by the platform from a periodic timer (nginx's `send_timeout`: no
   * progress writing for that long): every stream whose queued DATA has had no byte framed for
   * `timeoutMs` — the peer keeps its stream or connection window at 0, or does not read its socket
   * (`holdSend`) — is reset with RST_STREAM CANCEL and its owner told (`onReset`), so it frees what it
   * holds for it (the proxy cancels the backend stream). A slow reader that takes some bytes between
   * two sweeps is not stalled. Clock-free: the first sweep that sees a queue not moving notes `now`,
   * later ones judge it, so a stream is reset between `timeoutMs` and `timeoutMs` plus one sweep
   * period after its last byte went out. Returns how many streams were reset.
   */
  resetStalledStreams(now: number, timeoutMs: number): number {
    let reset = 0;
    // Deleting the entry being visited (the reset) is safe while iterating a Map.
    for (const s of this.#streams.values()) {
      if (s.pendingBytes === 0) {
        s.stallSince = -1;
        continue;
      }
      const sent = s.dataQueued - s.pendingBytes;
      if (s.stallSince < 0 || sent !== s.stallSent) {
        s.stallSince = now;
        s.stallSent = sent;
      } else if (now - s.stallSince >= timeoutMs) {
        this.resetStream(s, ErrorCode.CANCEL, false);
        reset++;
      }
    }
    return reset;
  }

  /**
   * The platform says whether its write buffer is full (`held`: the peer is not reading what it was
   * sent). While held, DATA is not framed whatever the windows allow: it stays queued per stream, so
   * `pendingBytes` rises and the owner stops reading the other side (a client that grants huge windows
   * and then stops reading cannot make us buffer without bound). Released: the queues go out again.
   */
  holdSend(held: boolean): void {
    if (this.#sendHeld === held) return;
    this.#sendHeld = held;
    if (held) return;
    for (const s of [...this.#streams.values()]) if (s.pendingBytes > 0 || s.pendingEnd) this.#flushStream(s);
  }

  /** Sends what the windows allow of `s`'s queue. */
  #flushStream(s: H2Stream): void {
    if (s.closed) return;
    const maxFrame = this.peerMaxFrameSize;
    while (s.pendingBytes > 0) {
      const allowed = this.#sendHeld ? 0 : Math.min(s.sendWindow, this.#connSendWindow, maxFrame);
      if (allowed <= 0) {
        if (s.sendWindow > 0) this.#blocked.add(s); // waiting for the connection window, not its own
        s.stalled = true;
        return;
      }
      const head = s.pending[0]!;
      const n = Math.min(head.length, allowed);
      s.pendingBytes -= n;
      s.sendWindow -= n;
      this.#connSendWindow -= n;
      const last = s.pendingBytes === 0 && s.pendingEnd && s.pendingTrailers === undefined;
      // Copied into the output here, so the piece (and its slab) may go right after.
      this.#pushData(s.id, n === head.length ? head : head.subarray(0, n), last);
      if (n === head.length) this.#shiftPending(s);
      else s.pending[0] = head.subarray(n);
      if (last) {
        s.pendingEnd = false;
        this.#afterLocalEnd(s);
        return;
      }
    }
    if (s.pendingEnd) {
      s.pendingEnd = false;
      const trailers = s.pendingTrailers;
      if (trailers !== undefined) {
        s.pendingTrailers = undefined;
        this.#pushHeaders(s.id, trailers, true);
      } else {
        this.#pushData(s.id, EMPTY, true);
      }
      this.#afterLocalEnd(s);
      return;
    }
    if (s.stalled) {
      s.stalled = false;
      s.owner?.onWritable(s);
    }
  }

  #pushData(streamId: number, piece: Buffer, endStream: boolean): void {
    // The payload is copied behind its frame header into the output slabs (running on into the next
    // slab if this one fills up): the caller's buffer is free once this returns.
    const out = this.#out;
    // reserve() may start a new slab: read `out.slab` after it.
    const at = out.reserve(FRAME_HEADER_SIZE);
    writeFrameHeader(out.slab, at, piece.length, FrameType.DATA, endStream ? Flag.END_STREAM : 0, streamId);
    if (piece.length > 0) out.copy(piece);
    this.#signal();
  }

  /** A header block encoded straight from the encoder's scratch into HEADERS (+ CONTINUATION) frames. */
  #pushHeaders(streamId: number, headers: readonly string[], endStream: boolean): void {
    const encoder = this.#encoder;
    const length = encoder.encodeToScratch(headers);
    const block = encoder.scratch;
    const maxFrame = this.peerMaxFrameSize;
    const out = this.#out;
    let from = 0;
    let first = true;
    do {
      const n = Math.min(maxFrame, length - from);
      const last = from + n === length;
      const type = first ? FrameType.HEADERS : FrameType.CONTINUATION;
      const flags = (last ? Flag.END_HEADERS : 0) | (first && endStream ? Flag.END_STREAM : 0);
      const at = out.reserve(FRAME_HEADER_SIZE + n);
      writeFrameHeader(out.slab, at, n, type, flags, streamId);
      out.slab.set(block.subarray(from, from + n), at + FRAME_HEADER_SIZE);
      from += n;
      first = false;
    } while (from < length);
    this.#signal();
  }

  #pushWindowUpdate(streamId: number, increment: number): void {
    const out = this.#out;
    const at = out.reserve(FRAME_HEADER_SIZE + 4);
    writeFrameHeader(out.slab, at, 4, FrameType.WINDOW_UPDATE, 0, streamId);
    out.slab.writeUInt32BE(increment & 0x7fffffff, at + FRAME_HEADER_SIZE);
    this.#signal();
  }

  #afterLocalEnd(s: H2Stream): void {
    if (this.role === "server" && !s.remoteEnded) {
      // The response is complete while the client is still sending: tell it to stop (§8.1).
      this.#queueControl(rstStreamFrame(s.id, ErrorCode.NO_ERROR));
      this.#close(s, ErrorCode.NO_ERROR, false, true);
      return;
    }
    this.#maybeClose(s);
  }

  /** Resets `s` with `code` (RST_STREAM); the owner is told through `onReset` unless `quiet`. */
  resetStream(s: H2Stream, code: number, quiet = true): void {
    if (s.closed) return;
    this.#push(rstStreamFrame(s.id, code));
    this.#close(s, code, false, quiet);
  }

  #resetStream(s: H2Stream, code: number, quiet: boolean): void {
    if (s.closed) return;
    this.#queueControl(rstStreamFrame(s.id, code));
    this.#close(s, code, false, quiet);
  }

  /** Sends a PING with 8 bytes of `opaque`. */
  ping(opaque: Buffer): void {
    if (this.#state === "closed") return;
    this.#push(pingFrame(false, opaque));
  }

  /**
   * Graceful close. Server role with NO_ERROR: GOAWAY 2^31−1, a PING, then GOAWAY with the last
   * stream id when the PING returns (the client has then seen the first one, so no stream it opened
   * is lost in flight). With another `code` (e.g. ENHANCE_YOUR_CALM "too_many_pings"), or in the
   * client role: one GOAWAY with the last stream id the peer opened. Open streams finish; new ones
   * are refused; `onDrained` fires when the final GOAWAY is out and no stream is left.
   */
  shutdown(code: number = ErrorCode.NO_ERROR, debug = ""): void {
    if (this.#state === "closed") return;
    if (this.#state === "draining") {
      if (!this.#finalGoawaySent && (code !== ErrorCode.NO_ERROR || !this.#gracefulPingSent))
        this.#finalGoaway(code, debug);
      return;
    }
    this.#state = "draining";
    if (this.role === "server" && code === ErrorCode.NO_ERROR) {
      this.#push(goawayFrame(MAX_STREAM_ID, ErrorCode.NO_ERROR));
      this.#push(pingFrame(false, GRACEFUL_PING));
      this.#gracefulPingSent = true;
    } else this.#finalGoaway(code, debug);
  }

  #finalGoaway(code: number, debug: string): void {
    this.#gracefulPingSent = false;
    this.#push(goawayFrame(this.#lastPeerStreamId, code, debug));
    this.#finalGoawaySent = true;
    if (this.#streams.size === 0) this.#h.onDrained?.();
  }

  /** Our final GOAWAY is out: once no stream is open the connection can be closed. */
  get finalGoawaySent(): boolean {
    return this.#finalGoawaySent;
  }

  /** Sends GOAWAY with `code` and ends the connection: every open stream is reset (owner told). */
  goaway(code: number, message: string): void {
    this.#fatal(code, message);
  }

  /** The transport is gone (socket closed or errored): every open stream ends with `onReset`. */
  transportClosed(): void {
    if (this.#state === "closed" && this.#streams.size === 0) return;
    this.#state = "closed";
    this.#reader.stop();
    for (const s of [...this.#streams.values()]) this.#close(s, ErrorCode.CANCEL, true);
    this.#blocked.clear();
  }

  #fatal(code: number, message: string): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#reader.stop();
    this.#header = undefined;
    this.#push(goawayFrame(this.#lastPeerStreamId, code, code === ErrorCode.NO_ERROR ? "" : message));
    for (const s of [...this.#streams.values()])
      this.#close(s, code === ErrorCode.NO_ERROR ? ErrorCode.CANCEL : code, false);
    this.#blocked.clear();
    this.#h.onConnectionError?.(code, message, true);
  }

  #maybeClose(s: H2Stream): void {
    if (s.remoteEnded && s.localEnded && s.pendingBytes === 0 && !s.pendingEnd)
      this.#close(s, ErrorCode.NO_ERROR, false, true);
  }

  #close(s: H2Stream, code: number, byPeer: boolean, quiet = false): void {
    if (s.closed) return;
    s.closed = true;
    this.#streams.delete(s.id);
    this.#blocked.delete(s);
    if (this.#isPeerStreamId(s.id)) this.#peerActive--;
    else this.#localActive--;
    this.#releasePending(s);
    // Bytes it still held unconsumed go back to the connection window.
    if (s.unconsumed > 0) {
      const n = s.unconsumed;
      s.unconsumed = 0;
      this.#connUnconsumed -= n;
      if (this.#connOwed > 0 && this.#connUnconsumed <= this.settings.maxConnectionBufferBytes) {
        const owed = this.#connOwed;
        this.#connOwed = 0;
        this.#giveBackConnection(owed);
      }
    }
    if (!quiet) s.owner?.onReset(s, code, byPeer);
    this.#h.onStreamClosed?.(s);
    if (this.#finalGoawaySent && this.#streams.size === 0 && this.#state === "draining")
      this.#h.onDrained?.();
  }

  #queueControl(frame: Buffer): void {
    this.#queuedControl++;
    this.#controlInOut++;
    if (this.#queuedControl > this.settings.maxQueuedControlFrames) {
      this.#fatal(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames to answer (flood)");
      return;
    }
    this.#push(frame);
  }

  #push(frame: Buffer): void {
    this.#out.write(frame);
    this.#signal();
  }

  #signal(): void {
    if (!this.#outSignalled) {
      this.#outSignalled = true;
      this.#h.onOutput();
    }
  }
}

/** `RepeatedBlock.note`: the request header list passed `checkRequestHeaders`. */
const CHECKED = 1;

/** The content-length in `headers`: -1 when absent, NaN when malformed (not 1*DIGIT, or differing values). */
function declaredContentLength(headers: readonly string[]): number {
  let n = -1;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] !== "content-length") continue;
    const v = headers[i + 1]!;
    if (!/^[0-9]{1,15}$/.test(v)) return Number.NaN;
    const x = Number(v);
    if (n >= 0 && x !== n) return Number.NaN;
    n = x;
  }
  return n;
}

/** A response that has no content whatever its content-length says (RFC 9110 §6.4.1): 204, 304. */
function hasNoContent(headers: readonly string[]): boolean {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === ":status") return headers[i + 1] === "204" || headers[i + 1] === "304";
  }
  return false;
}

function isInformational(headers: readonly string[]): boolean {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === ":status") {
      const v = headers[i + 1]!;
      return v.length === 3 && v[0] === "1";
    }
  }
  return false;
}

/**
 * Why a request header list is malformed (RFC 9113 §8.2, §8.3), or undefined when it is not:
 * uppercase or empty names, pseudo-headers after regular ones, unknown or repeated pseudo-headers,
 * a missing :method/:scheme/:path, connection-specific fields, `te` other than "trailers".
 */
export function checkRequestHeaders(headers: readonly string[]): string | undefined {
  let method = false;
  let scheme = false;
  let path = false;
  let regular = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    if (name.length === 0) return "empty header name";
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return `pseudo-header ${name} after regular headers`;
      switch (name) {
        case ":method":
          if (method) return "repeated :method";
          method = true;
          break;
        case ":scheme":
          if (scheme) return "repeated :scheme";
          scheme = true;
          break;
        case ":path":
          if (path) return "repeated :path";
          if (headers[i + 1]!.length === 0) return "empty :path";
          path = true;
          break;
        case ":authority":
          break;
        default:
          return `unknown pseudo-header ${name}`;
      }
      continue;
    }
    regular = true;
    for (let j = 0; j < name.length; j++) {
      const c = name.charCodeAt(j);
      if (c >= 0x41 && c <= 0x5a) return `uppercase header name ${name}`;
      if (c <= 0x20 || c === 0x7f) return `invalid character in header name ${JSON.stringify(name)}`;
    }
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific header ${name}`;
    if (name === "te" && headers[i + 1] !== "trailers") return `te: ${headers[i + 1]}`;
  }
  if (!method || !scheme || !path) return "missing :method, :scheme or :path";
  return undefined;
}
