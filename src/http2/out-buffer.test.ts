import assert from "node:assert/strict";
import { test } from "node:test";
import { freeSlabCount, OutBuffer, poisonFreedSlabs, SLAB_SIZE } from "./out-buffer.ts";

function bytes(n: number, fill: number): Buffer {
  return Buffer.alloc(n, fill);
}

test("nothing queued takes as undefined", () => {
  const out = new OutBuffer();
  assert.equal(out.take(), undefined);
  assert.equal(out.bytes, 0);
});

test("frames written in place come out as one view, in order", () => {
  const out = new OutBuffer();
  out.write(Buffer.from([1, 2, 3]));
  const at = out.reserve(2);
  out.slab[at] = 4;
  out.slab[at + 1] = 5;
  assert.equal(out.bytes, 5);
  const pieces = out.take()!;
  assert.equal(pieces.length, 1);
  assert.deepEqual([...pieces[0]!], [1, 2, 3, 4, 5]);
  assert.equal(out.bytes, 0);
  assert.equal(out.take(), undefined);
});

test("copied payloads keep their place between written bytes and run on across slabs", () => {
  const out = new OutBuffer();
  const big = Buffer.alloc(SLAB_SIZE + 5000);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  out.write(Buffer.from([1]));
  out.copy(big);
  out.write(Buffer.from([2]));
  const joined = Buffer.concat(out.take()!);
  assert.equal(joined.length, big.length + 2);
  assert.equal(joined[0], 1);
  assert.ok(joined.subarray(1, 1 + big.length).equals(big));
  assert.equal(joined[joined.length - 1], 2);
});

test("slabs go back to the pool only once the take holding their last bytes is written", () => {
  poisonFreedSlabs(true);
  try {
    const out = new OutBuffer();
    out.copy(Buffer.alloc(SLAB_SIZE, 1)); // fills slab A exactly
    out.copy(Buffer.alloc(10, 2)); // A retired, slab B started
    const first = out.take()!;
    const seq1 = out.seq;
    const before = freeSlabCount();
    out.copy(Buffer.alloc(SLAB_SIZE, 3)); // fills B, retires it, starts C
    const second = out.take()!;
    const seq2 = out.seq;
    assert.equal(freeSlabCount(), before, "nothing is free before a write completes");
    out.written(seq1);
    assert.equal(freeSlabCount(), before + 1, "A is free once the first take is written");
    // B's last bytes are in the second take: still untouched.
    assert.ok(first[1]!.every((b) => b === 2));
    assert.ok(second[0]!.every((b) => b === 3));
    out.written(seq2);
    assert.equal(freeSlabCount(), before + 2);
    // Poisoned: the views of the first take now read 0xEE (they must not be used after `written`).
    assert.ok(first[0]!.every((b) => b === 0xee));
  } finally {
    poisonFreedSlabs(false);
  }
});

test("a slab dropped while its bytes are in flight waits for their write; one already written is freed at once", () => {
  const out = new OutBuffer();
  out.write(Buffer.alloc(SLAB_SIZE - 100, 1)); // little room left: dropped at the take
  out.take();
  const before = freeSlabCount();
  out.release();
  assert.equal(freeSlabCount(), before);
  out.written(out.seq);
  assert.equal(freeSlabCount(), before + 1);
  out.write(Buffer.alloc(10, 4));
  out.take();
  out.written(out.seq);
  const mid = freeSlabCount();
  out.release(); // all written: back at once
  assert.equal(freeSlabCount(), mid + 1);
});

test("views already taken are never overwritten by later frames", () => {
  const out = new OutBuffer();
  out.write(bytes(100, 1));
  const first = out.take()!;
  out.write(bytes(100, 2));
  const second = out.take()!;
  assert.ok(first[0]!.every((b) => b === 1));
  assert.ok(second[0]!.every((b) => b === 2));
});

test("a full slab is sealed and a new one started; a frame larger than a slab gets its own", () => {
  const out = new OutBuffer();
  out.write(bytes(SLAB_SIZE - 10, 1));
  out.write(bytes(20, 2));
  out.write(bytes(SLAB_SIZE * 2, 3));
  const pieces = out.take()!;
  assert.deepEqual(
    pieces.map((p) => p.length),
    [SLAB_SIZE - 10, 20, SLAB_SIZE * 2],
  );
  assert.ok(pieces[0]!.every((b) => b === 1));
  assert.ok(pieces[1]!.every((b) => b === 2));
  assert.ok(pieces[2]!.every((b) => b === 3));
});

test("release drops an idle slab but never pending bytes", () => {
  const out = new OutBuffer();
  out.write(bytes(10, 1));
  out.release();
  assert.equal(out.bytes, 10);
  assert.deepEqual(
    out.take()!.map((p) => p.length),
    [10],
  );
  out.release();
  assert.equal(out.slab.length, 0);
  out.write(bytes(3, 9));
  assert.deepEqual([...out.take()![0]!], [9, 9, 9]);
});
