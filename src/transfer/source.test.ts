import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { openSource, rechunk } from "./source.ts";

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of it) out.push(Buffer.from(c));
  return out;
}

describe("transfer sources", () => {
  it("re-chunks pieces of any size into chunks of exactly the chunk size, the last shorter", async () => {
    const bytes = Buffer.from(Array.from({ length: 10_000 }, (_, i) => i % 251));
    const pieces = [1, 4095, 4096, 1, 1807].reduce<Buffer[]>((acc, n) => {
      const at = acc.reduce((s, b) => s + b.length, 0);
      acc.push(bytes.subarray(at, at + n));
      return acc;
    }, []);
    const chunks = await collect(rechunk(Readable.from(pieces), 4096));
    assert.deepEqual(
      chunks.map((c) => c.length),
      [4096, 4096, 1808],
    );
    assert.ok(Buffer.concat(chunks).equals(bytes));
  });

  it("reads a Buffer and an open(offset) source from any offset; a stream only once from 0", async () => {
    const buf = Buffer.from("0123456789");
    const b = await openSource(buf);
    assert.equal(b.size, 10);
    assert.deepEqual((await collect(b.read(3, 4))).map(String), ["3456", "789"]);
    const gen = await openSource({
      size: 10,
      open: async function* (offset: number) {
        yield buf.subarray(offset);
      },
    });
    assert.deepEqual((await collect(gen.read(8, 4))).map(String), ["89"]);
    const s = await openSource(Readable.from([buf]));
    assert.equal(s.seekable, false);
    assert.equal(s.size, -1);
    assert.throws(() => s.read(5, 4), /read once, from its start/);
    assert.deepEqual((await collect(s.read(0, 4))).map(String), ["0123", "4567", "89"]);
    assert.throws(() => s.read(0, 4), /read once/);
  });
});
