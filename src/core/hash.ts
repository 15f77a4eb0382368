/**
 * XXH64 (https://github.com/Cyan4973/xxHash, doc/xxhash_spec.md), the hash gRFC A42 and Envoy's
 * ring_hash use for both ring entries and request hashes (`XXH64()` with seed 0).
 *
 * Why 32-bit halves and not BigInt: a pick hashes one header per call, and BigInt arithmetic
 * allocates on every operation. Each 64-bit lane is kept as two unsigned 32-bit numbers (hi, lo);
 * multiplication splits into 16-bit limbs so every partial product stays exact in a double.
 * Results go through module-level registers (`rh`, `rl`) so the hot path allocates nothing but the
 * returned Hash64. Pure and synchronous.
 */

/** An unsigned 64-bit hash as two unsigned 32-bit halves. Compare `hi` first, then `lo`. */
export interface Hash64 {
  readonly hi: number;
  readonly lo: number;
}

// The five XXH64 primes, split into halves.
const P1H = 0x9e3779b1;
const P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d;
const P2L = 0x27d4eb4f;
const P3H = 0x165667b1;
const P3L = 0x9e3779f9;
const P4H = 0x85ebca77;
const P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f;
const P5L = 0x165667c5;
// 2^64 − P1, for v4 = seed − P1 (P1L ≠ 0, so the low half does not borrow from the high half).
const NEG_P1H = ~P1H >>> 0;
const NEG_P1L = 0x100000000 - P1L;

// Result registers of the 64-bit helpers below.
let rh = 0;
let rl = 0;

/** High 32 bits of the 64-bit product of two unsigned 32-bit numbers. */
function mulHi32(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  return (a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16)) >>> 0;
}

/** (ah:al) × (bh:bl) mod 2^64 → rh:rl. */
function mul(ah: number, al: number, bh: number, bl: number): void {
  rl = Math.imul(al, bl) >>> 0;
  rh = (mulHi32(al, bl) + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
}

/** (ah:al) + (bh:bl) mod 2^64 → rh:rl. */
function add(ah: number, al: number, bh: number, bl: number): void {
  const lo = al + bl;
  rl = lo >>> 0;
  rh = (ah + bh + (lo > 0xffffffff ? 1 : 0)) >>> 0;
}

/** (h:l) rotated left by r (0 < r < 64) → rh:rl. */
function rotl(h: number, l: number, r: number): void {
  if (r >= 32) {
    const t = h;
    h = l;
    l = t;
    r -= 32;
  }
  if (r === 0) {
    rh = h;
    rl = l;
    return;
  }
  rh = ((h << r) | (l >>> (32 - r))) >>> 0;
  rl = ((l << r) | (h >>> (32 - r))) >>> 0;
}

/** XXH64 round: acc = rotl(acc + input × P2, 31) × P1 → rh:rl. */
function round(acch: number, accl: number, inh: number, inl: number): void {
  mul(inh, inl, P2H, P2L);
  add(acch, accl, rh, rl);
  rotl(rh, rl, 31);
  mul(rh, rl, P1H, P1L);
}

/** XXH64 merge round: acc = (acc ^ round(0, val)) × P1 + P4 → rh:rl. */
function mergeRound(acch: number, accl: number, vh: number, vl: number): void {
  round(0, 0, vh, vl);
  mul((acch ^ rh) >>> 0, (accl ^ rl) >>> 0, P1H, P1L);
  add(rh, rl, P4H, P4L);
}

function read32(b: Uint8Array, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;
}

/** XXH64 of `bytes[0, length)` with a seed below 2^53 → rh:rl. */
function xxh64Raw(bytes: Uint8Array, length: number, seed: number): void {
  const seedH = Math.floor(seed / 0x100000000) >>> 0;
  const seedL = seed >>> 0;
  let i = 0;
  let hh: number;
  let hl: number;
  if (length >= 32) {
    add(seedH, seedL, P1H, P1L);
    add(rh, rl, P2H, P2L);
    let v1h = rh;
    let v1l = rl;
    add(seedH, seedL, P2H, P2L);
    let v2h = rh;
    let v2l = rl;
    let v3h = seedH;
    let v3l = seedL;
    add(seedH, seedL, NEG_P1H, NEG_P1L);
    let v4h = rh;
    let v4l = rl;
    const limit = length - 32;
    while (i <= limit) {
      round(v1h, v1l, read32(bytes, i + 4), read32(bytes, i));
      v1h = rh;
      v1l = rl;
      round(v2h, v2l, read32(bytes, i + 12), read32(bytes, i + 8));
      v2h = rh;
      v2l = rl;
      round(v3h, v3l, read32(bytes, i + 20), read32(bytes, i + 16));
      v3h = rh;
      v3l = rl;
      round(v4h, v4l, read32(bytes, i + 28), read32(bytes, i + 24));
      v4h = rh;
      v4l = rl;
      i += 32;
    }
    rotl(v1h, v1l, 1);
    hh = rh;
    hl = rl;
    rotl(v2h, v2l, 7);
    add(hh, hl, rh, rl);
    hh = rh;
    hl = rl;
    rotl(v3h, v3l, 12);
    add(hh, hl, rh, rl);
    hh = rh;
    hl = rl;
    rotl(v4h, v4l, 18);
    add(hh, hl, rh, rl);
    mergeRound(rh, rl, v1h, v1l);
    mergeRound(rh, rl, v2h, v2l);
    mergeRound(rh, rl, v3h, v3l);
    mergeRound(rh, rl, v4h, v4l);
    hh = rh;
    hl = rl;
  } else {
    add(seedH, seedL, P5H, P5L);
    hh = rh;
    hl = rl;
  }
  // h += length (length < 2^53)
  add(hh, hl, Math.floor(length / 0x100000000) >>> 0, length >>> 0);
  hh = rh;
  hl = rl;
  while (i + 8 <= length) {
    round(0, 0, read32(bytes, i + 4), read32(bytes, i));
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 27);
    mul(rh, rl, P1H, P1L);
    add(rh, rl, P4H, P4L);
    hh = rh;
    hl = rl;
    i += 8;
  }
  if (i + 4 <= length) {
    mul(0, read32(bytes, i), P1H, P1L);
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 23);
    mul(rh, rl, P2H, P2L);
    add(rh, rl, P3H, P3L);
    hh = rh;
    hl = rl;
    i += 4;
  }
  while (i < length) {
    mul(0, bytes[i]!, P5H, P5L);
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 11);
    mul(rh, rl, P1H, P1L);
    hh = rh;
    hl = rl;
    i++;
  }
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  hl = (hl ^ (hh >>> 1)) >>> 0;
  mul(hh, hl, P2H, P2L);
  hl = (rl ^ ((rl >>> 29) | (rh << 3))) >>> 0;
  hh = (rh ^ (rh >>> 29)) >>> 0;
  mul(hh, hl, P3H, P3L);
  rl = (rl ^ rh) >>> 0;
}

