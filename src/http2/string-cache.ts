// A small direct-mapped cache from a string literal's wire bytes to its decoded string.
//
// Literal strings repeat from call to call (names and values the peer does not index, such as
// grpc-timeout, or :path from encoders that never index it). A hit costs a hash and a compare
// over the encoded bytes instead of a Huffman decode and a string allocation, and hands back the
// same string object every time, whose hash V8 has already computed for the Map lookups that
// follow (the encoder's). Keys are kept in one preallocated arena: a miss allocates nothing but
// the decoded string itself. Shared by all decoders: strings are immutable values.

import { huffmanDecode } from "./huffman.ts";
import { latin1String } from "./latin1.ts";

const SLOTS = 1024;
/** Longest encoded literal worth caching; longer ones are usually unique (tokens, -bin values). */
export const MAX_CACHED = 48;

const keys = new Uint8Array(SLOTS * MAX_CACHED);
/** Encoded length | 0x100 when Huffman-coded; -1 for an empty slot. */
const tags = new Int32Array(SLOTS).fill(-1);
const values: string[] = new Array<string>(SLOTS).fill("");

/**
 * The string of the literal src[from, to) (Huffman-coded if `huffman`), or undefined when the
 * Huffman code is invalid. The caller checks to - from <= MAX_CACHED.
 */
export function cachedString(
  src: Uint8Array,
  from: number,
  to: number,
  huffman: boolean,
): string | undefined {
  const n = to - from;
  const tag = huffman ? n | 0x100 : n;
  let h = 0x811c9dc5 ^ tag;
  for (let i = from; i < to; i++) h = Math.imul(h ^ src[i]!, 0x01000193);
  const slot = (h ^ (h >>> 15)) & (SLOTS - 1);
  const base = slot * MAX_CACHED;
  if (tags[slot] === tag) {
    let i = 0;
    while (i < n && keys[base + i] === src[from + i]) i++;
    if (i === n) return values[slot];
  }
  const s = huffman ? huffmanDecode(src, from, to) : latin1String(src, from, to);
  if (s === undefined) return undefined;
  for (let i = 0; i < n; i++) keys[base + i] = src[from + i]!;
  tags[slot] = tag;
  values[slot] = s;
  return s;
}
