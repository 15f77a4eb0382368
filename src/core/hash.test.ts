import assert from "node:assert/strict";
import { it } from "node:test";
import { SeededRandom } from "../../test/support/seeded-random.ts";
import { compareHash64, hash64ToHex, xxh64 } from "./hash.ts";

// A direct BigInt transcription of the XXH64 spec, slow but obviously right, to check the fast one.
const M = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;
const rotl = (x: bigint, r: bigint) => ((x << r) | (x >> (64n - r))) & M;
const round = (acc: bigint, input: bigint) => (rotl((acc + input * P2) & M, 31n) * P1) & M;
const merge = (acc: bigint, v: bigint) => (((acc ^ round(0n, v)) * P1 + P4) & M) as bigint;
function u64(b: Uint8Array, i: number): bigint {
  let v = 0n;
  for (let k = 7; k >= 0; k--) v = (v << 8n) | BigInt(b[i + k]!);
  return v;
}
function u32(b: Uint8Array, i: number): bigint {
  return BigInt(b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16)) | (BigInt(b[i + 3]!) << 24n);
}
function reference(b: Uint8Array, seed = 0n): bigint {
  let i = 0;
  let h: bigint;
  if (b.length >= 32) {
    let v1 = (seed + P1 + P2) & M;
    let v2 = (seed + P2) & M;
    let v3 = seed;
    let v4 = (seed - P1) & M;
    for (; i + 32 <= b.length; i += 32) {
      v1 = round(v1, u64(b, i));
      v2 = round(v2, u64(b, i + 8));
      v3 = round(v3, u64(b, i + 16));
      v4 = round(v4, u64(b, i + 24));
    }
    h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & M;
    h = merge(merge(merge(merge(h, v1), v2), v3), v4);
  } else {
    h = (seed + P5) & M;
  }
  h = (h + BigInt(b.length)) & M;
  for (; i + 8 <= b.length; i += 8) h = (rotl(h ^ round(0n, u64(b, i)), 27n) * P1 + P4) & M;
  if (i + 4 <= b.length) {
    h = (rotl(h ^ ((u32(b, i) * P1) & M), 23n) * P2 + P3) & M;
    i += 4;
  }
  for (; i < b.length; i++) h = (rotl(h ^ ((BigInt(b[i]!) * P5) & M), 11n) * P1) & M;
  h = ((h ^ (h >> 33n)) * P2) & M;
  h = ((h ^ (h >> 29n)) * P3) & M;
  return h ^ (h >> 32n);
}

it("matches the published XXH64 test vectors (seed 0)", () => {
  const table: Array<[string, string]> = [
    ["", "ef46db3751d8e999"],
    ["a", "d24ec4f1a98c6e5b"],
    ["abc", "44bc2cf5ad770999"],
    ["Nobody inspects the spammish repetition", "fbcea83c8a378bf1"],
    ["The quick brown fox jumps over the lazy dog", "0b242d361fda71bc"],
  ];
  for (const [text, hex] of table) assert.equal(hash64ToHex(xxh64(text)), hex, JSON.stringify(text));
});

it("agrees with a BigInt transcription of the spec on every length up to 100 and on seeds", () => {
  const random = new SeededRandom(11);
  for (let len = 0; len <= 100; len++) {
    const bytes = Uint8Array.from({ length: len }, () => Math.floor(random.next() * 256));
    for (const seed of [0, 1, 0x9e3779b1, 2 ** 40 + 7]) {
      const h = xxh64(bytes, seed);
      const want = reference(bytes, BigInt(seed)).toString(16).padStart(16, "0");
      assert.equal(hash64ToHex(h), want, `length ${len} seed ${seed}`);
    }
  }
});

it("hashes strings as UTF-8, with lone surrogates as U+FFFD like TextEncoder", () => {
  for (const text of ["é", "日本語", "emoji 🎉 ok", "lone \ud800 surrogate", "x".repeat(300)]) {
    const bytes = new TextEncoder().encode(text);
    assert.equal(hash64ToHex(xxh64(text)), hash64ToHex(xxh64(bytes)), JSON.stringify(text));
  }
});

it("orders hashes as unsigned 64-bit numbers", () => {
  assert.equal(compareHash64({ hi: 1, lo: 0 }, { hi: 0, lo: 0xffffffff }), 1);
  assert.equal(compareHash64({ hi: 0xffffffff, lo: 1 }, { hi: 0xffffffff, lo: 2 }), -1);
  assert.equal(compareHash64({ hi: 5, lo: 5 }, { hi: 5, lo: 5 }), 0);
});
