import { open, stat } from "node:fs/promises";
import type { Readable, Writable } from "node:stream";

/**
 * What a transfer reads from and writes to, and the re-chunking between them. Nothing here holds more
 * than one chunk plus one piece of its input.
 */

/**
 * A payload to send: a Buffer; `{ path }` of a file; `{ open(offset) }`, a payload that can be read
 * again from any offset (generated data, an object store); or a Readable / async iterable of bytes
 * (read once: a broken transfer resumes only from the chunks still held, see docs/transfer.md).
 */
export type PayloadSource =
  | Uint8Array
  | { readonly path: string }
  | { readonly open: (offset: number) => AsyncIterable<Uint8Array>; readonly size?: number }
  | Readable
  | AsyncIterable<Uint8Array>;

export interface OpenedSource {
  /** Raw bytes in all, or -1 when unknown. */
  readonly size: number;
  /** Whether `read(offset)` works for any offset, or only for 0 and only once. */
  readonly seekable: boolean;
  /** Chunks of exactly `chunkSize` bytes (the last may be shorter), from `offset`. */
  read(offset: number, chunkSize: number): AsyncIterable<Buffer>;
}

function isAsyncIterable(v: unknown): v is AsyncIterable<Uint8Array> {
  return typeof (v as { [Symbol.asyncIterator]?: unknown })?.[Symbol.asyncIterator] === "function";
}

export async function openSource(source: PayloadSource): Promise<OpenedSource> {
  if (source instanceof Uint8Array) {
    const buf = Buffer.from(source.buffer, source.byteOffset, source.length);
    return {
      size: buf.length,
      seekable: true,
      async *read(offset, chunkSize) {
        // Bounded by the buffer's length.
        for (let at = offset; at < buf.length; at += chunkSize) yield buf.subarray(at, at + chunkSize);
      },
    };
  }
  if ("path" in source && typeof source.path === "string") {
    const path = source.path;
    const size = (await stat(path)).size;
    return { size, seekable: true, read: (offset, chunkSize) => readFile(path, offset, chunkSize) };
  }
  if ("open" in source && typeof source.open === "function") {
    const fn = source.open;
    return {
      size: source.size ?? -1,
      seekable: true,
      read: (offset, chunkSize) => rechunk(fn(offset), chunkSize),
    };
  }
  if (isAsyncIterable(source)) {
    let used = false;
    return {
      size: -1,
      seekable: false,
      read(offset, chunkSize) {
        if (used || offset !== 0) throw new Error("a stream source can be read once, from its start");
        used = true;
        return rechunk(source, chunkSize);
      },
    };
  }
  throw new TypeError("source: not a Buffer, { path }, { open(offset) }, a Readable or an async iterable");
}

async function* readFile(path: string, offset: number, chunkSize: number): AsyncGenerator<Buffer> {
  const handle = await open(path, "r");
  try {
    let at = offset;
    // Bounded by the file's length: each turn reads at least one byte or stops.
    for (;;) {
      const buf = Buffer.allocUnsafe(chunkSize);
      let filled = 0;
      while (filled < chunkSize) {
        const { bytesRead } = await handle.read(buf, filled, chunkSize - filled, at + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled === 0) return;
      at += filled;
      yield filled === chunkSize ? buf : buf.subarray(0, filled);
      if (filled < chunkSize) return;
    }
  } finally {
    await handle.close();
  }
}

/** Pieces of any size in, chunks of exactly `chunkSize` out (the last may be shorter). */
export async function* rechunk(input: AsyncIterable<Uint8Array>, chunkSize: number): AsyncGenerator<Buffer> {
  let pending: Buffer | undefined; // a chunk being filled
  let filled = 0;
  for await (const piece of input) {
    let at = 0;
    const bytes = Buffer.from(piece.buffer, piece.byteOffset, piece.length);
    // Bounded by the piece's length.
    while (at < bytes.length) {
      if (pending === undefined && filled === 0 && bytes.length - at >= chunkSize) {
        // A whole chunk inside the piece: hand out a view, no copy.
        yield bytes.subarray(at, at + chunkSize);
        at += chunkSize;
        continue;
      }
      pending ??= Buffer.allocUnsafe(chunkSize);
      const n = Math.min(chunkSize - filled, bytes.length - at);
      bytes.copy(pending, filled, at, at + n);
      filled += n;
      at += n;
      if (filled === chunkSize) {
        yield pending;
        pending = undefined;
        filled = 0;
      }
    }
  }
  if (pending !== undefined && filled > 0) yield pending.subarray(0, filled);
}

/**
 * Where a download goes: `{ path }` of a file (created, or continued at the offset when resuming), a
 * Writable (not resumable past what it already took: a resumed download continues writing to it), or
 * `{ write(chunk, offset) }`.
 */
export type PayloadSink =
  | { readonly path: string }
  | Writable
  | { readonly write: (chunk: Buffer, offset: number) => unknown; readonly close?: () => unknown };

export interface OpenedSink {
  write(chunk: Buffer, offset: number): Promise<void>;
  close(): Promise<void>;
}

export async function openSink(sink: PayloadSink, resumeAt: number): Promise<OpenedSink> {
  if ("path" in sink && typeof sink.path === "string") {
    const handle = await open(sink.path, resumeAt > 0 ? "r+" : "w");
    if (resumeAt > 0) await handle.truncate(resumeAt);
    return {
      async write(chunk, offset) {
        let done = 0;
        // Bounded by the chunk's length: each turn writes at least one byte.
        while (done < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, done, chunk.length - done, offset + done);
          done += bytesWritten;
        }
      },
      close: () => handle.close(),
    };
  }
  if (isWritable(sink)) {
    return {
      write: (chunk) =>
        new Promise<void>((resolve, reject) => {
          const ok = sink.write(chunk, (err) => (err ? reject(err) : ok && resolve()));
          if (!ok) sink.once("drain", resolve);
        }),
      close: async () => {},
    };
  }
  if ("write" in sink && typeof sink.write === "function") {
    const s = sink as { write: (chunk: Buffer, offset: number) => unknown; close?: () => unknown };
    return {
      write: async (chunk, offset) => {
        await s.write(chunk, offset);
      },
      close: async () => {
        await s.close?.();
      },
    };
  }
  throw new TypeError("sink: not { path }, a Writable or { write(chunk, offset) }");
}

function isWritable(v: unknown): v is Writable {
  const w = v as { write?: unknown; once?: unknown; writableHighWaterMark?: unknown };
  return typeof w?.write === "function" && typeof w.once === "function" && "writableHighWaterMark" in w;
}
