import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError } from "../core/errors.ts";
import { formatDuration, parseDuration } from "./duration.ts";

describe("parseDuration", () => {
  const table: [string, number][] = [
    ["250ms", 250],
    ["3s", 3000],
    ["1.5s", 1500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["10", 10_000],
    ["0", 0],
    [" 30s ", 30_000],
    [".5s", 500],
  ];
  for (const [text, ms] of table) {
    it(`reads "${text}" as ${ms} ms`, () => assert.equal(parseDuration(text, "--duration"), ms));
  }

  for (const bad of ["", "s", "-1s", "3 days", "1e3", "10x", "1,5s"]) {
    it(`rejects "${bad}" naming the flag`, () => {
      assert.throws(
        () => parseDuration(bad, "--warmup"),
        (err: unknown) => err instanceof ConfigError && err.field === "--warmup",
      );
    });
  }
});

describe("formatDuration", () => {
  it("prints milliseconds, seconds and minutes compactly", () => {
    assert.equal(formatDuration(850), "850ms");
    assert.equal(formatDuration(3000), "3s");
    assert.equal(formatDuration(1500), "1.5s");
    assert.equal(formatDuration(120_000), "2m");
    assert.equal(formatDuration(150_000), "2m30s");
  });
});
