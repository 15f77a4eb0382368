import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { parseLbConfigText, resolveLbConfig } from "./config.ts";

const registry = createDefaultRegistry();
const load = (yaml: string) =>
  resolveLbConfig(parseLbConfigText(yaml, "roster.yaml"), registry, "roster.yaml");

describe("roster lb config", () => {
  it("fills defaults around the required backends", () => {
    const c = load("backends: [127.0.0.1:7001, unix:/tmp/w.sock]\n");
    assert.equal(c.policy.name, "least_request");
    assert.deepEqual(c.listen, { kind: "tcp", host: "127.0.0.1", port: 50051 });
    assert.deepEqual(
      c.backends.map((b) => b.key),
      ["127.0.0.1:7001", "unix:/tmp/w.sock"],
    );
    assert.equal(c.retryBufferBytes, 262144);
    assert.equal(c.limits.maxConcurrentStreams, 1000);
    assert.equal(c.exposeBackend, false);
  });

  it("takes a policy with options and weighted backends", () => {
    const c = load(
      "policy: { name: least_request, choiceCount: 3 }\nbackends:\n  - { address: 10.0.0.1:1, weight: 2 }\n",
    );
    assert.equal(c.policy.name, "least_request");
    assert.equal(c.backends[0]!.weight, 2);
  });

  it("takes a classifier and the orca switch for the resume policy", () => {
    const c = load("backends: [x:1]\npolicy: resume\nclassifier: { header: X-Tenant }\norca: true\n");
    assert.deepEqual(c.classifier, { header: "x-tenant" });
    assert.equal(c.orca, true);
    assert.equal(load("backends: [x:1]\n").classifier, undefined);
    assert.throws(
      () => load("backends: [x:1]\nclassifier: { regex: '^x', from: method }\n"),
      /roster\.yaml: classifier\.regex: needs a named group/,
    );
  });

  it("names the file and the field in every error", () => {
    const cases: Array<[string, RegExp]> = [
      ["backends: []\n", /roster\.yaml: backends: at least one backend is needed$/],
      ["backends: [1.2.3.4:5, 1.2.3.4:5]\n", /roster\.yaml: backends\[1\]: 1\.2\.3\.4:5 is listed twice$/],
      ["backends: [x:1]\nlisten: nope\n", /roster\.yaml: listen: "nope" is not HOST:PORT/],
      ["backends: [x:1]\npolicy: magic\n", /roster\.yaml: policy: unknown policy "magic"/],
      [
        "backends: [x:1]\npolicy: { name: least_request, choiceCount: 1 }\n",
        /roster\.yaml: policy\.choiceCount: must be at least 2/,
      ],
      ["backends: [x:1]\nretry: { maxAttempts: 0 }\n", /roster\.yaml: retry\.maxAttempts: /],
      ["backends: [x:1]\nlimits: { windowSize: 10 }\n", /roster\.yaml: limits\.windowSize: /],
      ["backends: [x:1]\nlistne: 1.2.3.4:5\n", /roster\.yaml: unknown setting "listne"$/],
      ["backends: [{ adress: x:1 }]\n", /roster\.yaml: backends\[0\]/],
      ["backends: [x:1\n", /roster\.yaml: is not valid YAML/],
    ];
    for (const [yaml, re] of cases) assert.throws(() => load(yaml), re, yaml);
  });
});
