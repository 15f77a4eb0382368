import type { Hash } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import { type DefinedService, defineService, type ServiceOptions } from "../server/define.ts";
import { type CodecName, checkLevel, decodeChunk, defaultLevel, encodeChunk, parseCodec } from "./codec.ts";
import { toStatus } from "./heartbeat.ts";
import {
  CHECKSUM,
  type ChunkMsg,
  checkChunkSize,
  type DownloadRequestMsg,
  defaultChunkSize,
  fail,
  MessageQueue,
  maxChunkSizeLimit,
  newHash,
  Status,
  type UploadReplyMsg,
  type UploadRequestMsg,
  writeMessage,
} from "./messages.ts";
import { transferDefinition } from "./protos.ts";
import { openSource, type PayloadSource } from "./source.ts";

/**
 * The server side of roster.transfer.v1.Transfer, for `roster serve` (export it from a service module)
 * or any grpc-js server (`loadDefinedService`). The user says where uploads go and what downloads read;
 * chunking, zstd, the checksum, backpressure and resumption are done here.
 *
 *   export default defineTransferService({
 *     upload: ({ name }) => createWriteStream(join(dir, basename(name))),
 *     download: ({ name }) => ({ path: join(dir, basename(name)) }),
 *   });
 *
 * Memory per call stays within a few chunks: a chunk is decoded, hashed and written before the next is
 * read (the client keeps at most `window` chunks unacknowledged), and a download writes the next chunk
 * only when grpc-js has sent the previous ones.
 *
 * Resumption: a call that breaks before `finish` leaves its upload under its transfer id for
 * `resumeTtlMs` — the target, the bytes written, the digest state — and a new call with `resume` for
 * that id continues from there. A download keeps the digest state at its recent chunk boundaries the
 * same way, so a resumed download needs no re-reading. State lives in the process: behind a balancer
 * with several servers, route by the `x-transfer-id` header the client sends (ring_hash) so a resumed
 * call reaches the same one; elsewhere it starts again from 0.
 */

export interface UploadStart {
  readonly id: string;
  readonly name: string;
  /** Raw bytes in all, or -1 when the client did not say. */
  readonly size: number;
  readonly attributes: Readonly<Record<string, string>>;
  readonly metadata: grpc.Metadata;
}

/** Where an upload's bytes go: a Writable, or an object with `write` (awaited before the ack). */
export type UploadTarget =
  | NodeJS.WritableStream
  | {
      write(chunk: Buffer, offset: number): unknown;
      /** After the last chunk, once the digest matched. */
      finish?(result: { size: number; digest: string }): unknown;
      /** The upload failed or expired unfinished. */
      abort?(reason: Error): unknown;
    };

export interface DownloadStart {
  readonly id: string;
  readonly name: string;
  readonly attributes: Readonly<Record<string, string>>;
  readonly metadata: grpc.Metadata;
}

export interface TransferServiceOptions {
  readonly upload?: (start: UploadStart) => UploadTarget | Promise<UploadTarget>;
  readonly download?: (start: DownloadStart) => PayloadSource | Promise<PayloadSource>;
  /** Raw bytes per download chunk when the client does not ask (default 1 MiB). */
  readonly chunkSize?: number;
  /** Largest raw chunk accepted or sent (default and limit: 4 MiB less 64 KiB). */
  readonly maxChunkSize?: number;
  /** zstd level of downloads when the client does not ask (default 3). */
  readonly level?: number;
  /** How long a broken transfer is kept for resumption, ms (default 10 min). */
  readonly resumeTtlMs?: number;
  /** Broken transfers kept at once; the oldest is dropped past it (default 64). */
  readonly maxResumable?: number;
  readonly interceptors?: ServiceOptions["interceptors"];
}

export const defaultTransferServer = {
  chunkSize: defaultChunkSize,
  maxChunkSize: maxChunkSizeLimit,
  level: defaultLevel,
  resumeTtlMs: 10 * 60_000,
  maxResumable: 64,
} as const;

/** Digest states of a download at its recent chunk boundaries: enough to resume where a client stopped. */
const DOWNLOAD_SNAPSHOTS = 64;

interface Target {
  write(chunk: Buffer, offset: number): Promise<void>;
  finish(result: { size: number; digest: string }): Promise<void>;
  abort(reason: Error): Promise<void>;
}

