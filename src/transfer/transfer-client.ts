import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { type CodecName, checkLevel, decodeChunk, defaultLevel, encodeChunk } from "./codec.ts";
import {
  CHECKSUM,
  checkChunkSize,
  type DownloadReplyMsg,
  type DownloadRequestMsg,
  defaultChunkSize,
  fail,
  MessageQueue,
  newHash,
  Status,
  TransferError,
  type UploadReplyMsg,
  type UploadRequestMsg,
  writeMessage,
} from "./messages.ts";
import { methodOf, transferDefinition } from "./protos.ts";
import { openSink, openSource, type PayloadSink, type PayloadSource } from "./source.ts";

/**
 * The client side of roster.transfer.v1.Transfer: `upload(client, source, options)` and
 * `download(client, request, sink, options)`. `client` is any grpc-js client (a generated one, or
 * `new grpc.Client(target, credentials)`) or roster/client's `createClient({ definition:
 * transferDefinition(), … })` — every call of a transfer is opened through it, again after a break.
 *
 * A transfer whose call breaks with UNAVAILABLE, CANCELLED (not ours), INTERNAL or DEADLINE_EXCEEDED
 * (a balancer restarted, a connection reset) opens a new call and continues: an upload from the offset
 * the server says it wrote (the unacknowledged chunks are still held, so even a stream source is
 * resumed), a download from the bytes the sink took.
 */

export interface Progress {
  /** Raw bytes acknowledged by the server (upload) or written to the sink (download). */
  readonly bytes: number;
  /** Raw bytes in all, or -1 when unknown. */
  readonly total: number;
  /** Encoded bytes of chunk data sent or received so far (every attempt). */
  readonly wireBytes: number;
}

export interface TransferOptions {
  /** The key of resumption; default a random UUID. Sent as the `x-transfer-id` header too. */
  readonly id?: string;
  readonly name?: string;
  readonly attributes?: Readonly<Record<string, string>>;
  /** "zstd" (default) or "identity". */
  readonly codec?: CodecName;
  /** zstd level (default 3; downloads: the server's default). */
  readonly level?: number;
  /** Raw bytes per chunk (default 1 MiB). */
  readonly chunkSize?: number;
  readonly onProgress?: (p: Progress) => void;
  readonly signal?: AbortSignal;
  readonly metadata?: grpc.Metadata;
  /** Deadline of each call, ms from its start (default: none with grpc-js; createClient's preset). */
  readonly callDeadlineMs?: number;
  /** New calls after a break, in all (default 5). 0 = never resume. */
  readonly retries?: number;
  /** Wait before a new call, ms, doubled per consecutive break up to 2 s (default 100). */
  readonly retryDelayMs?: number;
}

export interface UploadOptions extends TransferOptions {
  /**
   * Chunks sent and not yet acknowledged (default 2). A break re-sends at most these; more keeps the
   * path busier on links with a long round trip.
   */
  readonly window?: number;
}

export interface TransferResult {
  readonly id: string;
  readonly size: number;
  /** Hex sha256 of every raw byte, checked by the receiver. */
  readonly digest: string;
  readonly wireBytes: number;
  /** Calls opened (1 without breaks). */
  readonly attempts: number;
  /** Chunks sent more than once because a break lost them in flight. */
  readonly resentChunks: number;
}

export const defaultTransferClient = {
  window: 2,
  retries: 5,
  retryDelayMs: 100,
  level: defaultLevel,
} as const;

type TransferClient =
  | grpc.Client
  | {
      Upload: (o?: {
        metadata?: grpc.Metadata;
        deadlineMs?: number;
      }) => grpc.ClientDuplexStream<unknown, unknown>;
      Download: (
        request: DownloadRequestMsg,
        o?: { metadata?: grpc.Metadata; deadlineMs?: number },
      ) => grpc.ClientReadableStream<unknown>;
    };

function metadataFor(id: string, o: TransferOptions): grpc.Metadata {
  const md = o.metadata?.clone() ?? new grpc.Metadata();
  md.set("x-transfer-id", id);
  return md;
}

