import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { SeededRandom } from "../../test/support/seeded-random.ts";
import { HpackDecoder, HpackEncoder, type HpackResult } from "./hpack.ts";
import { STATIC_TABLE } from "./hpack-static.ts";

// ---- helpers ----------------------------------------------------------------------------------

const hex = (s: string): Uint8Array =>
  Uint8Array.from((s.replace(/\s+/g, "").match(/../g) ?? []).map((h) => Number.parseInt(h, 16)));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

function ok(r: HpackResult): string[] {
  if (r.kind !== "ok") assert.fail(`expected ok, got ${JSON.stringify(r)}`);
  return r.headers;
}

const PEER = fileURLToPath(new URL("../../test/support/hpack-peer.py", import.meta.url));
const pythonHpack = spawnSync("/usr/bin/python3", ["-c", "import hpack"]).status === 0;
const noPython = pythonHpack ? false : "python3 hpack module missing (apt-get install python3-hpack)";

/** One request to the python hpack peer (test/support/hpack-peer.py). */
function python<T>(request: object): T {
  const r = spawnSync("/usr/bin/python3", [PEER], {
    input: JSON.stringify(request),
    maxBuffer: 256 * 1024 * 1024,
  });
  assert.equal(r.status, 0, `python hpack peer failed: ${String(r.stderr)}`);
  return JSON.parse(String(r.stdout)) as T;
}

type Table = [string, string][];

/** RFC 7541 Appendix C: one block, the list it decodes to, and the dynamic table after it (newest first). */
interface Step {
  block: string;
  headers: string[];
  table: Table;
  size: number;
}

const REQ1 = [":method", "GET", ":scheme", "http", ":path", "/", ":authority", "www.example.com"];
const REQ2 = [...REQ1, "cache-control", "no-cache"];
const REQ3 = [
  ":method",
  "GET",
  ":scheme",
  "https",
  ":path",
  "/index.html",
  ":authority",
  "www.example.com",
  "custom-key",
  "custom-value",
];
const REQ_TABLES: [Table, number][] = [
  [[[":authority", "www.example.com"]], 57],
  [
    [
      ["cache-control", "no-cache"],
      [":authority", "www.example.com"],
    ],
    110,
  ],
  [
    [
      ["custom-key", "custom-value"],
      ["cache-control", "no-cache"],
      [":authority", "www.example.com"],
    ],
    164,
  ],
];

const C3: Step[] = [
  ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", REQ1],
  ["8286 84be 5808 6e6f 2d63 6163 6865", REQ2],
  ["8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65", REQ3],
].map(([block, headers], i) => ({
  block: block as string,
  headers: headers as string[],
  table: REQ_TABLES[i]![0],
  size: REQ_TABLES[i]![1],
}));

const C4: Step[] = [
  "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
  "8286 84be 5886 a8eb 1064 9cbf",
  "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
].map((block, i) => ({ ...C3[i]!, block }));

const DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOC = "https://www.example.com";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESP1 = [":status", "302", "cache-control", "private", "date", DATE1, "location", LOC];
const RESP2 = [":status", "307", "cache-control", "private", "date", DATE1, "location", LOC];
const RESP3 = [
  ":status",
  "200",
  "cache-control",
  "private",
  "date",
  DATE2,
  "location",
  LOC,
  "content-encoding",
  "gzip",
  "set-cookie",
  COOKIE,
];
const RESP_TABLES: [Table, number][] = [
  [
    [
      ["location", LOC],
      ["date", DATE1],
      ["cache-control", "private"],
      [":status", "302"],
    ],
    222,
  ],
  [
    [
      [":status", "307"],
      ["location", LOC],
      ["date", DATE1],
      ["cache-control", "private"],
    ],
    222,
  ],
  [
    [
      ["set-cookie", COOKIE],
      ["content-encoding", "gzip"],
      ["date", DATE2],
    ],
    215,
  ],
];

const C5: Step[] = [
  [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d " +
      "546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    RESP1,
  ],
  ["4803 3330 37c1 c0bf", RESP2],
  [
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f " +
      "6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b " +
      "2076 6572 7369 6f6e 3d31",
    RESP3,
  ],
].map(([block, headers], i) => ({
  block: block as string,
  headers: headers as string[],
  table: RESP_TABLES[i]![0],
  size: RESP_TABLES[i]![1],
}));

const C6: Step[] = [
  "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 " +
    "8f0b 97c8 e9ae 82ae 43d3",
  "4883 640e ffc1 c0bf",
  "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 " +
    "dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
].map((block, i) => ({ ...C5[i]!, block }));

function listSize(headers: readonly string[]): number {
  let size = 0;
  for (let i = 0; i < headers.length; i += 2) size += headers[i]!.length + headers[i + 1]!.length + 32;
  return size;
}

