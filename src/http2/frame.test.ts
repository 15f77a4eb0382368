// FrameReader: frames cut from a byte stream however the reads split it; a frame spread over reads is
// delivered whole; a frame larger than the limit is refused as soon as its header is in.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SeededRandom } from "../../test/support/seeded-random.ts";
import { FRAME_HEADER_SIZE, FrameReader, frameHeader } from "./frame.ts";

interface F {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

function encode(f: F): Buffer {
  return Buffer.concat([frameHeader(f.payload.length, f.type, f.flags, f.id), f.payload]);
}

describe("FrameReader", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`delivers the same frames however the stream is split (seed ${seed})`, () => {
      const random = new SeededRandom(seed);
      const int = (n: number) => Math.floor(random.next() * n);
      const frames: F[] = [];
      for (let i = 0; i < 200; i++) {
        const size = [0, 1, 8, 9, 100, 16_384][int(6)]!;
        const payload = Buffer.alloc(size);
        for (let j = 0; j < size; j++) payload[j] = int(256);
        frames.push({ type: int(10), flags: int(256), id: int(2 ** 31), payload });
      }
      const stream = Buffer.concat(frames.map(encode));
      const got: F[] = [];
      const reader = new FrameReader();
      let at = 0;
      let reads = 0;
      while (at < stream.length) {
        // Reads from 1 byte to 40 KiB, the small ones often (header bytes split across reads).
        const n = int(4) === 0 ? 1 + int(12) : 1 + int(40_000);
        const piece = Buffer.from(stream.subarray(at, at + n));
        at += n;
        reads++;
        assert.equal(
          reader.push(piece, (type, flags, id, payload) =>
            got.push({ type, flags, id, payload: Buffer.from(payload) }),
          ),
          undefined,
        );
        // Whatever was not delivered is held, and nothing more.
        const delivered = got.reduce((sum, f) => sum + FRAME_HEADER_SIZE + f.payload.length, 0);
        assert.equal(reader.buffered, Math.min(at, stream.length) - delivered);
      }
      assert.ok(reads > 20);
      assert.equal(reader.buffered, 0);
      assert.deepEqual(got, frames);
    });
  }

  it("refuses a frame over the limit once its header is in, even split across reads", () => {
    const reader = new FrameReader(16_384);
    const head = frameHeader(16_385, 0, 0, 1);
    const sink = () => assert.fail("no frame is delivered");
    assert.equal(reader.push(head.subarray(0, 2), sink), undefined);
    assert.equal(reader.push(head.subarray(2, 5), sink), undefined);
    assert.equal(reader.push(Buffer.concat([head.subarray(5), Buffer.alloc(100)]), sink), 16_385);
    assert.equal(reader.push(Buffer.alloc(20_000), sink), undefined); // nothing after the failure
    assert.equal(reader.buffered, 0);
  });

  it("stops delivering when the sink stops it, mid-read and mid-frame", () => {
    const reader = new FrameReader();
    const a = encode({ type: 0, flags: 0, id: 1, payload: Buffer.alloc(10) });
    const b = encode({ type: 0, flags: 0, id: 3, payload: Buffer.alloc(10) });
    const ids: number[] = [];
    reader.push(a.subarray(0, 12), () => assert.fail("not whole yet"));
    reader.push(Buffer.concat([a.subarray(12), b]), (_t, _f, id) => {
      ids.push(id);
      reader.stop();
    });
    assert.deepEqual(ids, [1]);
    assert.equal(reader.buffered, 0);
  });
});
