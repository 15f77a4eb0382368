// HPACK Huffman code, RFC 7541 Appendix B.
//
// The RFC's code is canonical (within one length, codes increase with the symbol), so only the
// 257 code lengths are written here; the codes are rebuilt from them at load time
// (huffman.test.ts checks them against an independent table).
//
// Decoding walks a 4-bit state machine, the approach of nghttp2's nghttp2_hd_huffman.c: the
// states are the 256 internal nodes of the code tree, and each (state, nibble) transition says
// the next state, whether a symbol was completed (at most one: the shortest code is 5 bits) and
// whether the bits seen since the last symbol are a valid padding (all ones, at most 7 of them).
// Two table reads per input byte, no per-bit loop.
//
// Strings are octets: characters are taken as latin1 (charCode & 0xff); header values on the wire
// are bytes, gRPC metadata is ASCII and `-bin` values are base64.

import { latin1String } from "./latin1.ts";

/** Code length in bits of symbols 0..255 and EOS (256). RFC 7541 Appendix B, column "len". */
const CODE_LENGTHS = Uint8Array.from(
  (
    "13,23,28,28,28,28,28,28,28,24,30,28,28,30,28,28,28,28,28,28,28,28,30,28,28,28,28,28,28,28,28,28," +
    "6,10,10,12,13,6,8,11,10,10,8,11,8,6,6,6,5,5,5,6,6,6,6,6,6,6,7,8,15,6,12,10," +
    "13,6,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,8,7,8,13,19,13,14,6," +
    "15,5,6,5,6,5,6,6,6,5,7,7,6,6,6,5,6,7,6,5,5,6,7,7,7,7,7,15,11,14,13,28," +
    "20,22,20,20,22,22,22,23,22,23,23,23,23,23,24,23,24,24,22,23,24,23,23,23,23,21,22,23,22,23,23,24," +
    "22,21,20,22,22,23,23,21,23,22,22,24,21,22,23,23,21,21,22,21,23,22,23,23,20,22,22,22,23,22,22,23," +
    "26,26,20,19,22,23,22,25,26,26,26,27,27,26,24,25,19,21,26,27,27,26,27,24,21,21,26,26,28,27,27,27," +
    "20,24,20,21,22,21,21,23,22,22,25,25,24,24,26,23,26,27,26,26,27,27,27,27,27,28,27,27,27,27,27,26,30"
  )
    .split(",")
    .map(Number),
);

const EOS = 256;

/** Canonical codes, MSB-first, right-aligned in `length` bits. Exported for the table test. */
export const HUFFMAN_CODES: Uint32Array = (() => {
  const codes = new Uint32Array(257);
  const order = Array.from({ length: 257 }, (_, s) => s).sort(
    (a, b) => CODE_LENGTHS[a]! - CODE_LENGTHS[b]! || a - b,
  );
  let code = 0;
  let prevLength = CODE_LENGTHS[order[0]!]!;
  order.forEach((symbol, i) => {
    const length = CODE_LENGTHS[symbol]!;
    if (i > 0) code = (code + 1) * 2 ** (length - prevLength);
    prevLength = length;
    codes[symbol] = code;
  });
  return codes;
})();

export const HUFFMAN_CODE_LENGTHS: Uint8Array = CODE_LENGTHS;

// ---- decoder state machine ------------------------------------------------------------------

const T_EMIT = 0x100; // a symbol was completed; it is in bits 16..23
const T_ACCEPT = 0x200; // bits since the last symbol are a valid end padding
const T_FAIL = 0x400; // EOS decoded: invalid

/** transitions[(state << 4) | nibble] = nextState | flags | (symbol << 16). */
const TRANSITIONS: Int32Array = (() => {
  // Build the code tree: internal nodes 0..255 (0 = root); child slots hold a node number,
  // or -(symbol + 1) for a leaf.
  const children = new Int32Array(512).fill(0);
  const allOnesDepth = new Int16Array(256).fill(-1); // depth if the path from the root is all ones
  allOnesDepth[0] = 0;
  let nodes = 1;
  for (let symbol = 0; symbol <= EOS; symbol++) {
    const length = CODE_LENGTHS[symbol]!;
    const code = HUFFMAN_CODES[symbol]!;
    let node = 0;
    for (let bit = length - 1; bit >= 0; bit--) {
      const b = Math.floor(code / 2 ** bit) & 1;
      const slot = node * 2 + b;
      if (bit === 0) {
        children[slot] = -(symbol + 1);
      } else {
        if (children[slot] === 0) {
          const depth = length - bit;
          children[slot] = nodes;
          allOnesDepth[nodes] = b === 1 && allOnesDepth[node] === depth - 1 ? depth : -1;
          nodes++;
        }
        node = children[slot]!;
      }
    }
  }
  const table = new Int32Array(256 * 16);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let entry = 0;
      for (let bit = 3; bit >= 0; bit--) {
        const child = children[node * 2 + ((nibble >> bit) & 1)]!;
        if (child < 0) {
          const symbol = -child - 1;
          if (symbol === EOS) {
            entry |= T_FAIL;
            break;
          }
          entry |= T_EMIT | (symbol << 16);
          node = 0;
        } else {
          node = child;
        }
      }
      const ones = allOnesDepth[node]!;
      if (ones >= 0 && ones <= 7) entry |= T_ACCEPT;
      table[(state << 4) | nibble] = entry | node;
    }
  }
  return table;
})();

