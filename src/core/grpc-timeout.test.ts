import assert from "node:assert/strict";
import { it } from "node:test";
import { formatGrpcTimeout, parseGrpcTimeout } from "./grpc-timeout.ts";

it("parses every unit of grpc-timeout into milliseconds", () => {
  const table: Array<[string, number]> = [
    ["1H", 3_600_000],
    ["2M", 120_000],
    ["3S", 3000],
    ["250m", 250],
    ["1500u", 1.5],
    ["2000000n", 2],
    ["99999999m", 99_999_999],
  ];
  for (const [text, ms] of table) assert.equal(parseGrpcTimeout(text), ms, text);
});

it("rejects malformed grpc-timeout values", () => {
  for (const bad of ["", "m", "10", "10x", "-1S", "1.5S", "123456789S", " 1S", "1s"]) {
    assert.equal(parseGrpcTimeout(bad), undefined, JSON.stringify(bad));
  }
});

it("formats a remaining time in the finest unit that fits, never shorter than the truth", () => {
  assert.equal(formatGrpcTimeout(1.0004), "1001u");
  assert.equal(formatGrpcTimeout(99_999.9), "99999900u");
  assert.equal(formatGrpcTimeout(100_000), "100000m");
  assert.equal(formatGrpcTimeout(0), "1u");
  assert.equal(formatGrpcTimeout(200_000_000), "200000S");
  for (const ms of [0.001, 5, 1234.5678, 3_000_000, 9e10]) {
    assert.ok(parseGrpcTimeout(formatGrpcTimeout(ms))! >= ms, `round trip of ${ms}`);
  }
});
