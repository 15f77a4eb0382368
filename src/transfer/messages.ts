import { createHash, type Hash } from "node:crypto";
import * as grpc from "@grpc/grpc-js";

/** Message shapes of proto/roster/transfer/v1/transfer.proto as proto-loader gives them (oneofs: true). */

export interface OpenMsg {
  transfer_id: string;
  name: string;
  size: number;
  codec: string;
  checksum: string;
  resume: boolean;
  attributes: Record<string, string>;
}
export interface ChunkMsg {
  offset: number;
  raw_size: number;
  data: Buffer;
}
export interface DoneMsg {
  size: number;
  digest: string;
}
export interface UploadRequestMsg {
  kind?: "open" | "chunk" | "finish";
  open?: OpenMsg;
  chunk?: ChunkMsg;
  finish?: DoneMsg;
}
export interface UploadReplyMsg {
  kind?: "opened" | "ack" | "done";
  opened?: { offset: number; max_chunk_size: number };
  ack?: { offset: number };
  done?: DoneMsg;
}
export interface DownloadRequestMsg {
  transfer_id: string;
  name: string;
  offset: number;
  codec: string;
  level: number;
  chunk_size: number;
  attributes: Record<string, string>;
}
export interface DownloadReplyMsg {
  kind?: "info" | "chunk" | "done";
  info?: { size: number; offset: number; checksum: string };
  chunk?: ChunkMsg;
  done?: DoneMsg;
}

export const CHECKSUM = "sha256";
export const newHash = (): Hash => createHash(CHECKSUM);

export const MiB = 1024 * 1024;
export const defaultChunkSize = MiB;
/**
 * The largest raw chunk: grpc-js refuses messages over 4 MiB by default (on clients and servers the
 * user did not configure), and a zstd frame of incompressible bytes is a little larger than its input.
 */
export const maxChunkSizeLimit = 4 * MiB - 64 * 1024;

export function checkChunkSize(n: number, field = "chunkSize"): number {
  if (!Number.isInteger(n) || n < 1024 || n > maxChunkSizeLimit)
    throw new RangeError(`${field}: must be an integer from 1024 to ${maxChunkSizeLimit}, got ${n}`);
  return n;
}

/** A status error a handler throws or a client rejects with: `code` is a grpc.status. */
export class TransferError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, details: string) {
    super(details);
    this.name = "TransferError";
    this.code = code;
    this.details = details;
  }
}

export const fail = (code: number, details: string): TransferError => new TransferError(code, details);
export const Status = grpc.status;

/**
 * Messages of a stream one at a time, with the stream's end or error: `next()` resolves with the next
 * message, `undefined` at the end, or rejects with the stream's error. Reading pauses the stream while
 * `limit` messages wait, so a fast sender is held back by HTTP/2 flow control, not by our memory.
 */
export class MessageQueue<T> {
  readonly #stream: MessageReader;
  readonly #items: T[] = [];
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  readonly #limit: number;

  constructor(stream: MessageReader, limit = 4) {
    this.#stream = stream;
    this.#limit = limit;
    stream.on("data", (m: T) => {
      this.#items.push(m);
      if (this.#items.length >= this.#limit) stream.pause();
      this.#notify();
    });
    stream.once("end", () => {
      this.#ended = true;
      this.#notify();
    });
    stream.once("error", (err: Error) => {
      this.#error ??= err;
      this.#notify();
    });
  }

  /** Ends waiting readers with `err` (a cancellation, a timeout). */
  abort(err: Error): void {
    this.#error ??= err;
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async next(): Promise<T | undefined> {
    // Bounded: each turn either returns or waits for one event of the stream.
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) {
        if (this.#items.length < this.#limit) this.#stream.resume();
        return item;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }
}

/** What writeMessage needs of a grpc-js call. */
export interface MessageWriter extends NodeJS.EventEmitter {
  // biome-ignore lint/suspicious/noExplicitAny: calls are typed by their messages
  write(message: any): boolean;
}

/** What MessageQueue needs of a grpc-js call. */
export interface MessageReader extends NodeJS.EventEmitter {
  pause(): unknown;
  resume(): unknown;
}

/** Writes `message`, resolving once grpc-js's buffer has room again (backpressure). */
export function writeMessage(
  call: MessageWriter & { readonly cancelled?: boolean },
  message: unknown,
  signal?: { aborted: boolean },
): Promise<void> {
  // A cancelled server call never drains: waiting for it would hold the handler (and the upload it
  // should park for resumption) forever.
  if (call.cancelled === true) return Promise.reject(fail(Status.CANCELLED, "cancelled"));
  if (call.write(message)) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = () => {
      call.off("drain", onDrain);
      call.off("error", onError);
      call.off("close", onClose);
      call.off("cancelled", onClose);
    };
    const onDrain = () => {
      done();
      resolve();
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(fail(Status.CANCELLED, signal?.aborted ? "cancelled" : "stream closed"));
    };
    call.once("drain", onDrain);
    call.once("error", onError);
    call.once("close", onClose);
    call.once("cancelled", onClose);
  });
}