function runSequence(steps: Step[], maxTableSize: number): void {
  const d = new HpackDecoder({ maxTableSize });
  steps.forEach((step, i) => {
    const r = d.decode(hex(step.block));
    assert.deepEqual(ok(r), step.headers, `block ${i + 1}`);
    assert.equal(r.kind === "ok" && r.size, listSize(step.headers), `list size of block ${i + 1}`);
    const t = d.tableSnapshot();
    assert.deepEqual(t.entries, step.table, `table after block ${i + 1}`);
    assert.equal(t.size, step.size, `table size after block ${i + 1}`);
  });
}

// ---- RFC 7541 Appendix C -----------------------------------------------------------------------

describe("RFC 7541 Appendix C", () => {
  test("the static table equals python hpack's", { skip: noPython }, () => {
    const peer = python<{ entries: [string, string][] }>({ op: "static-table" });
    assert.deepEqual(
      STATIC_TABLE.map(([n, v]) => [n, v]),
      peer.entries,
    );
  });

  test("the static table starts and ends as in Appendix A", () => {
    assert.equal(STATIC_TABLE.length, 61);
    assert.deepEqual(STATIC_TABLE[0], [":authority", ""]);
    assert.deepEqual(STATIC_TABLE[15], ["accept-encoding", "gzip, deflate"]);
    assert.deepEqual(STATIC_TABLE[60], ["www-authenticate", ""]);
  });

  const c2: [string, string, string[], Table][] = [
    [
      "C.2.1 literal with indexing",
      "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
      ["custom-key", "custom-header"],
      [["custom-key", "custom-header"]],
    ],
    ["C.2.2 literal without indexing", "040c 2f73 616d 706c 652f 7061 7468", [":path", "/sample/path"], []],
    ["C.2.3 literal never indexed", "1008 7061 7373 776f 7264 0673 6563 7265 74", ["password", "secret"], []],
    ["C.2.4 indexed field", "82", [":method", "GET"], []],
  ];
  for (const [name, block, headers, table] of c2) {
    test(`${name} decodes and leaves the table as the RFC says`, () => {
      const d = new HpackDecoder();
      assert.deepEqual(ok(d.decode(hex(block))), headers);
      assert.deepEqual(d.tableSnapshot().entries, table);
      assert.equal(d.tableSnapshot().size, table.length === 0 ? 0 : 55);
    });
  }

  test("C.3 requests without Huffman decode in sequence, with the table after each", () =>
    runSequence(C3, 4096));
  test("C.4 requests with Huffman decode in sequence, with the table after each", () =>
    runSequence(C4, 4096));
  test("C.5 responses without Huffman, table 256, evict as the RFC says", () => runSequence(C5, 256));
  test("C.6 responses with Huffman, table 256, evict as the RFC says", () => runSequence(C6, 256));

  test("our encoder produces the C.4 blocks byte for byte", () => {
    const e = new HpackEncoder();
    C4.forEach((step, i) => {
      assert.equal(toHex(e.encode(step.headers)), toHex(hex(step.block)), `block ${i + 1}`);
      assert.deepEqual(e.tableSnapshot().entries, step.table);
      assert.equal(e.tableSnapshot().size, step.size);
    });
  });

  test("our encoder capped at 256 produces the C.6 blocks after announcing the size", () => {
    // One difference by design: "307" is sent raw in C.6.2 (4803 333037), where the RFC
    // Huffman-codes it (4883 640eff): the Huffman form is not shorter, and raw is cheaper to decode.
    const ours = ["", "4803333037c1c0bf", ""];
    const e = new HpackEncoder({ maxTableSize: 256 });
    const d = new HpackDecoder({ maxTableSize: 256 });
    C6.forEach((step, i) => {
      const block = e.encode(step.headers);
      // The peer's decoder starts at 4096: the first block says 256 (3f e1 01) first.
      const expected = (i === 0 ? "3fe101" : "") + (ours[i] || toHex(hex(step.block)));
      assert.equal(toHex(block), expected, `block ${i + 1}`);
      assert.deepEqual(e.tableSnapshot().entries, step.table);
      assert.equal(e.tableSnapshot().size, step.size);
      assert.deepEqual(ok(d.decode(block)), step.headers);
      assert.deepEqual(d.tableSnapshot(), e.tableSnapshot());
    });
  });

  test("a block may be decoded from a range of a larger buffer", () => {
    const block = hex(C4[0]!.block);
    const framed = new Uint8Array(block.length + 13).fill(0xff);
    framed.set(block, 9);
    assert.deepEqual(ok(new HpackDecoder().decode(framed, 9, 9 + block.length)), REQ1);
  });
});

// ---- encoder strategy ----------------------------------------------------------------------------

