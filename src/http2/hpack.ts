// HPACK (RFC 7541): header block decoder and encoder for the frame-level HTTP/2 data path.
//
// One decoder and one encoder per connection direction; each owns its dynamic table, so blocks
// must be decoded (encoded) in the order they travel on the connection.
//
// Decoder: total over any input. Every malformed block is a COMPRESSION_ERROR result (a
// connection error, RFC 9113 §4.3), never an exception. A block whose decoded list passes
// maxHeaderListSize is still decoded to the end, so that the dynamic table stays in sync with the
// peer, but past the limit no strings are made for indexed fields and literals that are not
// inserted are only validated: a large entry referenced by 1-byte indexes many times (the
// "HPACK bomb") costs a few operations per byte of the block.
//
// Encoder: static exact match → indexed; dynamic exact match → indexed; otherwise a literal
// (name indexed when a static or dynamic name matches), with incremental indexing except for
// values that change per call or are large (they would only churn the table) and never-indexed
// for credentials (RFC 7541 §7.1.3). Strings are Huffman-coded when that is shorter.
// Lookups are two Map reads per field (name, then value), never a scan of the table.
//
// Strings are octets: decoded as latin1, and encoded as charCode & 0xff.

import {
  STATIC_BY_NAME,
  STATIC_NAMES,
  STATIC_SIZES,
  STATIC_TABLE_LENGTH,
  STATIC_VALUES,
} from "./hpack-static.ts";
import { DynamicTable, ENTRY_OVERHEAD } from "./hpack-table.ts";
import { huffmanDecode, huffmanDecodedLength, huffmanEncode, huffmanEncodedLength } from "./huffman.ts";
import { latin1String, writeLatin1 } from "./latin1.ts";
import { cachedString, MAX_CACHED } from "./string-cache.ts";

export type HpackError = { kind: "compression-error"; message: string };
export type HpackResult =
  | {
      kind: "ok";
      headers: string[];
      size: number;
      /** Set when the same bytes decoded to this list before with the table as it is now. */
      repeat: RepeatedBlock | undefined;
    }
  | { kind: "too-large"; size: number }
  | HpackError;

export interface HpackDecoderOptions {
  /** Our SETTINGS_HEADER_TABLE_SIZE: the largest dynamic table the peer may make us keep. Default 4096. */
  maxTableSize?: number;
  /** Largest decoded header list (RFC 9113 §6.5.2 accounting: name+value+32 per field). Default 65536. */
  maxHeaderListSize?: number;
}

export interface HpackEncoderOptions {
  /** Our own cap on the dynamic table we keep for the peer, whatever it allows. Default 4096. */
  maxTableSize?: number;
}

/** Defaults of both sides (RFC 9113 §6.5.2 initial SETTINGS_HEADER_TABLE_SIZE is 4096). */
export const hpackDefaults = {
  maxTableSize: 4096,
  maxHeaderListSize: 65536,
} as const;

/** A snapshot of a dynamic table, for tests and diagnostics. */
export interface HpackTableSnapshot {
  /** Newest first (dynamic index 1 first). */
  entries: [string, string][];
  size: number;
  maxSize: number;
}

/** Integers past this are a decoding error (RFC 7541 §5.1 "exceed implementation limits"). */
const MAX_INTEGER = 0x7fffffff;
/** Continuation bytes allowed after the prefix: 5 carry 35 bits, enough for MAX_INTEGER. */
const MAX_CONTINUATION_BYTES = 5;

const INT_TRUNCATED = -1;
const INT_OVERFLOW = -2;

/** Position after the last integer or string read (module scratch: JS is single-threaded here). */
let cursor = 0;

/**
 * Reads an integer with a prefix of `mask` (2^N - 1) bits starting at src[pos]; returns it and
 * sets `cursor`, or returns INT_TRUNCATED / INT_OVERFLOW.
 */
