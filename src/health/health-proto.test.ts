import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  decodeHealthResponse,
  encodeHealthRequest,
  MessageReader,
  ServingStatus,
  servingStatusName,
} from "./health-proto.ts";

function framed(body: number[]): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  Buffer.from(body).copy(out, 5);
  return out;
}

describe("health-proto", () => {
  test("the empty service name encodes as an empty message", () => {
    assert.deepEqual([...encodeHealthRequest("")], [0, 0, 0, 0, 0]);
  });

  test("a service name encodes as field 1, its length and its UTF-8 bytes", () => {
    assert.deepEqual([...encodeHealthRequest("a.B")], [0, 0, 0, 0, 5, 0x0a, 3, 0x61, 0x2e, 0x42]);
    const long = "x".repeat(200);
    const bytes = encodeHealthRequest(long);
    assert.deepEqual([...bytes.subarray(0, 8)], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    assert.equal(bytes.length, 5 + 3 + 200);
  });

  test("a response's status is read, and a missing one is UNKNOWN", () => {
    assert.equal(decodeHealthResponse(Buffer.from([0x08, 0x01])), ServingStatus.SERVING);
    assert.equal(decodeHealthResponse(Buffer.from([0x08, 0x02])), ServingStatus.NOT_SERVING);
    assert.equal(decodeHealthResponse(Buffer.alloc(0)), ServingStatus.UNKNOWN);
  });

  test("unknown fields of every wire type are skipped", () => {
    const varint150 = [0x10, 0x96, 0x01]; // field 2, varint
    const fixed64 = [0x19, 1, 2, 3, 4, 5, 6, 7, 8]; // field 3
    const bytes = [0x22, 0x02, 0x41, 0x42]; // field 4, "AB"
    const fixed32 = [0x2d, 1, 2, 3, 4]; // field 5
    const status = [0x08, 0x03]; // field 1: SERVICE_UNKNOWN
    const body = Buffer.from([...varint150, ...fixed64, ...bytes, ...fixed32, ...status]);
    assert.equal(decodeHealthResponse(body), ServingStatus.SERVICE_UNKNOWN);
  });

  test("malformed bodies throw", () => {
    assert.throws(() => decodeHealthResponse(Buffer.from([0x08])), /truncated varint/);
    assert.throws(() => decodeHealthResponse(Buffer.from([0x22, 0x05, 0x41])), /truncated field/);
    assert.throws(() => decodeHealthResponse(Buffer.from([0x0b])), /wire type 3/);
    assert.throws(() => decodeHealthResponse(Buffer.from([0x00, 0x01])), /field number 0/);
  });

  test("serving status names cover the enum and name other values", () => {
    assert.equal(servingStatusName(2), "NOT_SERVING");
    assert.equal(servingStatusName(7), "ServingStatus 7");
  });

  test("the message reader reassembles messages split across chunks and joins several in one", () => {
    const reader = new MessageReader();
    const two = Buffer.concat([framed([0x08, 0x01]), framed([0x08, 0x02])]);
    assert.deepEqual(reader.push(two.subarray(0, 3)), []);
    assert.deepEqual(
      reader.push(two.subarray(3, 9)).map((m) => [...m]),
      [[0x08, 0x01]],
    );
    assert.equal(reader.pendingBytes, 2);
    assert.deepEqual(
      reader.push(two.subarray(9)).map((m) => [...m]),
      [[0x08, 0x02]],
    );
    assert.equal(reader.pendingBytes, 0);
  });

  test("the message reader refuses compressed and oversized messages", () => {
    assert.throws(() => new MessageReader().push(Buffer.from([1, 0, 0, 0, 0])), /compressed/);
    assert.throws(() => new MessageReader(10).push(Buffer.from([0, 0, 0, 0, 11])), /larger than 10/);
  });
});
