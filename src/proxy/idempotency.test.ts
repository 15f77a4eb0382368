import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ConfigError } from "../core/errors.ts";
import { declaredIdempotent, idempotentPathsFromProtos } from "./idempotency.ts";

const dir = mkdtempSync(join(tmpdir(), "roster-idem-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const proto = join(dir, "shop.proto");
writeFileSync(
  proto,
  `syntax = "proto3";
package shop;
message Item { string id = 1; }
service Catalog {
  rpc Get(Item) returns (Item) { option idempotency_level = NO_SIDE_EFFECTS; }
  rpc Put(Item) returns (Item) { option idempotency_level = IDEMPOTENT; }
  rpc Buy(Item) returns (Item);
  rpc Watch(Item) returns (stream Item) { option idempotency_level = NO_SIDE_EFFECTS; }
}
service Orders {
  rpc Place(Item) returns (Item) { option idempotency_level = IDEMPOTENCY_UNKNOWN; }
}
`,
);

describe("idempotency_level", () => {
  it("finds the methods declared NO_SIDE_EFFECTS or IDEMPOTENT, and no others", () => {
    assert.deepEqual(idempotentPathsFromProtos([proto], [], "retry.idempotentProtos"), [
      "/shop.Catalog/Get",
      "/shop.Catalog/Put",
      "/shop.Catalog/Watch",
    ]);
  });

  it("reads the option in either form proto-loader may give", () => {
    assert.equal(declaredIdempotent({ idempotency_level: "IDEMPOTENT" }), true);
    assert.equal(declaredIdempotent({ idempotency_level: 1 }), true);
    assert.equal(declaredIdempotent({ idempotency_level: "IDEMPOTENCY_UNKNOWN" }), false);
    assert.equal(declaredIdempotent({ idempotency_level: 0 }), false);
    assert.equal(declaredIdempotent(undefined), false);
    assert.equal(declaredIdempotent({}), false);
  });

  it("names the field and the file when a proto cannot be loaded", () => {
    const bad = join(dir, "bad.proto");
    writeFileSync(bad, "syntax = 'proto3'; service { }");
    assert.throws(
      () => idempotentPathsFromProtos([proto, bad], [], "roster.yaml: retry.idempotentProtos"),
      (err: unknown) =>
        err instanceof ConfigError &&
        /retry\.idempotentProtos\[1\]/.test(err.message) &&
        err.message.includes("bad.proto"),
    );
    assert.throws(
      () => idempotentPathsFromProtos([join(dir, "missing.proto")], [], "f"),
      (err: unknown) => err instanceof ConfigError && err.message.includes("missing.proto"),
    );
  });
});