function readInteger(src: Uint8Array, pos: number, end: number, mask: number): number {
  let value = src[pos]! & mask;
  pos++;
  if (value < mask) {
    cursor = pos;
    return value;
  }
  let multiplier = 1;
  for (let k = 0; ; k++) {
    if (pos >= end) return INT_TRUNCATED;
    if (k === MAX_CONTINUATION_BYTES) return INT_OVERFLOW;
    const b = src[pos++]!;
    value += (b & 0x7f) * multiplier;
    if (value > MAX_INTEGER) return INT_OVERFLOW;
    if ((b & 0x80) === 0) break;
    multiplier *= 128;
  }
  cursor = pos;
  return value;
}

function sameBytes(a: Buffer, src: Uint8Array, start: number): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== src[start + i]) return false;
  return true;
}

function fail(message: string): HpackError {
  return { kind: "compression-error", message };
}

function integerError(code: number, what: string): HpackError {
  return fail(
    code === INT_TRUNCATED ? `${what}: integer truncated at block end` : `${what}: integer overflow`,
  );
}

/**
 * A block decoded before that left the dynamic table as it was (only indexed fields and literals
 * without indexing): the same bytes decode to the same list for as long as the table stays as it is.
 * Peers repeat such blocks call after call (a client's request headers once all are indexed, a
 * server's trailers), so their decoding is skipped. `note` is the connection's, e.g. "checked".
 */
export class RepeatedBlock {
  note = 0;
  constructor(
    readonly bytes: Buffer,
    readonly epoch: number,
    readonly headers: readonly string[],
    readonly size: number,
  ) {}
}

/** Blocks remembered per decoder (a response's headers and trailers alternate on one connection). */
const REPEAT_SLOTS = 4;
/** Longer blocks are not remembered. */
const REPEAT_MAX_BYTES = 512;

export class HpackDecoder {
  readonly #table: DynamicTable;
  /** Bumped whenever the dynamic table changes: a remembered block is valid only at its epoch. */
  #epoch = 0;
  readonly #repeats: (RepeatedBlock | undefined)[] = new Array(REPEAT_SLOTS).fill(undefined);
  #repeatNext = 0;
  /** The block being decoded carries a never-indexed field (a credential): not remembered. */
  #sawNeverIndexed = false;
  /** Our advertised SETTINGS_HEADER_TABLE_SIZE: size updates above it are errors. */
  #limit: number;
  readonly #maxList: number;
  /** We lowered our limit below the table's current maximum: the next block must start with an update. */
  #updateRequired = false;
  /** Set by #readString on failure. */
  #stringError = "";

  constructor(o: HpackDecoderOptions = {}) {
    this.#limit = o.maxTableSize ?? hpackDefaults.maxTableSize;
    this.#maxList = o.maxHeaderListSize ?? hpackDefaults.maxHeaderListSize;
    this.#table = new DynamicTable(this.#limit);
  }