const GRPC_REQUEST = [
  ":method",
  "POST",
  ":scheme",
  "http",
  ":path",
  "/pkg.Echo/Echo",
  ":authority",
  "127.0.0.1:50051",
  "content-type",
  "application/grpc",
  "te",
  "trailers",
  "grpc-timeout",
  "99m",
  "user-agent",
  "grpc-node-js/1.14.7",
  "grpc-accept-encoding",
  "identity,deflate,gzip",
];

describe("HpackEncoder", () => {
  test("a repeated gRPC request block is all 1-byte indexes but the grpc-timeout literal", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    const first = e.encode(GRPC_REQUEST);
    assert.deepEqual(ok(d.decode(first)), GRPC_REQUEST);
    const second = e.encode(GRPC_REQUEST);
    assert.deepEqual(ok(d.decode(second)), GRPC_REQUEST);
    // 8 indexed fields; grpc-timeout: 1 byte (literal without indexing, new name) + 1 + 9 (name
    // "grpc-timeout" Huffman-coded) + 1 + 3 ("99m", Huffman no shorter).
    const timeoutAt = second.indexOf(0x00);
    assert.equal(timeoutAt, 6, "grpc-timeout is the 7th field, after six 1-byte indexes");
    for (let i = 0; i < 6; i++) assert.ok(second[i]! & 0x80, `field ${i} indexed`);
    assert.equal(second.length, 8 + 1 + 1 + 9 + 1 + 3);
    assert.ok(
      !d.tableSnapshot().entries.some(([n]) => n === "grpc-timeout"),
      "grpc-timeout never enters the table",
    );
  });

  test("credentials are sent never-indexed and stay out of the table", () => {
    for (const name of ["authorization", "cookie", "proxy-authorization"]) {
      const e = new HpackEncoder();
      const b1 = e.encode([name, "secret-token"]);
      const b2 = e.encode([name, "secret-token"]);
      assert.equal(b1[0]! & 0xf0, 0x10, `${name}: never-indexed literal`);
      assert.equal(toHex(b1), toHex(b2), `${name}: not indexed the second time either`);
      assert.deepEqual(e.tableSnapshot().entries, []);
      assert.deepEqual(ok(new HpackDecoder().decode(b1)), [name, "secret-token"]);
    }
  });

  test("per-call and large values are literals without indexing; small -bin values are indexed", () => {
    const cases: [string, string, boolean][] = [
      ["grpc-timeout", "5S", false],
      ["content-length", "42", false],
      ["x-trace-bin", "A".repeat(65), false],
      ["x-trace-bin", "A".repeat(64), true],
      ["x-big", "v".repeat(257), false],
      ["x-big", "v".repeat(256), true],
      ["x-roster-class", "gold", true],
    ];
    for (const [name, value, indexed] of cases) {
      const e = new HpackEncoder();
      const b = e.encode([name, value]);
      assert.equal(b[0]! & 0xc0, indexed ? 0x40 : 0x00, `${name} (${value.length} bytes)`);
      if (!indexed) assert.equal(b[0]! & 0xf0, 0x00);
      assert.equal(e.tableSnapshot().entries.length, indexed ? 1 : 0);
      assert.deepEqual(ok(new HpackDecoder().decode(b)), [name, value]);
    }
  });

  test("a name already in the dynamic table is referenced by index in a new literal", () => {
    const e = new HpackEncoder();
    e.encode(["x-user", "alice"]);
    const b = e.encode(["x-user", "bob"]);
    // 0x40 | 62 (dynamic index 1) = 0x7e, then "bob".
    assert.equal(b[0], 0x7e);
    assert.deepEqual(e.tableSnapshot().entries, [
      ["x-user", "bob"],
      ["x-user", "alice"],
    ]);
  });

  test("an entry larger than the whole table is sent without indexing and evicts nothing", () => {
    const e = new HpackEncoder({ maxTableSize: 100 });
    const d = new HpackDecoder();
    ok(d.decode(e.encode(["a", "1"])));
    const b = e.encode(["x", "y".repeat(80)]);
    assert.equal(b[0]! & 0xf0, 0x00);
    assert.deepEqual(e.tableSnapshot().entries, [["a", "1"]]);
    assert.deepEqual(ok(d.decode(b)), ["x", "y".repeat(80)]);
    assert.deepEqual(d.tableSnapshot().entries, [["a", "1"]]);
  });

  test("strings are octets: latin1 characters round-trip, a raw literal when Huffman is longer", () => {
    const e = new HpackEncoder();
    const value = "\u0000\u00ff\u00e9\u0080\u007f";
    const b = e.encode(["x-octets", value]);
    assert.deepEqual(ok(new HpackDecoder().decode(b)), ["x-octets", value]);
    // Control and high octets have long codes: the value is sent raw (H bit clear).
    assert.equal(b[b.length - value.length - 1], value.length);
  });

  test("an odd-length list ignores the dangling name", () => {
    const e = new HpackEncoder();
    assert.deepEqual(ok(new HpackDecoder().decode(e.encode([":method", "GET", "x-dangling"]))), [
      ":method",
      "GET",
    ]);
  });
});

