import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createClassifier, MAX_CLASS_LENGTH, parseClassifierConfig } from "./classify.ts";
import { lookupOfRecord } from "./headers.ts";

const classify = (raw: unknown, headers: Record<string, string>) =>
  createClassifier(parseClassifierConfig(raw, "classifier"))(lookupOfRecord(headers));

describe("request classifier", () => {
  it('reads a header, and a call without it gets the class ""', () => {
    assert.equal(classify({ header: "X-Tenant" }, { "x-tenant": "acme" }), "acme");
    assert.equal(classify({ header: "x-tenant" }, {}), "");
  });

  it("takes the authority without port and leading www., lower-cased", () => {
    assert.equal(classify({ authority: true }, { ":authority": "WWW.Example.com:443" }), "example.com");
    assert.equal(classify({ authority: true }, { ":authority": "api.example.com" }), "api.example.com");
  });

  it("takes the full method", () => {
    assert.equal(classify({ method: true }, { ":path": "/pkg.Svc/Get" }), "/pkg.Svc/Get");
  });

  it('takes a regex\'s class group from the method, the authority or a header, and no match is ""', () => {
    const raw = { regex: "^/pkg\\.(?<class>\\w+)/", from: "method" };
    assert.equal(classify(raw, { ":path": "/pkg.Users/Get" }), "Users");
    assert.equal(classify(raw, { ":path": "/other.Users/Get" }), "");
    assert.equal(
      classify({ regex: "^(?<class>[a-z]+)-", from: "header:x-user" }, { "x-user": "eu-42" }),
      "eu",
    );
  });

  it("cuts long classes and drops ones that are not printable ASCII", () => {
    assert.equal(classify({ header: "x-t" }, { "x-t": "a".repeat(500) }).length, MAX_CLASS_LENGTH);
    assert.equal(classify({ header: "x-t" }, { "x-t": "a\u0001b" }), "");
  });

  it("names the field of every bad setting", () => {
    const cases: Array<[unknown, RegExp]> = [
      ["x-tenant", /classifier: must be \{ header \}/],
      [{ header: "bad header" }, /classifier\.header: must be a header name/],
      [{ authority: "yes" }, /classifier\.authority: must be true/],
      [{ regex: "(", from: "method" }, /classifier\.regex: is not a valid regular expression/],
      [{ regex: "^/x", from: "method" }, /classifier\.regex: needs a named group/],
      [{ regex: "(?<class>x)", from: "path" }, /classifier\.from: must be/],
      [{ header: "a", method: true }, /classifier: must have exactly one/],
    ];
    for (const [raw, re] of cases) assert.throws(() => parseClassifierConfig(raw, "classifier"), re);
  });
});
