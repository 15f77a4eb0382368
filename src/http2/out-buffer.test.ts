import assert from "node:assert/strict";
import { test } from "node:test";
import { OutBuffer, SLAB_SIZE } from "./out-buffer.ts";

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

test("appended buffers keep their place between written bytes and are not copied", () => {
  const out = new OutBuffer();
  const big = bytes(5000, 7);
  out.write(Buffer.from([1]));
  out.append(big);
  out.write(Buffer.from([2]));
  const pieces = out.take()!;
  assert.equal(pieces.length, 3);
  assert.deepEqual([...pieces[0]!], [1]);
  assert.equal(pieces[1], big);
  assert.deepEqual([...pieces[2]!], [2]);
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
