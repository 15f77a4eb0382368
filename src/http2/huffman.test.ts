import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { SeededRandom } from "../../test/support/seeded-random.ts";
import {
  HUFFMAN_CODE_LENGTHS,
  HUFFMAN_CODES,
  huffmanDecode,
  huffmanDecodedLength,
  huffmanEncode,
  huffmanEncodedLength,
} from "./huffman.ts";

const PEER = fileURLToPath(new URL("../../test/support/hpack-peer.py", import.meta.url));
const pythonHpack = spawnSync("/usr/bin/python3", ["-c", "import hpack"]).status === 0;
const noPython = pythonHpack ? false : "python3 hpack module missing (apt-get install python3-hpack)";

const hex = (s: string): Uint8Array =>
  Uint8Array.from((s.replace(/\s+/g, "").match(/../g) ?? []).map((h) => Number.parseInt(h, 16)));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

function encode(s: string): Uint8Array {
  const out = new Uint8Array(huffmanEncodedLength(s));
  const end = huffmanEncode(s, out, 0);
  assert.equal(end, out.length, "huffmanEncode wrote huffmanEncodedLength bytes");
  return out;
}

function decode(b: Uint8Array): string | undefined {
  return huffmanDecode(b, 0, b.length);
}

// RFC 7541 Appendix C.4 and C.6: the Huffman-coded strings of the examples.
const RFC_STRINGS: [string, string][] = [
  ["www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"],
  ["no-cache", "a8eb 1064 9cbf"],
  ["custom-key", "25a8 49e9 5ba9 7d7f"],
  ["custom-value", "25a8 49e9 5bb8 e8b4 bf"],
  ["302", "6402"],
  ["307", "640e ff"],
  ["private", "aec3 771a 4b"],
  ["Mon, 21 Oct 2013 20:13:21 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff"],
  ["Mon, 21 Oct 2013 20:13:22 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff"],
  ["https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"],
  ["gzip", "9bd9 ab"],
  [
    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
  ],
];

describe("Huffman code (RFC 7541 Appendix B)", () => {
  test("the codes rebuilt from the lengths equal python hpack's table", { skip: noPython }, () => {
    const r = spawnSync("/usr/bin/python3", [PEER], { input: JSON.stringify({ op: "huffman-table" }) });
    assert.equal(r.status, 0, String(r.stderr));
    const table = JSON.parse(String(r.stdout)) as { codes: number[]; lengths: number[] };
    assert.deepEqual(Array.from(HUFFMAN_CODES), table.codes);
    assert.deepEqual(Array.from(HUFFMAN_CODE_LENGTHS), table.lengths);
  });

  test("a few codes read off the RFC table are right", () => {
    assert.equal(HUFFMAN_CODES[48], 0x0); // '0' 00000
    assert.equal(HUFFMAN_CODE_LENGTHS[48], 5);
    assert.equal(HUFFMAN_CODES[32], 0x14); // ' ' 010100
    assert.equal(HUFFMAN_CODES[126], 0x1ffd); // '~'
    assert.equal(HUFFMAN_CODE_LENGTHS[126], 13);
    assert.equal(HUFFMAN_CODES[10], 0x3ffffffc); // '\n', 30 bits
    assert.equal(HUFFMAN_CODES[256], 0x3fffffff); // EOS
    assert.equal(HUFFMAN_CODE_LENGTHS[256], 30);
  });

  test("the RFC's Appendix C strings encode to its bytes and decode back", () => {
    for (const [s, h] of RFC_STRINGS) {
      assert.equal(toHex(encode(s)), toHex(hex(h)), s);
      assert.equal(decode(hex(h)), s);
      assert.equal(huffmanDecodedLength(hex(h), 0, hex(h).length), s.length);
    }
  });

  test("every octet value round-trips, alone and all together", () => {
    let all = "";
    for (let c = 0; c < 256; c++) {
      const s = String.fromCharCode(c);
      all += s;
      assert.equal(decode(encode(s)), s, `octet ${c}`);
      assert.equal(huffmanEncodedLength(s), Math.ceil(HUFFMAN_CODE_LENGTHS[c]! / 8));
    }
    assert.equal(decode(encode(all)), all);
    assert.equal(
      decode(encode(all + all.split("").reverse().join(""))),
      all + all.split("").reverse().join(""),
    );
  });

  test("seeded random strings round-trip, at an offset inside a larger buffer", () => {
    const random = new SeededRandom(7541);
    for (let k = 0; k < 2000; k++) {
      const n = Math.floor(random.next() * 80);
      const highBytes = random.next() < 0.3;
      let s = "";
      for (let i = 0; i < n; i++) {
        s += String.fromCharCode(
          highBytes ? Math.floor(random.next() * 256) : 32 + Math.floor(random.next() * 95),
        );
      }
      const at = 3 + Math.floor(random.next() * 5);
      const out = new Uint8Array(at + huffmanEncodedLength(s) + 4).fill(0xaa);
      const end = huffmanEncode(s, out, at);
      assert.equal(end - at, huffmanEncodedLength(s));
      assert.equal(out[end], 0xaa, "nothing written past the returned offset");
      assert.equal(huffmanDecode(out, at, end), s);
    }
  });

  test("the empty string is zero bytes", () => {
    assert.equal(huffmanEncodedLength(""), 0);
    assert.equal(decode(new Uint8Array(0)), "");
  });

  const invalid: [string, string][] = [
    ["ffff ffff", "the EOS symbol (30 ones) inside the string"],
    ["ff", "8 bits of padding"],
    ["1fff", "'a' then 11 bits of padding"],
    ["18", "'a' then padding 000, not all ones"],
    ["1e", "'a' then padding 110, not all ones"],
    ["fe", "seven ones then 0: a longer code cut short, not a padding"],
    ["1fff ffff ff", "'a' then the EOS symbol then 5 ones of padding"],
  ];
  for (const [h, why] of invalid) {
    test(`decoding rejects ${why}`, () => {
      assert.equal(decode(hex(h)), undefined);
      assert.equal(huffmanDecodedLength(hex(h), 0, hex(h).length), -1);
    });
  }

  test("valid paddings of 1 to 7 ones are accepted", () => {
    // '0' is 00000: n of them leave (8 - 5n mod 8) mod 8 bits of padding: 3, 6, 1, 4, 7, 2, 5, 0.
    const paddings = new Set<number>();
    for (let n = 1; n <= 8; n++) {
      const b = encode("0".repeat(n));
      paddings.add(b.length * 8 - 5 * n);
      assert.equal(decode(b), "0".repeat(n));
    }
    assert.deepEqual([...paddings].sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.equal(decode(hex("183f")), "a0"); // 00011 00000 + 6 ones
  });
});