  setMaxTableSize(n: number): void {
    this.#limit = n;
    if (n < this.#table.maxSize) this.#updateRequired = true;
  }

  /** The dynamic table, for tests and diagnostics. */
  tableSnapshot(): HpackTableSnapshot {
    const t = this.#table;
    return { entries: t.entries(), size: t.size, maxSize: t.maxSize };
  }

  decode(block: Uint8Array, start = 0, end: number = block.length): HpackResult {
    if (!(start >= 0 && end <= block.length && start <= end)) {
      return fail(`bad block range [${start}, ${end}) of ${block.length} bytes`);
    }
    const length = end - start;
    const epoch = this.#epoch;
    if (length <= REPEAT_MAX_BYTES && !this.#updateRequired) {
      for (let i = 0; i < REPEAT_SLOTS; i++) {
        const r = this.#repeats[i];
        if (
          r !== undefined &&
          r.epoch === epoch &&
          r.bytes.length === length &&
          sameBytes(r.bytes, block, start)
        ) {
          return { kind: "ok", headers: r.headers.slice(), size: r.size, repeat: r };
        }
      }
    }
    try {
      this.#sawNeverIndexed = false;
      const result = this.#decode(block, start, end);
      if (
        result.kind === "ok" &&
        this.#epoch === epoch &&
        length <= REPEAT_MAX_BYTES &&
        length > 0 &&
        !this.#sawNeverIndexed
      ) {
        const r = new RepeatedBlock(
          Buffer.from(block.subarray(start, end)),
          epoch,
          result.headers.slice(),
          result.size,
        );
        this.#repeats[this.#repeatNext] = r;
        this.#repeatNext = (this.#repeatNext + 1) % REPEAT_SLOTS;
        result.repeat = r;
      }
      return result;
    } catch (e) {
      // Not reachable by design (the fuzz test checks for this message); kept so that a bug
      // here can never crash the connection's owner.
      return fail(`internal error: ${String(e)}`);
    }
  }

  #decode(src: Uint8Array, start: number, end: number): HpackResult {
    const table = this.#table;
    const maxList = this.#maxList;
    const headers: string[] = [];
    let size = 0;
    let over = false;
    let pos = start;

    if (this.#updateRequired && (pos >= end || (src[pos]! & 0xe0) !== 0x20)) {
      return fail(
        "dynamic table size update required at the start of the block after SETTINGS_HEADER_TABLE_SIZE was lowered",
      );
    }
    // Size updates are allowed only before the first field (RFC 7541 §4.2).
    while (pos < end && (src[pos]! & 0xe0) === 0x20) {
      const n = readInteger(src, pos, end, 0x1f);
      if (n < 0) return integerError(n, "dynamic table size update");
      pos = cursor;
      if (n > this.#limit) {
        return fail(`dynamic table size update to ${n} exceeds SETTINGS_HEADER_TABLE_SIZE ${this.#limit}`);
      }
      table.setMaxSize(n);
      while (table.size > n) table.evictOldest();
      this.#updateRequired = false;
      this.#epoch++;
    }

    while (pos < end) {
      const b = src[pos]!;
      if (b & 0x80) {
        // Indexed header field (§6.1).
        let index = b & 0x7f;
        if (index === 0x7f) {
          index = readInteger(src, pos, end, 0x7f);
          if (index < 0) return integerError(index, "indexed field");
          pos = cursor;
        } else {
          if (index === 0) return fail("indexed field with index 0");
          pos++;
        }
        if (index <= STATIC_TABLE_LENGTH) {
          size += STATIC_SIZES[index]!;
          if (!over) {
            if (size > maxList) over = true;
            else headers.push(STATIC_NAMES[index]!, STATIC_VALUES[index]!);
          }
        } else {
          const d = index - STATIC_TABLE_LENGTH;
          if (d > table.count)
            return fail(`index ${index} past the end of the table (${table.count} dynamic entries)`);
          size += table.entrySize(d);
          if (!over) {
            if (size > maxList) over = true;
            else headers.push(table.name(d), table.value(d));
          }
        }
        continue;
      }

      let mask: number;
      let indexing: boolean;
      if (b & 0x40) {
        mask = 0x3f; // literal with incremental indexing (§6.2.1)
        indexing = true;
      } else if (b & 0x20) {
        return fail("dynamic table size update after the first header field");
      } else {
        mask = 0x0f; // literal without indexing (§6.2.2) or never indexed (§6.2.3)
        indexing = false;
      }

      const nameIndex = readInteger(src, pos, end, mask);
      if (nameIndex < 0) return integerError(nameIndex, "literal field name index");
      pos = cursor;
      if (indexing || !over) {
        // The strings are needed: for the table, or for the list.
        let name: string;
        if (nameIndex === 0) {
          const s = this.#readString(src, pos, end, true);
          if (s === undefined) return fail(`literal field name: ${this.#stringError}`);
          name = s;
          pos = cursor;
        } else if (nameIndex <= STATIC_TABLE_LENGTH) {
          name = STATIC_NAMES[nameIndex]!;
        } else {
          const d = nameIndex - STATIC_TABLE_LENGTH;
          if (d > table.count)
            return fail(`name index ${nameIndex} past the end of the table (${table.count} dynamic entries)`);
          name = table.name(d);
        }
        // A never-indexed value (a credential) stays out of the shared string cache.
        const value = this.#readString(src, pos, end, (b & 0xf0) !== 0x10);
        if (value === undefined) return fail(`literal field value: ${this.#stringError}`);
        pos = cursor;
        const entrySize = name.length + value.length + ENTRY_OVERHEAD;
        size += entrySize;
        if (!over) {
          if (size > maxList) over = true;
          else headers.push(name, value);
        }
        if ((b & 0xf0) === 0x10) this.#sawNeverIndexed = true;
        if (indexing) {
          this.#epoch++;
          // §4.4: evict until the entry fits; an entry larger than the table empties it.
          const max = table.maxSize;
          while (table.count > 0 && table.size + entrySize > max) table.evictOldest();
          if (entrySize <= max) table.add(name, value, entrySize);
        }
      } else {
        // Past the limit and not inserted: validate and count, make no strings.
        let nameLength: number;
        if (nameIndex === 0) {
          nameLength = this.#skipString(src, pos, end);
          if (nameLength < 0) return fail(`literal field name: ${this.#stringError}`);
          pos = cursor;
        } else if (nameIndex <= STATIC_TABLE_LENGTH) {
          nameLength = STATIC_NAMES[nameIndex]!.length;
        } else {
          const d = nameIndex - STATIC_TABLE_LENGTH;
          if (d > table.count)
            return fail(`name index ${nameIndex} past the end of the table (${table.count} dynamic entries)`);
          nameLength = table.name(d).length;
        }
        const valueLength = this.#skipString(src, pos, end);
        if (valueLength < 0) return fail(`literal field value: ${this.#stringError}`);
        pos = cursor;
        size += nameLength + valueLength + ENTRY_OVERHEAD;
      }
    }

    if (over) return { kind: "too-large", size };
    return { kind: "ok", headers, size, repeat: undefined };
  }

