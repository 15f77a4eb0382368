import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError } from "../core/errors.ts";
import { type BenchFlags, parseBenchFlags, parseCall, parseMetadata } from "./options.ts";

const base: BenchFlags = { target: "127.0.0.1:50051", proto: "echo.proto", call: "pkg.Echo/Echo" };

function fails(flags: BenchFlags, field: string, pattern?: RegExp): void {
  assert.throws(
    () => parseBenchFlags(flags),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
      assert.equal(err.field, field);
      if (pattern !== undefined) assert.match(err.message, pattern);
      return true;
    },
  );
}

describe("parseBenchFlags", () => {
  it("defaults to a 10 s closed loop of 16 after a 2 s warm-up", () => {
    const s = parseBenchFlags(base);
    assert.deepEqual(s.targets, ["127.0.0.1:50051"]);
    assert.equal(s.compare, false);
    assert.equal(s.service, "pkg.Echo");
    assert.equal(s.method, "Echo");
    assert.deepEqual(s.load, { kind: "closed", concurrency: 16 });
    assert.deepEqual(s.stop, { kind: "duration", ms: 10_000 });
    assert.equal(s.warmupMs, 2000);
    assert.equal(s.timeoutMs, 10_000);
    assert.equal(s.connections, 1);
    assert.equal(s.workers, 1);
    assert.equal(s.backendHeader, "x-roster-backend");
    assert.equal(s.progress, true);
  });

  it("reads an open loop with a call count", () => {
    const s = parseBenchFlags({ ...base, rate: "500", calls: "1000", maxInFlight: "64" });
    assert.deepEqual(s.load, { kind: "open", rate: 500, maxInFlight: 64 });
    assert.deepEqual(s.stop, { kind: "calls", count: 1000 });
  });

  it("reads --compare as a list of targets", () => {
    const s = parseBenchFlags({
      ...base,
      target: undefined,
      compare: "127.0.0.1:1, 127.0.0.1:2",
      slice: "500ms",
    });
    assert.deepEqual(s.targets, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert.equal(s.compare, true);
    assert.equal(s.sliceMs, 500);
  });

  it("accepts numbers from scripts as well as strings", () => {
    const s = parseBenchFlags({ ...base, concurrency: 4, connections: 2, payloadSize: 64, workers: 2 });
    assert.deepEqual(s.load, { kind: "closed", concurrency: 4 });
    assert.equal(s.connections, 2);
    assert.equal(s.payloadSize, 64);
  });

  it("names the flag at fault", () => {
    fails({ ...base, target: undefined }, "--target", /required/);
    fails({ ...base, target: "localhost" }, "--target", /HOST:PORT/);
    fails({ ...base, target: "127.0.0.1:70000" }, "--target");
    fails({ ...base, proto: undefined }, "--proto");
    fails({ ...base, call: undefined }, "--call");
    fails({ ...base, call: "Echo" }, "--call");
    fails({ ...base, concurrency: "0" }, "--concurrency", /at least 1/);
    fails({ ...base, concurrency: "2.5" }, "--concurrency", /whole number/);
    fails({ ...base, concurrency: "x" }, "--concurrency", /not a number/);
    fails({ ...base, rate: "0" }, "--rate");
    fails({ ...base, rate: "100", concurrency: "4" }, "--rate", /not both/);
    fails({ ...base, maxInFlight: "4" }, "--max-in-flight", /open loop/);
    fails({ ...base, calls: "10", duration: "3s" }, "--calls", /not both/);
    fails({ ...base, duration: "0s" }, "--duration");
    fails({ ...base, warmup: "soon" }, "--warmup");
    fails({ ...base, data: "{}", dataFile: "x.json" }, "--data");
    fails({ ...base, workers: "0" }, "--workers");
    fails({ ...base, workers: "4", concurrency: "2" }, "--workers", /cannot share/);
    fails({ ...base, compare: "127.0.0.1:1" }, "--compare", /drop --target/);
    fails({ ...base, target: undefined, compare: "127.0.0.1:1" }, "--compare", /two or more/);
    fails({ ...base, target: undefined, compare: "127.0.0.1:1,127.0.0.1:1" }, "--compare", /twice/);
    fails({ ...base, slice: "1s" }, "--slice", /--compare only/);
    fails(
      {
        ...base,
        target: undefined,
        compare: "127.0.0.1:1,127.0.0.1:2",
        rate: "4",
        workers: "2",
        slice: "400ms",
      },
      "--slice",
      /less than one call per worker/,
    );
    fails({ ...base, backendHeader: "X Backend" }, "--backend-header");
    fails({ ...base, backendField: "a-b" }, "--backend-field");
    fails({ ...base, json: " " }, "--json");
    fails({ ...base, streamMessages: "0" }, "--stream-messages");
  });
});

describe("parseCall", () => {
  it("accepts the slash, leading-slash and dotted forms", () => {
    assert.deepEqual(parseCall("pkg.v1.Echo/Say"), { service: "pkg.v1.Echo", method: "Say" });
    assert.deepEqual(parseCall("/pkg.Echo/Say"), { service: "pkg.Echo", method: "Say" });
    assert.deepEqual(parseCall("pkg.Echo.Say"), { service: "pkg.Echo", method: "Say" });
    assert.deepEqual(parseCall("Echo/Say"), { service: "Echo", method: "Say" });
  });
  it("rejects what is not a method path", () => {
    for (const bad of ["", "Say", "/Say", "pkg.Echo/", "pkg..Echo/Say", "pkg.Echo/Sa y"]) {
      assert.throws(() => parseCall(bad), ConfigError, bad);
    }
  });
});

describe("parseMetadata", () => {
  it("lower-cases keys and keeps values", () => {
    assert.deepEqual(parseMetadata("X-Tenant=a=b"), ["x-tenant", "a=b"]);
    assert.deepEqual(parseMetadata("trace-bin=AAEC"), ["trace-bin", "AAEC"]);
  });
  it("rejects reserved keys, bad keys and non-base64 binary values", () => {
    for (const bad of ["novalue", "=x", "grpc-timeout=1S", "te=trailers", "a b=c", "k-bin=%%%", "k=\u00e9"]) {
      assert.throws(() => parseMetadata(bad), ConfigError, bad);
    }
  });
});
