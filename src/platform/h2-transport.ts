import type { Socket } from "node:net";
import type { Clock } from "../core/clock.ts";
import {
  type ConnectionHandler,
  type ConnectionSettings,
  Http2Connection,
  type Role,
} from "../http2/connection.ts";

/**
 * Binds a socket (net or tls) to a pure `Http2Connection`: reads feed `receive`, and the frames the
 * connection queues are written once per turn of the event loop — every connection with output is
 * flushed from one `setImmediate`, so the frames of all streams that became ready while node read the
 * sockets go out in one write per socket.
 *
 * Backpressure on the socket: when more than `maxWriteBufferBytes` wait in the socket's own buffer
 * (the peer does not read), reading from it stops and DATA stays in the stream queues (`holdSend`)
 * until it drains, so a peer cannot make us queue answers (ACKs, RST_STREAMs) or, by granting huge
 * windows it then does not read, DATA without bound. Batches of many small frames (a control-frame
 * flood's ACKs) are joined into one buffer, so the socket's queue costs bytes, not an object per frame.
 * Control answers (ACKs, RST_STREAMs) are reported to the connection as written when their write
 * completes, so a peer that provokes them faster than it reads meets `maxQueuedControlFrames` (GOAWAY
 * ENHANCE_YOUR_CALM) long before the write buffer's limit.
 */
export interface TransportHooks {
  /** The socket is closed (after an error, the peer's close, or ours); the connection has ended its streams. */
  readonly onClose?: (error: Error | undefined) => void;
  /** Bytes were read or written (activity, for idle timers). Called at most once per read / flush. */
  readonly onActivity?: () => void;
}

export interface TransportOptions {
  readonly role: Role;
  readonly settings?: Partial<ConnectionSettings>;
  readonly clock: Clock;
  readonly maxWriteBufferBytes?: number;
}

const DEFAULT_MAX_WRITE_BUFFER = 4 * 1024 * 1024;
/** Batches smaller than this are joined into one buffer before the write (a copy is cheaper than writev). */
const JOIN_BELOW = 16 * 1024;
/** Batches whose frames average fewer bytes than this are joined too (many ACKs, few DATA). */
const SMALL_FRAME = 64;

const dirty = new Set<H2Transport>();
let flushScheduled = false;

function flushAll(): void {
  flushScheduled = false;
  // A flush can queue more output on other transports (a stream finishing frees a window…): loop
  // until nothing is left, bounded by the set emptying.
  for (const t of dirty) {
    dirty.delete(t);
    t.flush();
  }
}

export class H2Transport {
  readonly conn: Http2Connection;
  readonly socket: Socket;
  readonly #o: TransportOptions;
  readonly #hooks: TransportHooks;
  #closed = false;
  #readPaused = false;
  #error: Error | undefined;
  /** The socket is ending after a fatal GOAWAY. */
  #ending = false;

  constructor(
    socket: Socket,
    options: TransportOptions,
    handler: Omit<ConnectionHandler, "onOutput">,
    hooks: TransportHooks = {},
  ) {
    this.socket = socket;
    this.#o = options;
    this.#hooks = hooks;
    const appError = handler.onConnectionError;
    this.conn = new Http2Connection(
      options.role,
      {
        ...handler,
        onOutput: () => this.#schedule(),
        onConnectionError: (code, message, sentByUs) => {
          appError?.(code, message, sentByUs);
          if (sentByUs) this.#ending = true;
        },
      },
      options.settings,
    );
    socket.on("data", (chunk: Buffer) => {
      this.conn.receive(chunk, this.#o.clock.now());
      this.#hooks.onActivity?.();
    });
    socket.on("error", (err) => {
      this.#error ??= err;
    });
    socket.on("close", () => this.#onClose());
    socket.on("drain", () => {
      if (this.#readPaused) {
        this.#readPaused = false;
        socket.resume();
        this.conn.holdSend(false);
      }
    });
  }

  /** Starts the connection (preface, SETTINGS) and reading. `head` are bytes already read from the socket. */
  start(head?: Buffer): void {
    this.conn.start();
    if (head !== undefined && head.length > 0) this.conn.receive(head, this.#o.clock.now());
    this.socket.resume();
  }

  get closed(): boolean {
    return this.#closed;
  }

  #schedule(): void {
    if (this.#closed) return;
    dirty.add(this);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushAll);
    }
  }

  /** Writes what the connection has queued. */
  flush(): void {
    if (this.#closed) return;
    const out = this.conn.takeOutput();
    const socket = this.socket;
    if (out !== undefined && !socket.destroyed) {
      const written = this.#written();
      if (out.length === 1) socket.write(out[0]!, written);
      else {
        let total = 0;
        for (const b of out) total += b.length;
        if (total < JOIN_BELOW || total < out.length * SMALL_FRAME)
          socket.write(Buffer.concat(out, total), written);
        else {
          socket.cork();
          const last = out.length - 1;
          for (let i = 0; i < last; i++) socket.write(out[i]!);
          socket.write(out[last]!, written);
          socket.uncork();
        }
      }
      this.#hooks.onActivity?.();
      if (
        !this.#readPaused &&
        socket.writableLength > (this.#o.maxWriteBufferBytes ?? DEFAULT_MAX_WRITE_BUFFER)
      ) {
        this.#readPaused = true;
        socket.pause();
        this.conn.holdSend(true);
      }
    }
    if (this.#ending || this.conn.state === "closed") {
      // After a fatal GOAWAY: write it, then close (the peer gets the reason).
      this.#ending = false;
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    }
  }

  /**
   * The write callback of a batch: the socket calls it once the batch has left its buffer (handed to
   * the kernel, or dropped with the socket), and only then are the output slabs holding it reused, and
   * do its control answers stop counting against the connection's `maxQueuedControlFrames`.
   */
  #written(): () => void {
    const conn = this.conn;
    const n = conn.takenControlFrames;
    const seq = conn.outputSeq;
    if (n === 0) return () => conn.outputWritten(seq);
    return () => {
      conn.outputWritten(seq);
      conn.controlFramesWritten(n);
    };
  }

  /** Flushes what is queued and closes the socket (graceful end of the byte stream). */
  end(): void {
    if (this.#closed) return;
    this.flush();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Closes at once. */
  destroy(error?: Error): void {
    if (error !== undefined) this.#error ??= error;
    this.socket.destroy();
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    dirty.delete(this);
    this.conn.transportClosed();
    this.#hooks.onClose?.(this.#error);
  }
}