  /** Reads a string literal (§5.2) at src[pos]; sets `cursor` after it, or returns undefined. */
  #readString(src: Uint8Array, pos: number, end: number, cache: boolean): string | undefined {
    if (pos >= end) {
      this.#stringError = "string missing at block end";
      return undefined;
    }
    const huffman = src[pos]! & 0x80;
    const length = readInteger(src, pos, end, 0x7f);
    if (length < 0) {
      this.#stringError = length === INT_TRUNCATED ? "string length truncated" : "string length overflow";
      return undefined;
    }
    const from = cursor;
    const to = from + length;
    if (to > end) {
      this.#stringError = `string of ${length} bytes runs past the block end`;
      return undefined;
    }
    cursor = to;
    const s =
      cache && length <= MAX_CACHED
        ? cachedString(src, from, to, huffman !== 0)
        : huffman === 0
          ? latin1String(src, from, to)
          : huffmanDecode(src, from, to);
    if (s === undefined)
      this.#stringError = "invalid Huffman code (EOS, or padding not all ones or over 7 bits)";
    // The string functions do not touch `cursor`.
    return s;
  }

  /** Like #readString but returns only the decoded length (-1 on error). */
  #skipString(src: Uint8Array, pos: number, end: number): number {
    if (pos >= end) {
      this.#stringError = "string missing at block end";
      return -1;
    }
    const huffman = src[pos]! & 0x80;
    const length = readInteger(src, pos, end, 0x7f);
    if (length < 0) {
      this.#stringError = length === INT_TRUNCATED ? "string length truncated" : "string length overflow";
      return -1;
    }
    const from = cursor;
    const to = from + length;
    if (to > end) {
      this.#stringError = `string of ${length} bytes runs past the block end`;
      return -1;
    }
    cursor = to;
    if (huffman === 0) return length;
    const n = huffmanDecodedLength(src, from, to);
    if (n < 0) this.#stringError = "invalid Huffman code (EOS, or padding not all ones or over 7 bits)";
    return n;
  }
}