function adaptTarget(t: UploadTarget): Target {
  if (
    typeof (t as NodeJS.WritableStream).end === "function" &&
    typeof (t as NodeJS.EventEmitter).once === "function"
  ) {
    const w = t as NodeJS.WritableStream & NodeJS.EventEmitter & { destroy?: (err?: Error) => void };
    // The stream's errors fail the upload (through write's and end's callbacks), never the process.
    let failed: Error | undefined;
    w.on("error", (err: Error) => {
      failed ??= err;
    });
    return {
      write: (chunk) =>
        new Promise<void>((resolve, reject) => {
          if (failed !== undefined) {
            reject(failed);
            return;
          }
          const ok = w.write(chunk, (err?: Error | null) => (err ? reject(err) : ok && resolve()));
          if (!ok) w.once("drain", resolve);
        }),
      finish: () =>
        new Promise<void>((resolve, reject) => {
          if (failed !== undefined) {
            reject(failed);
            return;
          }
          w.once("error", reject);
          w.end(() => resolve());
        }),
      abort: async (reason) => {
        w.destroy?.(reason);
      },
    };
  }
  const o = t as Exclude<UploadTarget, NodeJS.WritableStream>;
  if (typeof o.write !== "function")
    throw new TypeError("upload target: not a Writable nor { write(chunk, offset) }");
  return {
    write: async (chunk, offset) => {
      await o.write(chunk, offset);
    },
    finish: async (r) => {
      await o.finish?.(r);
    },
    abort: async (e) => {
      await o.abort?.(e);
    },
  };
}

/** An upload between calls: kept under its transfer id while it can be resumed. */
interface PartialUpload {
  readonly id: string;
  readonly target: Target;
  readonly codec: CodecName;
  offset: number;
  readonly hash: Hash;
  /** The call that owns it now; a newer call with `resume` takes it over. */
  owner: symbol;
  /** The owner's write in progress, awaited before a new owner continues. */
  busy: Promise<void>;
  expiry: NodeJS.Timeout | undefined;
}

interface PartialDownload {
  /** Digest state at each recent chunk boundary (offset → state). */
  readonly snapshots: Map<number, Hash>;
  expiry: NodeJS.Timeout | undefined;
}