function openUpload(client: TransferClient, md: grpc.Metadata, o: TransferOptions) {
  if (client instanceof grpc.Client) {
    const m = methodOf(transferDefinition(), "Upload");
    return client.makeBidiStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      md,
      o.callDeadlineMs !== undefined ? { deadline: Date.now() + o.callDeadlineMs } : {},
    ) as grpc.ClientDuplexStream<UploadRequestMsg, UploadReplyMsg>;
  }
  return client.Upload({
    metadata: md,
    ...(o.callDeadlineMs !== undefined ? { deadlineMs: o.callDeadlineMs } : {}),
  }) as grpc.ClientDuplexStream<UploadRequestMsg, UploadReplyMsg>;
}

function openDownload(
  client: TransferClient,
  request: DownloadRequestMsg,
  md: grpc.Metadata,
  o: TransferOptions,
) {
  if (client instanceof grpc.Client) {
    const m = methodOf(transferDefinition(), "Download");
    return client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      request,
      md,
      o.callDeadlineMs !== undefined ? { deadline: Date.now() + o.callDeadlineMs } : {},
    ) as grpc.ClientReadableStream<DownloadReplyMsg>;
  }
  return client.Download(request, {
    metadata: md,
    ...(o.callDeadlineMs !== undefined ? { deadlineMs: o.callDeadlineMs } : {}),
  }) as grpc.ClientReadableStream<DownloadReplyMsg>;
}

/** Whether a broken call is worth a new one: the path broke, not the request. */
function retryable(err: unknown, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted) return false;
  const code = (err as { code?: unknown })?.code;
  return (
    code === Status.UNAVAILABLE ||
    code === Status.CANCELLED ||
    code === Status.INTERNAL ||
    code === Status.DEADLINE_EXCEEDED ||
    code === Status.ABORTED
  );
}

function checkCount(v: number, field: string, min: number): number {
  if (!Number.isInteger(v) || v < min)
    throw new RangeError(`${field}: must be an integer ≥ ${min}, got ${v}`);
  return v;
}

/** The wait before the new call after the `breaks`-th broken one: the delay doubling, at most 2 s. */
function pauseAfterBreak(breaks: number, delayMs: number | undefined, signal: AbortSignal | undefined) {
  return pause(Math.min((delayMs ?? defaultTransferClient.retryDelayMs) * 2 ** (breaks - 1), 2000), signal);
}

async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}

interface Sent {
  readonly offset: number;
  readonly rawSize: number;
  readonly data: Buffer;
  sends: number;
}

/**
 * Uploads `source` in chunks; resolves once the server has checked the digest. Memory: at most
 * `window` + 1 chunks (raw and encoded), whatever the size.
 */