// ---- encoder --------------------------------------------------------------------------------

const MODE_INDEX = 0;
const MODE_NO_INDEX = 1;
const MODE_NEVER_INDEX = 2;

/** Names whose values are not worth a table entry, or must never be indexed (RFC 7541 §7.1.3). */
const NAME_MODES: ReadonlyMap<string, number> = new Map([
  ["grpc-timeout", MODE_NO_INDEX],
  ["content-length", MODE_NO_INDEX],
  ["authorization", MODE_NEVER_INDEX],
  ["cookie", MODE_NEVER_INDEX],
  ["proxy-authorization", MODE_NEVER_INDEX],
]);
/** Values longer than this are never indexed. */
const MAX_INDEXED_VALUE = 256;
/** `-bin` values (base64, usually unique per call) longer than this are never indexed. */
const MAX_INDEXED_BIN_VALUE = 64;

/** What the encoder knows about one name: its static entries, its mode and its dynamic entries. */
class NameInfo {
  /** Lowest static index with this name, 0 if none. */
  readonly staticIndex: number;
  /** The value of the name's only static entry, or undefined (none, or several: see staticValues). */
  readonly staticValue: string | undefined;
  /** Static (value → index) when the name has several static entries (:method, :path, :status…). */
  readonly staticValues: ReadonlyMap<string, number> | undefined;
  readonly mode: number;
  /** Sequence number of the newest dynamic entry with this name, -1 if none. */
  latest = -1;
  /** Dynamic entries with this name: value → sequence number (made on first insertion). */
  values: Map<string, number> | undefined = undefined;
  /**
   * The last exact match found for this name: most names carry one value call after call, and a
   * string compare (often of the very same string object) is cheaper than a Map lookup. A static
   * match has memoStatic > 0; a dynamic one is valid while memoSeq >= the table's evicted count.
   */
  memoValue: string | undefined = undefined;
  memoStatic = 0;
  memoSeq = -1;
  /** The name as an encoded string literal, kept for names sent as literals every time (grpc-timeout). */
  literal: Uint8Array | undefined = undefined;
  /** The last value sent as a literal without indexing, and its encoding: per-call values often repeat. */
  lastValue: string | undefined = undefined;
  lastValueLiteral: Uint8Array | undefined = undefined;

  constructor(staticIndex: number, staticValues: ReadonlyMap<string, number> | undefined, mode: number) {
    this.staticIndex = staticIndex;
    this.mode = mode;
    if (staticValues !== undefined && staticValues.size === 1) {
      this.staticValue = staticValues.keys().next().value;
      this.staticValues = undefined;
    } else {
      this.staticValue = undefined;
      this.staticValues = staticValues;
    }
  }

  /** Index of a static entry with exactly this value, or 0. */
  staticExact(value: string): number {
    if (this.staticValue !== undefined) return value === this.staticValue ? this.staticIndex : 0;
    return this.staticValues?.get(value) ?? 0;
  }
}

/** The string literal encoding of `s`, for the encoder's per-name caches. */
function literalBytes(s: string): Uint8Array {
  const scratch = new Uint8Array(s.length + 6);
  return scratch.slice(0, writeString(scratch, 0, s));
}

/** Copies a cached literal; short, so a loop beats set() (which needs a view). */
function copyInto(out: Uint8Array, pos: number, bytes: Uint8Array): number {
  for (let k = 0; k < bytes.length; k++) out[pos + k] = bytes[k]!;
  return pos + bytes.length;
}