// ---- dynamic table size updates -----------------------------------------------------------------

describe("dynamic table size updates", () => {
  test("the encoder emits one update after setPeerMaxTableSize, and only once", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    ok(d.decode(e.encode(["x-a", "1", "x-b", "2"])));
    e.setPeerMaxTableSize(1024);
    const b = e.encode([":method", "GET"]);
    assert.equal(toHex(b), "3fe10782"); // update to 1024 (31 + 993), then :method GET
    ok(d.decode(b));
    assert.equal(d.tableSnapshot().maxSize, 1024);
    assert.equal(toHex(e.encode([":method", "GET"])), "82");
  });

  test("a shrink and a regrowth between blocks send the minimum, then the final size", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    ok(d.decode(e.encode(["x-a", "1"])));
    e.setPeerMaxTableSize(0);
    e.setPeerMaxTableSize(2048);
    const b = e.encode(["x-c", "3"]);
    assert.equal(toHex(b.subarray(0, 4)), "203fe10f"); // 0, then 2048 (31 + 2017)
    ok(d.decode(b));
    assert.deepEqual(d.tableSnapshot().entries, [["x-c", "3"]], "the update to 0 emptied the table");
    assert.deepEqual(d.tableSnapshot(), e.tableSnapshot());
  });

  test("a peer allowing more than our cap, or the same size, changes nothing", () => {
    const e = new HpackEncoder();
    e.setPeerMaxTableSize(65536);
    e.setPeerMaxTableSize(4096);
    assert.equal(toHex(e.encode([":method", "GET"])), "82");
  });

  test("the decoder refuses an update above its maximum, and accepts one up to it", () => {
    const d = new HpackDecoder({ maxTableSize: 1024 });
    const r = d.decode(hex("3fe20782")); // 1025
    assert.equal(r.kind, "compression-error");
    assert.deepEqual(ok(new HpackDecoder({ maxTableSize: 1024 }).decode(hex("3fe10782"))), [
      ":method",
      "GET",
    ]);
  });

  test("after our limit is lowered the next block must start with an update within it", () => {
    const d = new HpackDecoder();
    ok(d.decode(hex("400161 0162"))); // a: b inserted
    d.setMaxTableSize(1024);
    const missing = d.decode(hex("82"));
    assert.equal(missing.kind, "compression-error");
    assert.match(missing.kind === "compression-error" ? missing.message : "", /size update required/);
    const tooBig = d.decode(hex("3fe11f 82")); // 4096
    assert.equal(tooBig.kind, "compression-error");
    assert.deepEqual(ok(d.decode(hex("3fe107 82 be"))), [":method", "GET", "a", "b"]);
    assert.deepEqual(ok(d.decode(hex("82"))), [":method", "GET"], "no update needed after that");
  });

  test("raising our limit lets the peer grow the table, without requiring an update", () => {
    const d = new HpackDecoder();
    d.setMaxTableSize(8192);
    assert.deepEqual(ok(d.decode(hex("82"))), [":method", "GET"]);
    ok(d.decode(hex("3fe13f"))); // 8192 = 31 + 8161
    assert.equal(d.tableSnapshot().maxSize, 8192);
  });
});

// ---- errors --------------------------------------------------------------------------------------