export async function upload(
  client: TransferClient,
  source: PayloadSource,
  o: UploadOptions = {},
): Promise<TransferResult> {
  const id = o.id ?? randomUUID();
  const chunkSize = checkChunkSize(o.chunkSize ?? defaultChunkSize);
  const level = checkLevel(o.level ?? defaultTransferClient.level);
  const window = checkCount(o.window ?? defaultTransferClient.window, "window", 1);
  const retries = checkCount(o.retries ?? defaultTransferClient.retries, "retries", 0);
  const codec = o.codec ?? "zstd";
  const src = await openSource(source);
  const md = metadataFor(id, o);

  let hash = newHash();
  let reader: AsyncIterator<Buffer> = src.read(0, chunkSize)[Symbol.asyncIterator]();
  let readAt = 0; // raw bytes taken from the source (and hashed)
  let eof = false;
  /** Encoded chunks not yet acknowledged, oldest first (at most `window`), then one read ahead. */
  const held: Sent[] = [];
  let acked = 0;
  let wireBytes = 0;
  let resentChunks = 0;
  let attempts = 0;
  let breaks = 0;

  const readNext = async (): Promise<Sent | undefined> => {
    if (eof) return undefined;
    const r = await reader.next();
    if (r.done) {
      eof = true;
      return undefined;
    }
    // A source may reuse its buffer once asked for the next piece: identity chunks are held (for a
    // resend) as copies; zstd chunks are new buffers anyway.
    const raw = codec === "identity" ? Buffer.from(r.value) : r.value;
    hash.update(raw);
    const s: Sent = { offset: readAt, rawSize: raw.length, data: encodeChunk(codec, raw, level), sends: 0 };
    readAt += raw.length;
    return s;
  };

  // Bounded by `retries`: each turn is one call; a turn that does not finish uses one retry.
  for (;;) {
    if (o.signal?.aborted) throw fail(Status.CANCELLED, "upload aborted");
    attempts++;
    const call = openUpload(client, md, o);
    const onAbort = () => call.cancel();
    o.signal?.addEventListener("abort", onAbort, { once: true });
    const replies = new MessageQueue<UploadReplyMsg>(call);
    try {
      await writeMessage(call, {
        open: {
          transfer_id: id,
          name: o.name ?? "",
          size: src.size,
          codec,
          checksum: CHECKSUM,
          resume: attempts > 1,
          attributes: { ...(o.attributes ?? {}) },
        },
      });
      const opened = (await replies.next())?.opened;
      if (opened === undefined) throw fail(Status.INTERNAL, "the server did not answer open");
      if (opened.max_chunk_size < chunkSize)
        throw fail(
          Status.INVALID_ARGUMENT,
          `chunkSize ${chunkSize} is above the server's ${opened.max_chunk_size}`,
        );
      const start = opened.offset;
      if (start < acked || start > readAt) {
        // The server lost (or never had) what we sent: start again from its offset, if we can.
        if (start !== 0)
          throw fail(Status.FAILED_PRECONDITION, `the server resumes at ${start}, which we cannot`);
        if (!src.seekable && readAt > 0)
          throw fail(
            Status.FAILED_PRECONDITION,
            "the server lost the upload and a stream source cannot be read again",
          );
        held.length = 0;
        hash = newHash();
        await reader.return?.();
        reader = src.read(0, chunkSize)[Symbol.asyncIterator]();
        readAt = 0;
        eof = false;
      } else {
        // Chunks the server wrote though their ack was lost are done.
        while (held.length > 0 && held[0]!.offset + held[0]!.rawSize <= start) held.shift();
      }
      acked = start;
      let next = 0; // index in `held` of the next chunk to send
      // Bounded by the payload: each turn sends a chunk or takes an ack.
      for (;;) {
        while (next < held.length && next < window) {
          const s = held[next]!;
          if (s.sends > 0) resentChunks++;
          s.sends++;
          wireBytes += s.data.length;
          await writeMessage(call, { chunk: { offset: s.offset, raw_size: s.rawSize, data: s.data } });
          next++;
        }
        if (held.length < window + 1) {
          // Read (and encode) ahead while the sent chunks travel.
          const s = await readNext();
          if (s !== undefined) {
            held.push(s);
            continue;
          }
        }
        if (held.length === 0 && eof) break;
        if (next === 0) continue;
        const reply = await replies.next();
        if (reply?.ack === undefined)
          throw fail(Status.INTERNAL, "the server ended the upload before its end");
        acked = reply.ack.offset;
        // Bounded by `held`'s length.
        while (held.length > 0 && held[0]!.offset + held[0]!.rawSize <= acked) {
          held.shift();
          next--;
        }
        breaks = 0;
        o.onProgress?.({ bytes: acked, total: src.size, wireBytes });
      }
      // A copy: if this call breaks before `done`, the next one finishes with the same hash.
      const digest = hash.copy().digest("hex");
      await writeMessage(call, { finish: { size: readAt, digest } });
      const done = (await replies.next())?.done;
      if (done === undefined) throw fail(Status.INTERNAL, "the server did not confirm the upload");
      if (done.digest !== digest || done.size !== readAt)
        throw fail(
          Status.DATA_LOSS,
          `the server confirmed ${done.size} bytes ${done.digest}, sent ${readAt} ${digest}`,
        );
      call.end();
      return { id, size: readAt, digest, wireBytes, attempts, resentChunks };
    } catch (err) {
      call.cancel();
      if (!retryable(err, o.signal) || attempts > retries) throw asError(err);
      breaks++;
      await pauseAfterBreak(breaks, o.retryDelayMs, o.signal);
    } finally {
      o.signal?.removeEventListener("abort", onAbort);
    }
  }
}