/** Values up to this length have their no-index literal cached per name. */
const MAX_CACHED_VALUE = 32;

/** Room a field can take besides its strings: 1 prefix byte + 5 length bytes, three times over. */
const FIELD_OVERHEAD = 24;

export class HpackEncoder {
  readonly #cap: number;
  readonly #table: DynamicTable;
  /** Names with a static entry or a special mode stay here for good; others while in the table. */
  readonly #names = new Map<string, NameInfo>();
  /** Size updates to emit at the start of the next block: the smallest since the last block, then the final. */
  #pendingMin = -1;
  #pendingFinal = -1;
  #buf: Uint8Array = new Uint8Array(1024);
  /** Bumped whenever the dynamic table changes (insert, evict, resize). */
  #epoch = 0;
  /** Lists encoded without changing the table, and their bytes (valid while the epoch holds). */
  readonly #repeats: ({ headers: string[]; epoch: number; bytes: Uint8Array } | undefined)[] = new Array(
    REPEAT_SLOTS,
  ).fill(undefined);
  #repeatNext = 0;
  /** The list being encoded has a never-indexed field (a credential): not remembered. */
  #sawNeverIndex = false;

  constructor(o: HpackEncoderOptions = {}) {
    this.#cap = o.maxTableSize ?? hpackDefaults.maxTableSize;
    // The peer's decoder starts at the protocol default; if our cap is smaller, say so first.
    const initial = Math.min(hpackDefaults.maxTableSize, this.#cap);
    this.#table = new DynamicTable(initial);
    if (initial !== hpackDefaults.maxTableSize) {
      this.#pendingMin = initial;
      this.#pendingFinal = initial;
    }
    for (const [name, s] of STATIC_BY_NAME) {
      this.#names.set(name, new NameInfo(s.index, s.values, NAME_MODES.get(name) ?? MODE_INDEX));
    }
    for (const [name, mode] of NAME_MODES) {
      if (!this.#names.has(name)) this.#names.set(name, new NameInfo(0, undefined, mode));
    }
  }

  setPeerMaxTableSize(n: number): void {
    const size = Math.min(n, this.#cap);
    const current = this.#pendingFinal >= 0 ? this.#pendingFinal : this.#table.maxSize;
    if (size === current) return;
    this.#pendingMin = this.#pendingMin >= 0 ? Math.min(this.#pendingMin, size) : size;
    this.#pendingFinal = size;
  }

  /** The dynamic table, for tests and diagnostics. */
  tableSnapshot(): HpackTableSnapshot {
    const t = this.#table;
    return { entries: t.entries(), size: t.size, maxSize: t.maxSize };
  }

  /** Encodes `headers` into a new buffer. */
  encode(headers: readonly string[]): Buffer {
    const n = this.encodeToScratch(headers);
    const out = this.#buf;
    const block = Buffer.allocUnsafe(n);
    if (n <= 64) for (let k = 0; k < n; k++) block[k] = out[k]!;
    else block.set(out.subarray(0, n));
    return block;
  }

  /**
   * The encoder's own buffer: after `encodeToScratch(h)` returns n, its first n bytes are the block
   * (valid until the next encode). For callers that copy the block straight into their frames.
   */
  get scratch(): Uint8Array {
    return this.#buf;
  }

  /** Encodes `headers` into `scratch`; returns the block's length. */
  encodeToScratch(headers: readonly string[]): number {
    if (this.#pendingFinal < 0) {
      const known = this.#repeated(headers);
      if (known !== undefined) {
        const n = known.length;
        if (n > this.#buf.length) this.#grow(n, 0);
        const out = this.#buf;
        for (let k = 0; k < n; k++) out[k] = known[k]!;
        return n;
      }
    }
    const epoch = this.#epoch;
    this.#sawNeverIndex = false;
    const n = this.#encode(headers);
    if (epoch === this.#epoch && !this.#sawNeverIndex && n <= REPEAT_MAX_BYTES && headers.length <= 64) {
      // The list left the table as it was: the same list encodes to the same bytes until it changes.
      this.#repeats[this.#repeatNext] = {
        headers: headers.slice(),
        epoch,
        bytes: this.#buf.slice(0, n),
      };
      this.#repeatNext = (this.#repeatNext + 1) % REPEAT_SLOTS;
    }
    return n;
  }

  /** The bytes a list equal to `headers` was encoded to at the table's current state, if remembered. */
  #repeated(headers: readonly string[]): Uint8Array | undefined {
    const epoch = this.#epoch;
    const length = headers.length;
    next: for (let i = 0; i < REPEAT_SLOTS; i++) {
      const r = this.#repeats[i];
      if (r === undefined || r.epoch !== epoch || r.headers.length !== length) continue;
      const h = r.headers;
      for (let k = 0; k < length; k++) if (h[k] !== headers[k]) continue next;
      return r.bytes;
    }
    return undefined;
  }

  #encode(headers: readonly string[]): number {
    let out = this.#buf;
    let pos = 0;
    if (this.#pendingFinal >= 0) {
      if (this.#pendingMin < this.#pendingFinal) {
        pos = writeInteger(out, pos, 0x20, 0x1f, this.#pendingMin);
        this.#resize(this.#pendingMin);
      }
      pos = writeInteger(out, pos, 0x20, 0x1f, this.#pendingFinal);
      this.#resize(this.#pendingFinal);
      this.#pendingMin = -1;
      this.#pendingFinal = -1;
    }
    const table = this.#table;
    const names = this.#names;
    const n = headers.length - (headers.length & 1);
    for (let i = 0; i < n; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      const room = pos + name.length + value.length + FIELD_OVERHEAD;
      if (room > out.length) out = this.#grow(room, pos);

      const info = names.get(name);
      let mode = MODE_INDEX;
      let nameIndex = 0;
      if (info !== undefined) {
        mode = info.mode;
        if (mode === MODE_INDEX) {
          if (value === info.memoValue) {
            if (info.memoStatic !== 0) {
              out[pos++] = 0x80 | info.memoStatic;
              continue;
            }
            if (info.memoSeq >= table.evicted) {
              pos = writeInteger(out, pos, 0x80, 0x7f, STATIC_TABLE_LENGTH + table.inserted - info.memoSeq);
              continue;
            }
          }
          const s = info.staticExact(value);
          if (s !== 0) {
            info.memoValue = value;
            info.memoStatic = s;
            pos = writeInteger(out, pos, 0x80, 0x7f, s);
            continue;
          }
          const seq = info.values?.get(value);
          if (seq !== undefined) {
            info.memoValue = value;
            info.memoStatic = 0;
            info.memoSeq = seq;
            pos = writeInteger(out, pos, 0x80, 0x7f, STATIC_TABLE_LENGTH + table.inserted - seq);
            continue;
          }
        }
        nameIndex =
          info.staticIndex !== 0
            ? info.staticIndex
            : info.latest >= 0
              ? STATIC_TABLE_LENGTH + table.inserted - info.latest
              : 0;
      }
      const entrySize = name.length + value.length + ENTRY_OVERHEAD;
      if (
        mode === MODE_INDEX &&
        (value.length > MAX_INDEXED_VALUE ||
          entrySize > table.maxSize ||
          (value.length > MAX_INDEXED_BIN_VALUE && name.endsWith("-bin")))
      ) {
        mode = MODE_NO_INDEX;
      }

      if (mode === MODE_INDEX) {
        pos = writeInteger(out, pos, 0x40, 0x3f, nameIndex);
        if (nameIndex === 0) pos = writeString(out, pos, name);
        pos = writeString(out, pos, value);
        this.#insert(name, value, entrySize, info);
        continue;
      }
      if (mode === MODE_NEVER_INDEX) this.#sawNeverIndex = true;
      pos = writeInteger(out, pos, mode === MODE_NEVER_INDEX ? 0x10 : 0x00, 0x0f, nameIndex);
      if (info === undefined || info.mode === MODE_INDEX) {
        // A name sent without indexing only for its value's size: no caches.
        if (nameIndex === 0) pos = writeString(out, pos, name);
        pos = writeString(out, pos, value);
        continue;
      }
      // grpc-timeout, content-length, credentials: the same name, and often the same value, each call.
      if (nameIndex === 0) {
        info.literal ??= literalBytes(name);
        pos = copyInto(out, pos, info.literal);
      }
      if (value === info.lastValue) {
        pos = copyInto(out, pos, info.lastValueLiteral!);
      } else if (value.length <= MAX_CACHED_VALUE && mode === MODE_NO_INDEX) {
        info.lastValue = value;
        info.lastValueLiteral = literalBytes(value);
        pos = copyInto(out, pos, info.lastValueLiteral);
      } else {
        pos = writeString(out, pos, value);
      }
    }
    return pos;
  }

  #grow(room: number, pos: number): Uint8Array {
    const bigger = new Uint8Array(Math.max(room, this.#buf.length * 2));
    bigger.set(this.#buf.subarray(0, pos));
    this.#buf = bigger;
    return bigger;
  }

  #insert(name: string, value: string, entrySize: number, known: NameInfo | undefined): void {
    this.#epoch++;
    const table = this.#table;
    const max = table.maxSize;
    while (table.count > 0 && table.size + entrySize > max) this.#evict();
    // Callers never insert an entry larger than the table (they send it without indexing).
    let info = known;
    if (info === undefined || !this.#names.has(name)) {
      // Unknown name, or its NameInfo was dropped by the eviction just made.
      info = new NameInfo(0, undefined, MODE_INDEX);
      this.#names.set(name, info);
    }
    const seq = table.inserted;
    table.add(name, value, entrySize);
    info.latest = seq;
    info.values ??= new Map();
    info.values.set(value, seq);
  }

  #evict(): void {
    this.#epoch++;
    const table = this.#table;
    const seq = table.evicted;
    const name = table.oldestName();
    const info = this.#names.get(name);
    if (info !== undefined) {
      const value = table.oldestValue();
      if (info.values?.get(value) === seq) info.values.delete(value);
      if (info.latest === seq) {
        // FIFO: every older entry with this name is gone already.
        info.latest = -1;
        if (info.staticIndex === 0 && info.mode === MODE_INDEX) this.#names.delete(name);
      }
    }
    table.evictOldest();
  }

  #resize(n: number): void {
    this.#epoch++;
    this.#table.setMaxSize(n);
    while (this.#table.size > n) this.#evict();
  }
}

/** Writes an integer with an N-bit prefix (mask = 2^N - 1) after the `flags` bits (§5.1). */
function writeInteger(out: Uint8Array, pos: number, flags: number, mask: number, value: number): number {
  if (value < mask) {
    out[pos++] = flags | value;
    return pos;
  }
  out[pos++] = flags | mask;
  let rest = value - mask;
  while (rest >= 128) {
    out[pos++] = (rest & 0x7f) | 0x80;
    rest = Math.floor(rest / 128);
  }
  out[pos++] = rest;
  return pos;
}

/** Writes a string literal (§5.2), Huffman-coded when that is shorter. */
function writeString(out: Uint8Array, pos: number, s: string): number {
  const huffmanLength = huffmanEncodedLength(s);
  if (huffmanLength < s.length) {
    pos = writeInteger(out, pos, 0x80, 0x7f, huffmanLength);
    return huffmanEncode(s, out, pos);
  }
  pos = writeInteger(out, pos, 0x00, 0x7f, s.length);
  return writeLatin1(s, out, pos);
}