describe("HpackDecoder errors", () => {
  const cases: [string, string, RegExp][] = [
    ["an indexed field with index 0", "80", /index 0/],
    ["an index past the static table with an empty dynamic table", "be", /past the end of the table/],
    ["an index far past the table", "ff49", /past the end of the table/],
    ["a literal's name index past the table", "7e 0161", /name index 62 past the end/],
    ["an integer over 2^31", "ff ffffffff0f", /integer overflow/],
    ["an integer with too many continuation bytes", "ff 808080808000", /integer overflow/],
    ["an integer cut by the block end", "ff 80", /integer truncated/],
    ["a string longer than the rest of the block", "400a 6375", /runs past the block end/],
    ["a string length cut by the block end", "40 7f", /string length truncated/],
    ["a literal missing its value", "40 0161", /string missing/],
    ["a size update above the maximum", "3fe21f", /exceeds SETTINGS_HEADER_TABLE_SIZE 4096/],
    ["a size update after a field", "82 20", /after the first header field/],
    ["a Huffman value containing EOS", "00 0161 84ffffffff", /invalid Huffman/],
    ["a Huffman value padded with more than 7 bits", "00 0161 821fff", /invalid Huffman/],
    ["a Huffman value padded with zeros", "00 0161 8118", /invalid Huffman/],
    ["a Huffman name padded with more than 7 bits", "40 81ff 0162", /literal field name: invalid Huffman/],
  ];
  for (const [what, block, message] of cases) {
    test(`${what} is a COMPRESSION_ERROR`, () => {
      const r = new HpackDecoder().decode(hex(block));
      assert.equal(r.kind, "compression-error", JSON.stringify(r));
      assert.match(r.kind === "compression-error" ? r.message : "", message);
    });
  }

  test("an integer of exactly 2^31 - 1 decodes (and is then an index past the table)", () => {
    const r = new HpackDecoder().decode(hex("ff 80ffffff07")); // 127 + 0 + 127*2^7 + ... = 2^31 - 1
    assert.equal(r.kind, "compression-error");
    assert.match(r.kind === "compression-error" ? r.message : "", /index 2147483647 past the end/);
  });

  test("a bad block range is an error, not an exception", () => {
    const r = new HpackDecoder().decode(hex("82"), 2, 1);
    assert.equal(r.kind, "compression-error");
  });

  test("the same errors past the header list limit are still errors", () => {
    // 0x82 x3 passes a 100-byte limit; then a non-indexed literal with bad Huffman.
    const d = new HpackDecoder({ maxHeaderListSize: 100 });
    const r = d.decode(hex("828282 00 0161 821fff"));
    assert.equal(r.kind, "compression-error");
    const r2 = new HpackDecoder({ maxHeaderListSize: 100 }).decode(hex("828282 00 0161 8570"));
    assert.match(r2.kind === "compression-error" ? r2.message : "", /runs past the block end/);
  });
});

// ---- header list limit and the HPACK bomb --------------------------------------------------------

describe("header list size limit", () => {
  test("a list exactly at the limit is returned; one byte more is too-large", () => {
    const block = hex("82 86"); // 42 + 43
    assert.deepEqual(ok(new HpackDecoder({ maxHeaderListSize: 85 }).decode(block)), [
      ":method",
      "GET",
      ":scheme",
      "http",
    ]);
    assert.deepEqual(new HpackDecoder({ maxHeaderListSize: 84 }).decode(block), {
      kind: "too-large",
      size: 85,
    });
  });

  test("past the limit the block is still applied to the dynamic table", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder({ maxHeaderListSize: 200 });
    const big = ["x-1", "a".repeat(100), "x-2", "b".repeat(100), "x-3", "c".repeat(50), "grpc-timeout", "1S"];
    const r = d.decode(e.encode(big));
    assert.equal(r.kind, "too-large");
    assert.equal(r.kind === "too-large" && r.size, listSize(big));
    assert.deepEqual(d.tableSnapshot(), e.tableSnapshot());
    const next = e.encode(["x-3", "c".repeat(50), ":method", "GET"]);
    assert.equal(next[0], 0xbe, "x-3 is sent as an index into the table built by the too-large block");
    assert.deepEqual(ok(d.decode(next)), ["x-3", "c".repeat(50), ":method", "GET"]);
  });

  test("HPACK bomb: a 4 KiB value referenced 10,000 times is too-large, and the decoder goes on", () => {
    const d = new HpackDecoder({ maxTableSize: 8192, maxHeaderListSize: 65536 });
    const value = "v".repeat(4096);
    // size update to 8192, literal with incremental indexing of x-bomb (raw 4096-byte value), then 10,000 x 0xbe.
    const parts: number[] = [0x3f, 0xe1, 0x3f, 0x40, 6, ...Buffer.from("x-bomb", "latin1")];
    parts.push(0x7f, 0x81, 0x1f); // length 4096 = 127 + 3969 (0x81 0x1f)
    const block = new Uint8Array(parts.length + 4096 + 10_000);
    block.set(parts, 0);
    block.fill(0x76, parts.length, parts.length + 4096); // "v"
    block.fill(0xbe, parts.length + 4096);
    const r = d.decode(block);
    assert.deepEqual(r, { kind: "too-large", size: 10_001 * (6 + 4096 + 32) });
    assert.deepEqual(d.tableSnapshot().entries, [["x-bomb", value]]);
    assert.deepEqual(ok(d.decode(hex("be 82"))), ["x-bomb", value, ":method", "GET"]);
  });
});

// ---- caches --------------------------------------------------------------------------------------