// Scratch buffer for UTF-8 encoding on the pick path; grown on demand, never shrunk.
let scratch = new Uint8Array(256);

/** Encodes `text` as UTF-8 into `scratch` (lone surrogates become U+FFFD, as TextEncoder does). */
function encodeUtf8(text: string): number {
  const worst = text.length * 3;
  if (scratch.length < worst) scratch = new Uint8Array(Math.max(worst, scratch.length * 2));
  const b = scratch;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      b[n++] = c;
    } else if (c < 0x800) {
      b[n++] = 0xc0 | (c >> 6);
      b[n++] = 0x80 | (c & 0x3f);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
          i++;
          b[n++] = 0xf0 | (c >> 18);
          b[n++] = 0x80 | ((c >> 12) & 0x3f);
          b[n++] = 0x80 | ((c >> 6) & 0x3f);
          b[n++] = 0x80 | (c & 0x3f);
          continue;
        }
        c = 0xfffd;
      }
      b[n++] = 0xe0 | (c >> 12);
      b[n++] = 0x80 | ((c >> 6) & 0x3f);
      b[n++] = 0x80 | (c & 0x3f);
    }
  }
  return n;
}

/**
 * XXH64 of `input` (a string is hashed as its UTF-8 bytes). `seed` is a whole number below 2^53;
 * gRFC A42 uses 0.
 */
export function xxh64(input: string | Uint8Array, seed = 0): Hash64 {
  if (typeof input === "string") {
    const length = encodeUtf8(input); // first: it may replace `scratch` with a larger buffer
    xxh64Raw(scratch, length, seed);
  } else {
    xxh64Raw(input, input.length, seed);
  }
  return { hi: rh, lo: rl };
}

/** The hash as 16 lower-case hex digits, e.g. "ef46db3751d8e999". */
export function hash64ToHex(h: Hash64): string {
  return h.hi.toString(16).padStart(8, "0") + h.lo.toString(16).padStart(8, "0");
}

/** −1, 0 or 1 as `a` is below, equal to or above `b` (unsigned 64-bit order). */
export function compareHash64(a: Hash64, b: Hash64): number {
  if (a.hi !== b.hi) return a.hi < b.hi ? -1 : 1;
  if (a.lo !== b.lo) return a.lo < b.lo ? -1 : 1;
  return 0;
}
