// The `healthCheck` and `outlierDetection` settings of `roster lb`: off by default, defaults filled, and
// every error naming the file and the field.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { parseLbConfigText, resolveLbConfig } from "../../src/proxy/config.ts";

/** The settings of the cluster "default" (the top-level backends). */
const load = (yaml: string) =>
  resolveLbConfig(
    parseLbConfigText(yaml, "roster.yaml"),
    createDefaultRegistry(),
    "roster.yaml",
  ).clusters.get("default")!;

describe("health settings of roster lb", () => {
  test("health checking and outlier detection are off by default", () => {
    const c = load("backends: [127.0.0.1:7001]\n");
    assert.equal(c.healthCheck, undefined);
    assert.equal(c.outlierDetection, undefined);
  });

  test("an empty healthCheck turns checks on with the defaults", () => {
    const c = load("backends: [127.0.0.1:7001]\nhealthCheck: {}\n");
    assert.deepEqual(c.healthCheck, { service: "", intervalMs: 1000, timeoutMs: 1000 });
    const named = load("backends: [127.0.0.1:7001]\nhealthCheck: { service: pkg.Svc, intervalMs: 500 }\n");
    assert.deepEqual(named.healthCheck, { service: "pkg.Svc", intervalMs: 500, timeoutMs: 1000 });
  });

  test("outlierDetection takes gRFC A50's settings and fills their defaults", () => {
    const c = load(
      [
        "backends: [127.0.0.1:7001]",
        "outlierDetection:",
        "  intervalMs: 5000",
        "  failurePercentageEjection: { threshold: 60 }",
        "",
      ].join("\n"),
    );
    assert.deepEqual(c.outlierDetection, {
      intervalMs: 5000,
      baseEjectionTimeMs: 30_000,
      maxEjectionTimeMs: 300_000,
      maxEjectionPercent: 10,
      successRateEjection: null,
      failurePercentageEjection: {
        threshold: 60,
        enforcementPercentage: 100,
        minimumHosts: 5,
        requestVolume: 50,
      },
    });
  });

  test("every bad setting is named with its file and field", () => {
    const cases: [string, RegExp][] = [
      ["healthCheck: { intervalMs: 0 }", /^roster\.yaml: healthCheck\.intervalMs: /],
      ["healthCheck: { timeoutMs: 1.5 }", /^roster\.yaml: healthCheck\.timeoutMs: /],
      ["healthCheck: { servce: x }", /^roster\.yaml: healthCheck: unknown setting "servce"/],
      ["healthCheck: { service: 7 }", /^roster\.yaml: healthCheck\.service: /],
      ["outlierDetection: 3", /^roster\.yaml: outlierDetection: must be an object$/],
      [
        "outlierDetection: { intervalMs: 0 }",
        /^roster\.yaml: outlierDetection\.intervalMs: must be at least 1, got 0$/,
      ],
      [
        "outlierDetection: { maxEjectionPercent: 120 }",
        /^roster\.yaml: outlierDetection\.maxEjectionPercent: must be at most 100/,
      ],
      ["outlierDetection: { interval: 1 }", /^roster\.yaml: outlierDetection\.interval: unknown setting/],
      [
        "outlierDetection: { failurePercentageEjection: { threshold: 101 } }",
        /^roster\.yaml: outlierDetection\.failurePercentageEjection\.threshold: must be at most 100/,
      ],
      [
        "outlierDetection: { successRateEjection: { stdevFactor: -1 } }",
        /^roster\.yaml: outlierDetection\.successRateEjection\.stdevFactor: must be at least 0/,
      ],
    ];
    for (const [yaml, message] of cases) {
      assert.throws(
        () => load(`backends: [127.0.0.1:7001]\n${yaml}\n`),
        (err: Error) => message.test(err.message),
        yaml,
      );
    }
  });
});