describe("caches", () => {
  test("a raw literal and a Huffman literal with the same wire bytes decode to their own strings", () => {
    const code = "f1e3c2e5f23a6ba0ab90f4ff"; // Huffman of www.example.com
    const raw = Buffer.from(code, "hex").toString("latin1");
    const d = new HpackDecoder();
    for (let k = 0; k < 3; k++) {
      // literal without indexing, name index 1 (:authority): Huffman value, then the same bytes raw
      assert.deepEqual(ok(d.decode(hex(`01 8c${code} 01 0c${code}`))), [
        ":authority",
        "www.example.com",
        ":authority",
        raw,
      ]);
    }
  });

  test("thousands of distinct literals, decoded twice in different orders, all come back right", () => {
    const random = new SeededRandom(5);
    const values: string[] = [];
    for (let i = 0; i < 5000; i++)
      values.push(randomString(random, 1 + Math.floor(random.next() * 40), 32, 95));
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    for (const order of [values, [...values].reverse()]) {
      for (let i = 0; i < order.length; i += 10) {
        // grpc-timeout: never indexed, so every value travels as a literal.
        const list = order.slice(i, i + 10).flatMap((v) => ["grpc-timeout", v]);
        assert.deepEqual(ok(d.decode(e.encode(list))), list);
      }
    }
  });

  test("the encoder's memo of an exact match is not used once the entry is evicted", () => {
    // user-agent has a static name, so what the encoder knows of it outlives its dynamic entries.
    const e = new HpackEncoder({ maxTableSize: 100 });
    const d = new HpackDecoder();
    const lists = [
      ["user-agent", "1"],
      ["user-agent", "1"],
      ["x-b", "2"],
      ["x-c", "3"],
      ["user-agent", "1"],
      ["user-agent", "1"],
    ];
    for (const list of lists) {
      assert.deepEqual(ok(d.decode(e.encode(list))), list);
      assert.deepEqual(d.tableSnapshot(), e.tableSnapshot());
    }
    // x-c evicted the first user-agent entry; the fifth block inserted it again (then x-b went).
    assert.deepEqual(
      e.tableSnapshot().entries.map(([n]) => n),
      ["user-agent", "x-c"],
    );
  });

  test("a repeated never-indexed or per-call value is re-sent in full each time", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    const a = e.encode(["grpc-timeout", "1S", "authorization", "Bearer x"]);
    const b = e.encode(["grpc-timeout", "1S", "authorization", "Bearer x"]);
    const c = e.encode(["grpc-timeout", "2S", "authorization", "Bearer y"]);
    assert.equal(toHex(a), toHex(b));
    assert.notEqual(toHex(b), toHex(c));
    for (const block of [a, b])
      assert.deepEqual(ok(d.decode(block)), ["grpc-timeout", "1S", "authorization", "Bearer x"]);
    assert.deepEqual(ok(d.decode(c)), ["grpc-timeout", "2S", "authorization", "Bearer y"]);
  });
});

// ---- round trips ---------------------------------------------------------------------------------

const NAMES = [
  ":authority",
  ":path",
  ":status",
  "content-type",
  "user-agent",
  "accept-encoding",
  "cache-control",
  "authorization",
  "cookie",
  "content-length",
  "set-cookie",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "grpc-status",
  "grpc-message",
  "te",
  "x-roster-class",
  "x-trace-bin",
  "x-user-id",
];
const COMMON_VALUES = [
  "",
  "0",
  "200",
  "application/grpc",
  "trailers",
  "gzip, deflate",
  "identity,deflate,gzip",
  "/pkg.Echo/Echo",
  "127.0.0.1:50051",
  "gold",
  "grpc-node-js/1.14.7",
];

function randomString(random: SeededRandom, n: number, from: number, span: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(from + Math.floor(random.next() * span));
  return s;
}

function randomList(random: SeededRandom): string[] {
  const out: string[] = [];
  const fields = 1 + Math.floor(random.next() * 14);
  for (let f = 0; f < fields; f++) {
    const r = random.next();
    const name =
      r < 0.8
        ? NAMES[Math.floor(random.next() * NAMES.length)]!
        : `x-${randomString(random, 1 + Math.floor(random.next() * 12), 97, 26)}${random.next() < 0.2 ? "-bin" : ""}`;
    const v = random.next();
    let value: string;
    if (v < 0.45) value = COMMON_VALUES[Math.floor(random.next() * COMMON_VALUES.length)]!;
    else if (v < 0.75) value = randomString(random, Math.floor(random.next() * 40), 32, 95);
    else if (v < 0.85) value = randomString(random, Math.floor(random.next() * 20), 0, 256);
    else if (v < 0.93)
      value = randomString(random, 60 + Math.floor(random.next() * 150), 65, 58); // base64-ish
    else value = randomString(random, 240 + Math.floor(random.next() * 400), 32, 95);
    out.push(name, value);
  }
  return out;
}

const TABLE_SIZES = [0, 64, 256, 1000, 4096, 100_000];