function positiveInt(v: number, field: string): number {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${field}: must be an integer ≥ 1, got ${v}`);
  return v;
}

export function defineTransferService(options: TransferServiceOptions): DefinedService {
  const maxChunkSize = checkChunkSize(
    options.maxChunkSize ?? defaultTransferServer.maxChunkSize,
    "maxChunkSize",
  );
  const chunkSize = checkChunkSize(options.chunkSize ?? defaultTransferServer.chunkSize, "chunkSize");
  if (chunkSize > maxChunkSize)
    throw new RangeError(`chunkSize: ${chunkSize} is above maxChunkSize ${maxChunkSize}`);
  const level = checkLevel(options.level ?? defaultTransferServer.level);
  const resumeTtlMs = positiveInt(options.resumeTtlMs ?? defaultTransferServer.resumeTtlMs, "resumeTtlMs");
  const maxResumable = positiveInt(
    options.maxResumable ?? defaultTransferServer.maxResumable,
    "maxResumable",
  );
  const uploads = new Map<string, PartialUpload>();
  const downloads = new Map<string, PartialDownload>();

  const dropUpload = (p: PartialUpload, reason: Error) => {
    clearTimeout(p.expiry);
    if (uploads.get(p.id) === p) uploads.delete(p.id);
    void p.target.abort(reason).catch(() => {});
  };
  /** Keeps a broken upload for resumption (bounded in time and count). */
  const park = (p: PartialUpload) => {
    clearTimeout(p.expiry);
    p.expiry = setTimeout(() => dropUpload(p, new Error("upload not resumed in time")), resumeTtlMs);
    p.expiry.unref();
    // Bounded by maxResumable: the map holds at most one entry more.
    while (uploads.size > maxResumable) {
      const oldest = uploads.values().next().value as PartialUpload;
      dropUpload(oldest, new Error("too many unfinished uploads"));
    }
  };

  const upload = async (call: grpc.ServerDuplexStream<UploadRequestMsg, UploadReplyMsg>) => {
    const queue = new MessageQueue<UploadRequestMsg>(call, 2);
    const me = Symbol("call");
    let partial: PartialUpload | undefined;
    let finished = false;
    const onCancel = () => queue.abort(fail(Status.CANCELLED, "cancelled"));
    if (call.cancelled) onCancel();
    else call.once("cancelled", onCancel);
    try {
      const first = await queue.next();
      if (first?.open === undefined) throw fail(Status.INVALID_ARGUMENT, "the first message must be open");
      const open = first.open;
      if (open.checksum !== "" && open.checksum !== CHECKSUM)
        throw fail(
          Status.INVALID_ARGUMENT,
          `checksum: "${open.checksum.slice(0, 40)}" is not supported; use ${CHECKSUM}`,
        );
      let codec: CodecName;
      try {
        codec = parseCodec(open.codec);
      } catch (err) {
        throw fail(Status.INVALID_ARGUMENT, (err as Error).message);
      }
      if (options.upload === undefined) throw fail(Status.UNIMPLEMENTED, "this server takes no uploads");
      const kept = open.transfer_id === "" ? undefined : uploads.get(open.transfer_id);
      if (kept !== undefined && open.resume && kept.codec === codec) {
        // Take it over from the call that broke (which may not know yet): wait for its last write.
        kept.owner = me;
        clearTimeout(kept.expiry);
        await kept.busy;
        partial = kept;
      } else {
        if (kept !== undefined) dropUpload(kept, new Error("replaced by a new upload of the same id"));
        const target = adaptTarget(
          await options.upload({
            id: open.transfer_id,
            name: open.name,
            size: open.size,
            attributes: open.attributes ?? {},
            metadata: call.metadata,
          }),
        );
        partial = {
          id: open.transfer_id,
          target,
          codec,
          offset: 0,
          hash: newHash(),
          owner: me,
          busy: Promise.resolve(),
          expiry: undefined,
        };
        if (partial.id !== "") uploads.set(partial.id, partial);
      }
      const p = partial;
      await writeMessage(call, { opened: { offset: p.offset, max_chunk_size: maxChunkSize } });
      // Bounded by the client's messages: each turn takes one.
      for (;;) {
        const m = await queue.next();
        if (m === undefined) throw fail(Status.CANCELLED, "the client ended the upload without finish");
        if (p.owner !== me) throw fail(Status.ABORTED, "taken over by a resumed upload");
        if (m.chunk !== undefined) {
          const raw = decodeOrFail(p.codec, m.chunk, p.offset, maxChunkSize);
          p.hash.update(raw);
          const write = p.target.write(raw, p.offset);
          p.busy = write.catch(() => {});
          await write;
          p.offset += raw.length;
          await writeMessage(call, { ack: { offset: p.offset } });
        } else if (m.finish !== undefined) {
          const digest = p.hash.digest("hex");
          if (m.finish.size !== p.offset || m.finish.digest !== digest) {
            const err = fail(
              Status.DATA_LOSS,
              `checksum mismatch: client sent ${m.finish.size} bytes ${CHECKSUM} ${m.finish.digest.slice(0, 64)}, server got ${p.offset} bytes ${digest}`,
            );
            finished = true;
            dropUpload(p, err);
            throw err;
          }
          finished = true;
          if (uploads.get(p.id) === p) uploads.delete(p.id);
          await p.target.finish({ size: p.offset, digest });
          await writeMessage(call, { done: { size: p.offset, digest } });
          call.end();
          return;
        } else {
          throw fail(Status.INVALID_ARGUMENT, "expected chunk or finish");
        }
      }
    } catch (err) {
      const status = toStatus(err);
      const p = partial;
      if (p !== undefined && !finished && p.owner === me) {
        // Broken by the connection (or the client): keep it for a resumed call. A bad request drops it.
        const resumable =
          p.id !== "" &&
          (status.code === Status.CANCELLED ||
            status.code === Status.UNAVAILABLE ||
            status.code === Status.DEADLINE_EXCEEDED);
        if (resumable) park(p);
        else dropUpload(p, new Error(status.details));
      }
      if (!call.cancelled) call.emit("error", status);
    }
  };

  const download = async (call: grpc.ServerWritableStream<DownloadRequestMsg, unknown>) => {
    const abort = new AbortController();
    const onCancel = () => abort.abort();
    if (call.cancelled) onCancel();
    else call.once("cancelled", onCancel);
    const r = call.request;
    let snapshots: Map<number, Hash> | undefined;
    try {
      if (options.download === undefined) throw fail(Status.UNIMPLEMENTED, "this server serves no downloads");
      let codec: CodecName;
      let size: number;
      let lvl: number;
      try {
        codec = parseCodec(r.codec);
        lvl = r.level === 0 ? level : checkLevel(r.level);
        size = r.chunk_size === 0 ? chunkSize : checkChunkSize(r.chunk_size, "chunk_size");
      } catch (err) {
        throw fail(Status.INVALID_ARGUMENT, (err as Error).message);
      }
      if (size > maxChunkSize) throw fail(Status.INVALID_ARGUMENT, `chunk_size: above ${maxChunkSize}`);
      const source = await openSource(
        await options.download({
          id: r.transfer_id,
          name: r.name,
          attributes: r.attributes ?? {},
          metadata: call.metadata,
        }),
      );
      const offset = r.offset;
      if (!Number.isSafeInteger(offset) || offset < 0 || (source.size >= 0 && offset > source.size))
        throw fail(Status.OUT_OF_RANGE, `offset ${r.offset} is past the end (${source.size} bytes)`);
      // The digest state at `offset`: kept from the broken call, else read again from 0.
      const kept = r.transfer_id === "" ? undefined : downloads.get(r.transfer_id);
      let hash = kept?.snapshots.get(offset)?.copy();
      if (kept !== undefined) {
        clearTimeout(kept.expiry);
        downloads.delete(r.transfer_id);
      }
      if (hash === undefined) {
        hash = newHash();
        if (offset > 0) {
          if (!source.seekable) throw fail(Status.FAILED_PRECONDITION, "this payload cannot be resumed");
          let seen = 0;
          for await (const c of source.read(0, size)) {
            const take = Math.min(c.length, offset - seen);
            hash.update(c.subarray(0, take));
            seen += take;
            if (seen >= offset || abort.signal.aborted) break;
          }
        }
      }
      snapshots = new Map([[offset, hash.copy()]]);
      await writeMessage(call, { info: { size: source.size, offset, checksum: CHECKSUM } }, abort.signal);
      let at = offset;
      for await (const raw of source.read(offset, size)) {
        if (abort.signal.aborted) throw fail(Status.CANCELLED, "cancelled");
        hash.update(raw);
        const data = encodeChunk(codec, raw, lvl);
        await writeMessage(call, { chunk: { offset: at, raw_size: raw.length, data } }, abort.signal);
        at += raw.length;
        snapshots.set(at, hash.copy());
        // Bounded: one entry in, at most one out.
        if (snapshots.size > DOWNLOAD_SNAPSHOTS) snapshots.delete(snapshots.keys().next().value as number);
      }
      if (source.size >= 0 && at !== source.size)
        throw fail(Status.DATA_LOSS, `the source gave ${at} bytes, said ${source.size}`);
      await writeMessage(call, { done: { size: at, digest: hash.digest("hex") } }, abort.signal);
      call.end();
    } catch (err) {
      const status = toStatus(err);
      if (r.transfer_id !== "" && snapshots !== undefined && status.code === Status.CANCELLED) {
        const entry: PartialDownload = { snapshots, expiry: undefined };
        entry.expiry = setTimeout(() => downloads.delete(r.transfer_id), resumeTtlMs);
        entry.expiry.unref();
        downloads.set(r.transfer_id, entry);
        // Bounded by maxResumable.
        while (downloads.size > maxResumable) downloads.delete(downloads.keys().next().value as string);
      }
      if (!call.cancelled) call.emit("error", status);
    }
  };

  return defineService({
    definition: transferDefinition(),
    ...(options.interceptors !== undefined ? { interceptors: options.interceptors } : {}),
    handlers: {
      Upload: (call: grpc.ServerDuplexStream<UploadRequestMsg, UploadReplyMsg>) => {
        void upload(call);
      },
      Download: (call: grpc.ServerWritableStream<DownloadRequestMsg, unknown>) => {
        void download(call);
      },
    },
  });
}

function decodeOrFail(codec: CodecName, chunk: ChunkMsg, expected: number, maxChunkSize: number): Buffer {
  if (chunk.offset !== expected)
    throw fail(Status.FAILED_PRECONDITION, `chunk at offset ${chunk.offset}, expected ${expected}`);
  if (!Number.isInteger(chunk.raw_size) || chunk.raw_size < 1 || chunk.raw_size > maxChunkSize)
    throw fail(Status.INVALID_ARGUMENT, `chunk raw_size ${chunk.raw_size}: must be 1 to ${maxChunkSize}`);
  try {
    return decodeChunk(codec, chunk.data, chunk.raw_size);
  } catch (err) {
    throw fail(Status.DATA_LOSS, `chunk at offset ${chunk.offset}: ${(err as Error).message}`);
  }
}