/** Scratch output for decoding. Grows as needed. */
let scratch = new Uint8Array(256);

/**
 * Decodes src[start, end) into the module scratch buffer; returns the decoded length or -1 when
 * the input is invalid (EOS inside, or a padding longer than 7 bits or not all ones).
 */
function decodeToScratch(src: Uint8Array, start: number, end: number): number {
  // Every symbol is at least 5 bits long.
  const most = (((end - start) * 8) / 5) | 0;
  if (scratch.length < most) scratch = new Uint8Array(Math.max(most, scratch.length * 2));
  const out = scratch;
  let n = 0;
  let state = 0;
  let accept = true;
  for (let i = start; i < end; i++) {
    const byte = src[i]!;
    let t = TRANSITIONS[(state << 4) | (byte >> 4)]!;
    if (t & T_FAIL) return -1;
    if (t & T_EMIT) out[n++] = t >> 16;
    t = TRANSITIONS[((t & 0xff) << 4) | (byte & 0x0f)]!;
    if (t & T_FAIL) return -1;
    if (t & T_EMIT) out[n++] = t >> 16;
    state = t & 0xff;
    accept = (t & T_ACCEPT) !== 0;
  }
  return accept ? n : -1;
}

/** Decodes a Huffman-coded string literal; undefined when it is invalid. */
export function huffmanDecode(src: Uint8Array, start: number, end: number): string | undefined {
  const n = decodeToScratch(src, start, end);
  if (n < 0) return undefined;
  return latin1String(scratch, 0, n);
}

/**
 * The decoded length of a Huffman-coded string, or -1 when it is invalid: validates without
 * making a string (the decoder's path for fields past the header-list limit).
 */
export function huffmanDecodedLength(src: Uint8Array, start: number, end: number): number {
  return decodeToScratch(src, start, end);
}

// ---- encoder --------------------------------------------------------------------------------

/** Huffman-encoded length in bytes of a latin1/ASCII string. */
export function huffmanEncodedLength(s: string): number {
  let bits = 0;
  for (let i = 0; i < s.length; i++) bits += CODE_LENGTHS[s.charCodeAt(i) & 0xff]!;
  return (bits + 7) >> 3;
}

/**
 * Writes the Huffman code of `s` at out[offset..] (the caller made room: huffmanEncodedLength)
 * and returns the offset after it. The last byte is padded with ones (the EOS prefix).
 */
export function huffmanEncode(s: string, out: Uint8Array, offset: number): number {
  // `acc` holds `pending` (< 8) bits not yet written; a code of up to 25 bits still fits in 32.
  let acc = 0;
  let pending = 0;
  let o = offset;
  for (let i = 0; i < s.length; i++) {
    const symbol = s.charCodeAt(i) & 0xff;
    let length = CODE_LENGTHS[symbol]!;
    let code = HUFFMAN_CODES[symbol]!;
    if (length > 24) {
      // Rare (control and high bytes): push the top bits first so the accumulator never overflows.
      const high = length - 16;
      acc = (acc << high) | (code >>> 16);
      pending += high;
      while (pending >= 8) {
        pending -= 8;
        out[o++] = acc >>> pending;
      }
      acc &= (1 << pending) - 1;
      code &= 0xffff;
      length = 16;
    }
    acc = (acc << length) | code;
    pending += length;
    while (pending >= 8) {
      pending -= 8;
      out[o++] = acc >>> pending;
    }
    acc &= (1 << pending) - 1;
  }
  if (pending > 0) out[o++] = (acc << (8 - pending)) | (0xff >> pending);
  return o;
}
