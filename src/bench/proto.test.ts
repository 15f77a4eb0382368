import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import * as protoLoader from "@grpc/proto-loader";
import { ConfigError } from "../core/errors.ts";
import { loadBenchMethod, type MethodSettings, payload } from "./proto.ts";

const dir = mkdtempSync(join(tmpdir(), "roster-bench-proto-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const PROTO = join(dir, "svc.proto");
writeFileSync(
  PROTO,
  `syntax = "proto3";
package t.v1;
service Svc {
  rpc Unary(Req) returns (Rep);
  rpc Down(Req) returns (stream Rep);
  rpc Up(stream Req) returns (Rep);
  rpc Both(stream Req) returns (stream Rep);
}
message Req { string name = 1; uint32 n = 2; bytes blob = 3; bytes other = 4; }
message Rep { string served_by = 1; }
message NoBytes { string s = 1; }
`,
);
const BAD = join(dir, "bad.proto");
writeFileSync(BAD, `syntax = "proto3";\nmessage X { strin a = 1 }\n`);

const base: MethodSettings = {
  protoFile: PROTO,
  importPaths: [],
  service: "t.v1.Svc",
  method: "Unary",
  data: undefined,
  dataFile: undefined,
  payloadSize: undefined,
  streamMessages: 1,
  backendField: undefined,
};

const Req = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true })[
  "t.v1.Req"
] as unknown as {
  deserialize(b: Buffer): { name: string; n: number; blob: Buffer; other: Buffer };
};

function fails(s: Partial<MethodSettings>, field: string, pattern: RegExp): void {
  assert.throws(
    () => loadBenchMethod({ ...base, ...s }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
      assert.equal(err.field, field);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe("loadBenchMethod", () => {
  it("finds the method and encodes the request once", () => {
    const m = loadBenchMethod({ ...base, data: '{"name":"hi","n":7}' });
    assert.equal(m.path, "/t.v1.Svc/Unary");
    assert.equal(m.kind, "unary");
    assert.equal(m.requestType, "Req");
    const req = Req.deserialize(m.request);
    assert.equal(req.name, "hi");
    assert.equal(req.n, 7);
  });

  it("tells the four call kinds apart", () => {
    const kinds = ["Unary", "Down", "Up", "Both"].map((method) => loadBenchMethod({ ...base, method }).kind);
    assert.deepEqual(kinds, ["unary", "server-stream", "client-stream", "bidi"]);
  });

  it("fills the first bytes field with --payload-size bytes", () => {
    const m = loadBenchMethod({ ...base, data: '{"name":"x"}', payloadSize: 1000 });
    const req = Req.deserialize(m.request);
    assert.equal(req.blob.length, 1000);
    assert.equal(req.other.length, 0);
    assert.deepEqual(req.blob, payload(1000));
  });

  it("reads the request from --data-file", () => {
    const file = join(dir, "req.json");
    writeFileSync(file, '{"name":"from file"}');
    assert.equal(Req.deserialize(loadBenchMethod({ ...base, dataFile: file }).request).name, "from file");
  });

  it("decodes responses for --backend-field", () => {
    const m = loadBenchMethod({ ...base, backendField: "served_by" });
    const rep = protoLoader.loadSync(PROTO, { keepCase: true })["t.v1.Rep"] as unknown as {
      serialize(v: object): Buffer;
    };
    assert.equal(m.decodeResponse(rep.serialize({ served_by: "w2" }))["served_by"], "w2");
  });

  it("explains every bad input in one line naming the flag", () => {
    fails({ protoFile: join(dir, "missing.proto") }, "--proto", /cannot read .*missing\.proto: ENOENT/);
    fails({ protoFile: BAD }, "--proto", /bad\.proto does not parse: illegal token/);
    fails({ service: "t.v1.Nope" }, "--call", /no service t\.v1\.Nope .*services: t\.v1\.Svc/);
    fails({ method: "Nope" }, "--call", /t\.v1\.Svc has no method Nope; methods: Unary, Down, Up, Both/);
    fails({ method: "toString" }, "--call", /has no method toString/);
    fails({ data: "{nope" }, "--data", /is not JSON/);
    fails({ data: "[1]" }, "--data", /must be a JSON object/);
    fails({ data: '{"nmae":"x"}' }, "--data", /Req has no field "nmae"; fields .*: name, n, blob, other/);
    fails({ dataFile: join(dir, "none.json") }, "--data-file", /cannot read/);
    fails({ streamMessages: 3 }, "--stream-messages", /unary/);
    fails({ backendField: "nope" }, "--backend-field", /Rep has no field nope/);
  });

  it("refuses --payload-size for a request without a bytes field", () => {
    writeFileSync(
      join(dir, "nobytes.proto"),
      `syntax = "proto3"; package n; service S { rpc M(Q) returns (Q); } message Q { string s = 1; }`,
    );
    fails(
      { protoFile: join(dir, "nobytes.proto"), service: "n.S", method: "M", payloadSize: 8 },
      "--payload-size",
      /Q has no bytes field/,
    );
  });
});