function asError(err: unknown): Error {
  if (err instanceof Error) return err;
  const e = err as { code?: number; details?: string };
  return new TransferError(e?.code ?? Status.UNKNOWN, e?.details ?? String(err));
}

export interface DownloadRequest {
  readonly name: string;
  readonly attributes?: Readonly<Record<string, string>>;
}

/**
 * Downloads `request.name` into `sink`; resolves once every byte is written and the digest matched.
 * Memory: a few chunks (grpc-js reads ahead a little; the next is read only after the sink took one).
 */
export async function download(
  client: TransferClient,
  request: DownloadRequest,
  sink: PayloadSink,
  o: TransferOptions = {},
): Promise<TransferResult> {
  const id = o.id ?? randomUUID();
  const chunkSize = o.chunkSize === undefined ? 0 : checkChunkSize(o.chunkSize);
  const level = o.level === undefined ? 0 : checkLevel(o.level);
  const retries = checkCount(o.retries ?? defaultTransferClient.retries, "retries", 0);
  const codec = o.codec ?? "zstd";
  const md = metadataFor(id, o);
  const out = await openSink(sink, 0);
  const hash = newHash();
  let written = 0;
  let wireBytes = 0;
  let attempts = 0;
  let breaks = 0;
  let total = -1;
  try {
    // Bounded by `retries`.
    for (;;) {
      if (o.signal?.aborted) throw fail(Status.CANCELLED, "download aborted");
      attempts++;
      const call = openDownload(
        client,
        {
          transfer_id: id,
          name: request.name,
          offset: written,
          codec,
          level,
          chunk_size: chunkSize,
          attributes: { ...(request.attributes ?? {}) },
        },
        md,
        o,
      );
      const onAbort = () => call.cancel();
      o.signal?.addEventListener("abort", onAbort, { once: true });
      const replies = new MessageQueue<DownloadReplyMsg>(call, 2);
      try {
        const info = (await replies.next())?.info;
        if (info === undefined) throw fail(Status.INTERNAL, "the server sent no info");
        if (info.offset !== written)
          throw fail(Status.INTERNAL, `the server starts at ${info.offset}, asked ${written}`);
        total = info.size;
        // Bounded by the payload: each turn takes one message.
        for (;;) {
          const m = await replies.next();
          if (m === undefined) throw fail(Status.INTERNAL, "the download ended without done");
          if (m.chunk !== undefined) {
            const c = m.chunk;
            if (c.offset !== written)
              throw fail(Status.DATA_LOSS, `chunk at ${c.offset}, expected ${written}`);
            if (c.raw_size < 1 || c.raw_size > 4 * 1024 * 1024)
              throw fail(Status.DATA_LOSS, `chunk raw_size ${c.raw_size} out of range`);
            let raw: Buffer;
            try {
              raw = decodeChunk(codec, c.data, c.raw_size);
            } catch (err) {
              throw fail(Status.DATA_LOSS, `chunk at ${c.offset}: ${(err as Error).message}`);
            }
            wireBytes += c.data.length;
            await out.write(raw, written);
            hash.update(raw);
            written += raw.length;
            breaks = 0;
            o.onProgress?.({ bytes: written, total, wireBytes });
          } else if (m.done !== undefined) {
            const digest = hash.digest("hex");
            if (m.done.size !== written || m.done.digest !== digest)
              throw new TransferError(
                Status.DATA_LOSS,
                `checksum mismatch: server sent ${m.done.size} bytes ${CHECKSUM} ${m.done.digest.slice(0, 64)}, got ${written} bytes ${digest}`,
              );
            return { id, size: written, digest, wireBytes, attempts, resentChunks: 0 };
          }
        }
      } catch (err) {
        call.cancel();
        if (err instanceof TransferError && err.code === Status.DATA_LOSS) throw err;
        if (!retryable(err, o.signal) || attempts > retries) throw asError(err);
        breaks++;
        await pauseAfterBreak(breaks, o.retryDelayMs, o.signal);
      } finally {
        o.signal?.removeEventListener("abort", onAbort);
      }
    }
  } finally {
    await out.close();
  }
}