describe("repeated blocks", () => {
  function result(r: HpackResult) {
    assert.equal(r.kind, "ok", JSON.stringify(r));
    if (r.kind !== "ok") throw new Error("unreachable");
    return r;
  }

  test("the same bytes with the table unchanged give the same list, remembered, as a copy", () => {
    const d = new HpackDecoder();
    // :method GET, :scheme http, :path /: static indexes only.
    const block = hex("82 86 84");
    const first = result(d.decode(block));
    assert.ok(first.repeat !== undefined);
    first.headers.push("mutated", "by the caller");
    const second = result(d.decode(Buffer.from(block)));
    assert.equal(second.repeat, first.repeat);
    assert.deepEqual(second.headers, [":method", "GET", ":scheme", "http", ":path", "/"]);
  });

  test("a block that changed the table is not remembered, and a table change voids what was", () => {
    const d = new HpackDecoder();
    // Literal with incremental indexing, new name: x-a: 1.
    const insertA = hex("40 03782d61 0131");
    const insertB = hex("40 03782d62 0132");
    // Index 62: the newest dynamic entry, whatever it is.
    const newest = hex("be");
    assert.equal(result(d.decode(insertA)).repeat, undefined);
    assert.deepEqual(result(d.decode(newest)).headers, ["x-a", "1"]);
    assert.ok(result(d.decode(newest)).repeat !== undefined);
    d.decode(insertB);
    const after = result(d.decode(newest));
    assert.deepEqual(after.headers, ["x-b", "2"]);
  });

  test("a block with a never-indexed field (a credential) is not remembered", () => {
    const d = new HpackDecoder();
    // Never indexed, new name: authorization: s.
    const block = hex("10 0d617574686f72697a6174696f6e 0173");
    assert.equal(result(d.decode(block)).repeat, undefined);
    assert.equal(result(d.decode(block)).repeat, undefined);
  });

  test("a remembered block does not excuse the size update owed after SETTINGS lowered the table", () => {
    const d = new HpackDecoder();
    const block = hex("82 86 84");
    d.decode(block);
    assert.ok(result(d.decode(block)).repeat !== undefined);
    d.setMaxTableSize(0);
    assert.equal(d.decode(block).kind, "compression-error");
  });

  test("headers and trailers alternating on one connection are both remembered", () => {
    const d = new HpackDecoder();
    const headers = hex("88"); // :status 200
    const trailers = hex("00 0b677270632d737461747573 0130"); // literal without indexing, grpc-status: 0
    for (let i = 0; i < 3; i++) {
      const h = result(d.decode(headers));
      const t = result(d.decode(trailers));
      if (i > 0) {
        assert.ok(h.repeat !== undefined && t.repeat !== undefined);
      }
      assert.deepEqual(t.headers, ["grpc-status", "0"]);
    }
  });
});

describe("repeated lists (encoder)", () => {
  test("a list encoded without changing the table encodes to the same bytes; a table change re-encodes", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    const list = [":status", "200", "content-type", "application/grpc", "x-a", "1"];
    const first = e.encode(list); // inserts content-type and x-a
    const second = e.encode(list); // all indexed
    const third = e.encode([...list]); // equal list, remembered bytes
    assert.notDeepEqual(first, second);
    assert.deepEqual(third, second);
    for (const b of [first, second, third]) assert.deepEqual(ok(d.decode(b)), list);
    // A new entry shifts every dynamic index by one: the remembered bytes would now be wrong.
    assert.deepEqual(ok(d.decode(e.encode(["x-b", "2"]))), ["x-b", "2"]);
    const after = e.encode(list);
    assert.notDeepEqual(after, second);
    assert.deepEqual(ok(d.decode(after)), list);
  });

  test("seeded: lists drawn from a few, with a small table, always decode to what was encoded", () => {
    const random = new SeededRandom(11);
    const vocabulary = Array.from({ length: 8 }, (_, i) =>
      Array.from({ length: 1 + (i % 4) }, (_, k) => [`x-h${(i + k) % 6}`, `v${(i * k) % 5}`]).flat(),
    );
    for (const tableSize of [64, 256, 4096]) {
      const e = new HpackEncoder({ maxTableSize: tableSize });
      const d = new HpackDecoder();
      for (let i = 0; i < 2000; i++) {
        const list = vocabulary[Math.floor(random.next() * vocabulary.length)]!;
        assert.deepEqual(ok(d.decode(e.encode(list))), list, `step ${i}, table ${tableSize}`);
      }
      assert.deepEqual(d.tableSnapshot(), e.tableSnapshot());
    }
  });

  test("a list with a never-indexed field (not remembered) round-trips every time", () => {
    const e = new HpackEncoder();
    const d = new HpackDecoder();
    const list = ["authorization", "Bearer a"];
    for (let i = 0; i < 3; i++) assert.deepEqual(ok(d.decode(e.encode(list))), list);
  });
});

