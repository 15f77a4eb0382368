import assert from "node:assert/strict";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import { createClient } from "./create-client.ts";
import { inRegion, type PresetOverrides } from "./presets.ts";

const ECHO_PROTO = fileURLToPath(new URL("../../test/support/echo.proto", import.meta.url));

it("refuses settings that cannot hold when the client is made, naming the field", () => {
  const cases: [PresetOverrides, RegExp][] = [
    [{ budget: { maxTokens: 0 } }, /budget\.maxTokens: must be at least 1, got 0/],
    [{ limiter: { maxConcurrent: 0 } }, /limiter\.maxConcurrent: must be an integer ≥ 1, got 0/],
    [{ limiter: { maxQueue: -1 } }, /limiter\.maxQueue: must be an integer ≥ 0, got -1/],
    [{ pool: { min: 3, max: 2 } }, /pool\.max: must be an integer ≥ min \(3\), got 2/],
    [{ deadlineMs: 0 }, /deadlineMs: must be > 0, got 0/],
    [
      { retry: { retryableStatusCodes: ["NOPE"] } },
      /retry\.retryableStatusCodes: NOPE is not a gRPC status name/,
    ],
    [{ retry: { maxAttempts: 0 } }, /retry\.maxAttempts: must be an integer ≥ 1, got 0/],
    [{ hedging: { percentile: 100 } }, /hedging\.percentile: must be in \(0, 100\), got 100/],
  ];
  for (const [overrides, error] of cases) {
    assert.throws(
      () =>
        createClient({
          proto: ECHO_PROTO,
          service: "roster.test.Echo",
          target: "127.0.0.1:1",
          preset: inRegion(overrides),
        }).close(),
      error,
      JSON.stringify(overrides),
    );
  }
});

it("says per method what it retries and hedges, and refuses a method named like its own controls", () => {
  const client = createClient({
    proto: ECHO_PROTO,
    service: "roster.test.Echo",
    target: "127.0.0.1:1",
    idempotent: ["Stats"],
    hedge: ["Echo"],
  });
  try {
    assert.deepEqual(
      client.methods.map((m) => `${m.key}${m.retried ? " retried" : ""}${m.hedged ? " hedged" : ""}`),
      ["Echo retried hedged", "ServerStream", "ClientStream", "Bidi", "Stats retried"],
    );
  } finally {
    client.close();
  }
  const clashing = { stats: { path: "/x.Y/stats", requestStream: false, responseStream: false } };
  assert.throws(
    () => createClient({ definition: clashing as never, target: "127.0.0.1:1" }),
    /method stats: the name clashes with the client's own stats\(\)/,
  );
});

it("refuses a bad config for one of Roster's policies when the client is made, naming the field", () => {
  const make = (policy: string, policyConfig: object) => () =>
    createClient({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: "127.0.0.1:1",
      policy,
      policyConfig,
    }).close();
  // grpc-js alone would skip the entry and fall back to pick_first.
  assert.throws(make("roster_ring_hash", {}), /roster_ring_hash\.hashKey/);
  assert.throws(make("roster_peak_ewma", { decayMs: -1 }), /roster_peak_ewma\.decayMs/);
  assert.throws(make("roster_resume", { bogus: 1 }), /roster_resume/);
  assert.throws(
    make("roster_nope", {}),
    /policy roster_nope is not registered with grpc-js \(Roster's: roster_round_robin, /,
  );
  make("roster_ring_hash", { hashKey: { header: "x-user" } })();
});
