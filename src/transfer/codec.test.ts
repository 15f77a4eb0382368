import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { checkLevel, decodeChunk, encodeChunk, parseCodec, zstd } from "./codec.ts";

describe("chunk codecs", () => {
  it("round-trips random and compressible chunks through zstd at several levels", () => {
    const chunks = [randomBytes(1024 * 1024), Buffer.alloc(1024 * 1024, 7), Buffer.from("a"), randomBytes(3)];
    for (const level of [-1, 1, 3, 9]) {
      for (const raw of chunks) {
        const data = encodeChunk("zstd", raw, level);
        assert.ok(decodeChunk("zstd", data, raw.length).equals(raw));
      }
    }
    assert.ok(encodeChunk("zstd", Buffer.alloc(1024 * 1024), 3).length < 1024);
  });

  it("refuses to decode a frame to any size but the one the chunk states", () => {
    const data = encodeChunk("zstd", Buffer.alloc(4096, 1), 3);
    assert.throws(() => decodeChunk("zstd", data, 1024));
    assert.throws(() => decodeChunk("zstd", data, 8192));
    assert.throws(() => decodeChunk("zstd", Buffer.from("not zstd at all"), 10));
    assert.throws(() => decodeChunk("identity", Buffer.alloc(5), 6), /chunk has 5 bytes, says 6/);
  });

  it("names the implementation, and checks codec names and levels", () => {
    assert.ok(["node:zlib", "zstd-napi"].includes(zstd().implementation));
    assert.equal(parseCodec(""), "zstd");
    assert.equal(parseCodec("identity"), "identity");
    assert.throws(() => parseCodec("gzip"), /codec: unknown codec "gzip"; known: zstd, identity/);
    assert.throws(() => checkLevel(23), /level: must be an integer from -7 to 22, got 23/);
    assert.equal(checkLevel(3), 3);
  });
});
