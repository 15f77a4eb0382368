import assert from "node:assert/strict";
import { it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { inRegion, laptop } from "./presets.ts";
import { buildServiceConfig, methodsOf } from "./service-config.ts";

const catalog = protoLoader.loadSync(new URL("../../test/fixtures/catalog.proto", import.meta.url).pathname, {
  keepCase: true,
})["roster.test.Catalog"] as unknown as grpc.ServiceDefinition;

it("retries the methods the proto declares idempotent and hedges only the ones without side effects", () => {
  const methods = methodsOf(catalog);
  assert.deepEqual(
    methods.map((m) => `${m.key} retried=${m.retried} hedged=${m.hedged}`),
    [
      "Get retried=true hedged=true",
      "Put retried=true hedged=false",
      "Buy retried=false hedged=false",
      "Sell retried=false hedged=false",
    ],
  );
});

it("adds and removes marks by name or path, and names a method that does not exist", () => {
  const methods = methodsOf(catalog, {
    idempotent: ["Buy"],
    hedge: ["/roster.test.Catalog/Put"],
    noHedge: ["Get"],
  });
  assert.deepEqual(
    methods.map((m) => `${m.key} ${m.retried} ${m.hedged}`),
    ["Get true false", "Put true true", "Buy true false", "Sell false false"],
  );
  assert.throws(
    () => methodsOf(catalog, { hedge: ["Gte"] }),
    /hedge: no method Gte in the service \(has Get, Put, Buy, Sell\)/,
  );
});

it("builds an A6 retryPolicy for the retried methods, with the budget as retryThrottling", () => {
  const config = buildServiceConfig({
    policy: "round_robin",
    methods: methodsOf(catalog),
    retry: inRegion().retry,
    budget: { maxTokens: 10, tokenRatio: 0.1 },
  });
  assert.deepEqual(config, {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [
          { service: "roster.test.Catalog", method: "Get" },
          { service: "roster.test.Catalog", method: "Put" },
        ],
        retryPolicy: {
          maxAttempts: 3,
          initialBackoff: "0.02s",
          maxBackoff: "0.5s",
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
    retryThrottling: { maxTokens: 10, tokenRatio: 0.1 },
  });
});

it("leaves retries out when the preset turns them off or allows one attempt", () => {
  for (const retry of [false as const, { ...(laptop().retry as object), maxAttempts: 1 }]) {
    const config = buildServiceConfig({
      policy: "roster_peak_ewma",
      policyConfig: { x: 1 },
      methods: methodsOf(catalog),
      retry: retry as Parameters<typeof buildServiceConfig>[0]["retry"],
      budget: { maxTokens: 10, tokenRatio: 0.1 },
    });
    assert.deepEqual(config, { loadBalancingConfig: [{ roster_peak_ewma: { x: 1 } }] });
  }
});