describe("round trips", () => {
  test("our encoder's blocks decode in sequence on our decoder, tables in sync after every block", () => {
    const random = new SeededRandom(1);
    const e = new HpackEncoder();
    const d = new HpackDecoder({ maxHeaderListSize: 1 << 30 });
    for (let i = 0; i < 1500; i++) {
      if (random.next() < 0.03)
        e.setPeerMaxTableSize(TABLE_SIZES[Math.floor(random.next() * TABLE_SIZES.length)]!);
      const list = randomList(random);
      const r = d.decode(e.encode(list));
      assert.deepEqual(ok(r), list, `block ${i}`);
      assert.equal(r.kind === "ok" && r.size, listSize(list));
      assert.deepEqual(d.tableSnapshot(), e.tableSnapshot(), `tables after block ${i}`);
    }
  });

  test("python hpack decodes our encoder's blocks in sequence", { skip: noPython }, () => {
    const random = new SeededRandom(2);
    const e = new HpackEncoder();
    const lists: string[][] = [];
    const blocks: string[] = [];
    for (let i = 0; i < 800; i++) {
      if (random.next() < 0.03)
        e.setPeerMaxTableSize(TABLE_SIZES[Math.floor(random.next() * TABLE_SIZES.length)]!);
      const list = randomList(random);
      lists.push(list);
      blocks.push(toHex(e.encode(list)));
    }
    const peer = python<{ lists: (string[] | { error: string })[] }>({ op: "decode", blocks });
    assert.equal(peer.lists.length, lists.length);
    peer.lists.forEach((got, i) => {
      assert.deepEqual(got, lists[i], `block ${i}`);
    });
  });

  test("our decoder decodes python hpack's blocks in sequence, Huffman on and off", {
    skip: noPython,
  }, () => {
    for (const huffman of [true, false]) {
      const random = new SeededRandom(huffman ? 3 : 4);
      const lists: string[][] = [];
      const tableSizes: (number | null)[] = [];
      for (let i = 0; i < 800; i++) {
        lists.push(randomList(random));
        tableSizes.push(
          random.next() < 0.03 ? [0, 100, 256, 1000, 4096][Math.floor(random.next() * 5)]! : null,
        );
      }
      const peer = python<{ blocks: string[] }>({ op: "encode", lists, tableSizes, huffman });
      const d = new HpackDecoder({ maxHeaderListSize: 1 << 30 });
      peer.blocks.forEach((block, i) => {
        assert.deepEqual(ok(d.decode(hex(block))), lists[i], `block ${i}`);
      });
    }
  });
});

// ---- fuzz ----------------------------------------------------------------------------------------

function assertWellFormed(r: HpackResult): void {
  switch (r.kind) {
    case "ok":
      assert.equal(r.headers.length % 2, 0);
      for (const s of r.headers) assert.equal(typeof s, "string");
      break;
    case "too-large":
      assert.ok(r.size > 0);
      break;
    case "compression-error":
      assert.ok(!r.message.startsWith("internal error"), r.message);
      break;
    default:
      assert.fail(`unknown result ${JSON.stringify(r)}`);
  }
}

describe("fuzz", () => {
  test("random bytes never make decode throw", () => {
    const random = new SeededRandom(99);
    const shared = new HpackDecoder({ maxHeaderListSize: 2000 });
    for (let i = 0; i < 20_000; i++) {
      const block = new Uint8Array(Math.floor(random.next() * 64));
      for (let k = 0; k < block.length; k++) block[k] = Math.floor(random.next() * 256);
      assertWellFormed(new HpackDecoder().decode(block));
      assertWellFormed(shared.decode(block));
    }
  });

  test("mutated valid blocks never make decode throw", () => {
    const random = new SeededRandom(100);
    const e = new HpackEncoder();
    const shared = new HpackDecoder({ maxHeaderListSize: 4000 });
    let errors = 0;
    for (let i = 0; i < 10_000; i++) {
      const valid = e.encode(randomList(random));
      const block = Uint8Array.from(valid);
      const mutation = random.next();
      let view: Uint8Array = block;
      if (mutation < 0.4) {
        const flips = 1 + Math.floor(random.next() * 3);
        for (let k = 0; k < flips && block.length > 0; k++) {
          const at = Math.floor(random.next() * block.length);
          block[at] = block[at]! ^ (1 << Math.floor(random.next() * 8));
        }
      } else if (mutation < 0.7) {
        view = block.subarray(0, Math.floor(random.next() * block.length));
      } else if (block.length > 0) {
        block[Math.floor(random.next() * block.length)] = Math.floor(random.next() * 256);
      }
      const r = shared.decode(view);
      assertWellFormed(r);
      if (r.kind === "compression-error") errors++;
      assertWellFormed(new HpackDecoder().decode(view));
    }
    assert.ok(errors > 100, `the mutations did produce errors (${errors})`);
  });
});
