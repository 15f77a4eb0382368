import { createRequire } from "node:module";
import * as zlib from "node:zlib";

/**
 * Chunk codecs. Every chunk is one independent zstd frame, so a receiver decodes each on its own (and a
 * resumed transfer needs no codec state), with the raw size known in advance from the chunk message:
 * decoding is bounded by it, so a small frame cannot expand into gigabytes (a zstd bomb).
 *
 * zstd comes from `node:zlib` when the running Node has it (22.15+, 24), else from the `zstd-napi`
 * package (Node-API bindings that build the bundled libzstd from source at install; no download).
 * Both are synchronous: a 1 MiB chunk takes about 1–3 ms at level 3 on our machine.
 */

export type CodecName = "zstd" | "identity";
export const CODECS: readonly CodecName[] = ["zstd", "identity"];

export interface Zstd {
  /** "node:zlib" or "zstd-napi": which implementation runs. */
  readonly implementation: string;
  compress(raw: Uint8Array, level: number): Buffer;
  /** Decodes exactly `rawSize` bytes or throws. */
  decompress(data: Uint8Array, rawSize: number): Buffer;
}

/** zlib's zstd, which @types/node 20 does not describe. */
interface ZlibZstd {
  zstdCompressSync(buf: Uint8Array, options: { params: Record<number, number> }): Buffer;
  zstdDecompressSync(buf: Uint8Array, options: { maxOutputLength: number }): Buffer;
  constants: { ZSTD_c_compressionLevel: number };
}

function fromZlib(z: ZlibZstd): Zstd {
  return {
    implementation: "node:zlib",
    compress: (raw, level) =>
      z.zstdCompressSync(raw, { params: { [z.constants.ZSTD_c_compressionLevel]: level } }),
    decompress: (data, rawSize) => {
      const out = z.zstdDecompressSync(data, { maxOutputLength: Math.max(rawSize, 1) });
      if (out.length !== rawSize) throw new Error(`decoded ${out.length} bytes, expected ${rawSize}`);
      return out;
    },
  };
}

/** The parts of zstd-napi's low-level binding we use (zstd-napi/binding.d.ts). */
interface NapiBinding {
  CCtx: new () => { compress(dst: Uint8Array, src: Uint8Array, level: number): number };
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  compressBound(size: number): number;
  getFrameContentSize(frame: Uint8Array): number | null;
}

function fromNapi(b: NapiBinding): Zstd {
  // One context each, reused: contexts keep their tables between calls (zstd's advice for many small
  // frames). Calls are synchronous, so one per thread is safe.
  const cctx = new b.CCtx();
  const dctx = new b.DCtx();
  // Frames are written into one scratch buffer and copied out at their size: a chunk leaves no
  // compressBound-sized garbage behind (which, at 1 MiB a chunk, is what made RSS grow).
  let scratch = Buffer.alloc(0);
  return {
    implementation: "zstd-napi",
    compress: (raw, level) => {
      const bound = b.compressBound(raw.length);
      if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(bound);
      const n = cctx.compress(scratch, raw, level);
      return Buffer.from(scratch.subarray(0, n));
    },
    decompress: (data, rawSize) => {
      const declared = b.getFrameContentSize(data);
      if (declared !== null && declared !== rawSize)
        throw new Error(`frame says ${declared} bytes, chunk says ${rawSize}`);
      // ZSTD_decompressDCtx never writes past dst: output is bounded by rawSize.
      const dst = Buffer.allocUnsafe(rawSize);
      const n = dctx.decompress(dst, data);
      if (n !== rawSize) throw new Error(`decoded ${n} bytes, expected ${rawSize}`);
      return dst;
    },
  };
}

let chosen: Zstd | undefined;

/** The zstd implementation for this process (chosen once). */
export function zstd(): Zstd {
  if (chosen !== undefined) return chosen;
  const z = zlib as unknown as Partial<ZlibZstd>;
  if (typeof z.zstdCompressSync === "function" && typeof z.zstdDecompressSync === "function") {
    chosen = fromZlib(z as ZlibZstd);
  } else {
    const require = createRequire(import.meta.url);
    chosen = fromNapi(require("zstd-napi/binding") as NapiBinding);
  }
  return chosen;
}

export const defaultLevel = 3;

export function checkLevel(level: number, field = "level"): number {
  if (!Number.isInteger(level) || level < -7 || level > 22)
    throw new RangeError(`${field}: must be an integer from -7 to 22, got ${level}`);
  return level;
}

export function encodeChunk(codec: CodecName, raw: Buffer, level: number): Buffer {
  return codec === "zstd" ? zstd().compress(raw, level) : raw;
}

/** Decodes one chunk to exactly `rawSize` bytes; throws Error with the reason otherwise. */
export function decodeChunk(codec: CodecName, data: Buffer, rawSize: number): Buffer {
  if (codec === "identity") {
    if (data.length !== rawSize) throw new Error(`chunk has ${data.length} bytes, says ${rawSize}`);
    return data;
  }
  return zstd().decompress(data, rawSize);
}

export function parseCodec(name: string, field = "codec"): CodecName {
  if (name === "" || name === "zstd") return "zstd";
  if (name === "identity") return "identity";
  throw new RangeError(`${field}: unknown codec "${name.slice(0, 40)}"; known: ${CODECS.join(", ")}`);
}
