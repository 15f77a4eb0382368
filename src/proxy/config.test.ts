import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { parseLbConfigText, resolveLbConfig } from "./config.ts";

const registry = createDefaultRegistry();
const load = (yaml: string) =>
  resolveLbConfig(parseLbConfigText(yaml, "roster.yaml"), registry, "roster.yaml");
/** The cluster "default": the top-level backends and their settings. */
const main = (yaml: string) => load(yaml).clusters.get("default")!;

describe("roster lb config", () => {
  it("fills defaults around the required backends", () => {
    const c = load("backends: [127.0.0.1:7001, unix:/tmp/w.sock]\n");
    assert.deepEqual([...c.clusters.keys()], ["default"]);
    assert.deepEqual(c.routing, { routes: [], defaultCluster: "default", noRoute: "unimplemented" });
    const d = c.clusters.get("default")!;
    assert.equal(d.policy.name, "least_request");
    assert.deepEqual(c.listen, { kind: "tcp", host: "127.0.0.1", port: 50051 });
    assert.deepEqual(
      d.backends.map((b) => b.key),
      ["127.0.0.1:7001", "unix:/tmp/w.sock"],
    );
    assert.equal(c.retryBufferBytes, 262144);
    assert.equal(c.limits.maxConcurrentStreams, 1000);
    assert.equal(c.limits.sendStallTimeoutMs, 60_000);
    assert.equal(c.exposeBackend, false);
  });

  it("takes a policy with options and weighted backends", () => {
    const c = main(
      "policy: { name: least_request, choiceCount: 3 }\nbackends:\n  - { address: 10.0.0.1:1, weight: 2 }\n",
    );
    assert.equal(c.policy.name, "least_request");
    assert.equal(c.backends[0]!.weight, 2);
  });

  it("takes a classifier and the orca switch for the resume policy", () => {
    const c = main("backends: [x:1]\npolicy: resume\nclassifier: { header: X-Tenant }\norca: true\n");
    assert.deepEqual(c.classifier, { header: "x-tenant" });
    assert.equal(c.orca, true);
    assert.equal(main("backends: [x:1]\n").classifier, undefined);
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
      [
        "backends: [x:1]\nlimits: { keepalive: { maxPingStrikes: -1 } }\n",
        /roster\.yaml: limits\.keepalive\.maxPingStrikes: /,
      ],
      [
        "backends: [x:1]\nlimits: { keepalive: { minPingIntervalMS: 5 } }\n",
        /roster\.yaml: limits\.keepalive: unknown setting "minPingIntervalMS"$/,
      ],
      [
        "backends: [x:1]\nlimits: { maxConnectionAgeMs: 1.5 }\n",
        /roster\.yaml: limits\.maxConnectionAgeMs: /,
      ],
      ["backends: [x:1]\nlimits: { sendStallTimeoutMs: -1 }\n", /roster\.yaml: limits\.sendStallTimeoutMs: /],
      [
        "backends: [x:1]\nretry: { idempotentProtos: [no-such-file.proto] }\n",
        /roster\.yaml: retry\.idempotentProtos\[0\]: cannot load .*no-such-file\.proto/,
      ],
    ];
    for (const [yaml, re] of cases) assert.throws(() => load(yaml), re, yaml);
  });

  it("takes front keepalive and connection age settings, each keepalive field defaulting on its own", () => {
    const c = load(
      "backends: [x:1]\nlimits: { maxConnectionAgeMs: 600000, maxConnectionAgeGraceMs: 5000, keepalive: { minPingIntervalMs: 300000, permitWithoutCalls: false } }\n",
    );
    assert.equal(c.limits.maxConnectionAgeMs, 600_000);
    assert.equal(c.limits.maxConnectionAgeGraceMs, 5000);
    assert.equal(load("backends: [x:1]\nlimits: { sendStallTimeoutMs: 0 }\n").limits.sendStallTimeoutMs, 0);
    assert.deepEqual(c.limits.keepalive, {
      minPingIntervalMs: 300_000,
      maxPingStrikes: 2,
      permitWithoutCalls: false,
      keepaliveTimeMs: 7_200_000,
      keepaliveTimeoutMs: 20_000,
    });
    assert.equal(load("backends: [x:1]\n").limits.keepalive.minPingIntervalMs, 5000);
  });

  it("reads idempotent methods from .proto files (idempotency_level), beside the listed ones", () => {
    // Relative to the config file's folder: this test's config "lives" in the repository root.
    const yaml =
      "backends: [x:1]\nretry: { idempotentMethods: [pkg.Svc/Do], idempotentProtos: [test/fixtures/catalog.proto] }\n";
    const c = resolveLbConfig(parseLbConfigText(yaml, "roster.yaml"), registry, "roster.yaml");
    assert.deepEqual(c.idempotentMethods, [
      "/pkg.Svc/Do",
      "/roster.test.Catalog/Get",
      "/roster.test.Catalog/Put",
    ]);
  });
});

describe("roster lb membership from etcd", () => {
  it("takes discovery instead of backends, at the top level and per cluster", () => {
    const c = load(
      "discovery: etcd://127.0.0.1:2379/services/echo\nclusters:\n  billing: { discovery: 'etcd://10.0.0.1:2379,10.0.0.2:2379/billing/' }\n",
    );
    const d = c.clusters.get("default")!;
    assert.deepEqual(d.backends, []);
    assert.deepEqual(d.discovery, {
      kind: "etcd",
      hosts: ["http://127.0.0.1:2379"],
      prefix: "services/echo",
    });
    assert.deepEqual(c.clusters.get("billing")!.discovery, {
      kind: "etcd",
      hosts: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
      prefix: "billing",
    });
    assert.equal(main("backends: [x:1]\n").discovery, undefined);
    assert.deepEqual(main("discovery: dns:///app.internal:50051\n").discovery, {
      kind: "dns",
      host: "app.internal",
      port: 50051,
      refreshMs: 30_000,
    });
    assert.deepEqual(main("discovery: 'dns://app:1?refreshMs=500'\n").discovery, {
      kind: "dns",
      host: "app",
      port: 1,
      refreshMs: 500,
    });
  });

  it("takes the live settings key, and names the field of a bad one", () => {
    assert.deepEqual(load("backends: [x:1]\nsettings: etcd://127.0.0.1:2379/roster/lb\n").settings, {
      hosts: ["http://127.0.0.1:2379"],
      key: "roster/lb",
    });
    assert.equal(load("backends: [x:1]\n").settings, undefined);
    for (const [yaml, re] of [
      ["backends: [x:1]\nsettings: etcd://127.0.0.1:2379/\n", /^roster\.yaml: settings: .*names no key/],
      [
        "backends: [x:1]\nsettings: http://h:1/k\n",
        /^roster\.yaml: settings: .*is not etcd:\/\/HOST:PORT\/KEY/,
      ],
    ] as const)
      assert.throws(
        () => load(yaml),
        (err: Error) => re.test(err.message),
        yaml,
      );
  });

  it("names the field of a bad discovery URL, and refuses discovery beside backends", () => {
    const cases: Array<[string, RegExp]> = [
      ["discovery: etcd://h:1\n", /^roster\.yaml: discovery: "etcd:\/\/h:1" has no key prefix/],
      [
        "discovery: consul://h:1\n",
        /^roster\.yaml: discovery: .*is not etcd:\/\/HOST:PORT\/PREFIX or dns:\/\/NAME:PORT/,
      ],
      ["discovery: dns://h\n", /^roster\.yaml: discovery: .*HOST:PORT/],
      ["discovery: 'dns://h:1?every=5'\n", /^roster\.yaml: discovery: .*the only option is \?refreshMs/],
      ["clusters:\n  b: { discovery: 'etcd://h/p' }\n", /^roster\.yaml: clusters\.b\.discovery: .*HOST:PORT/],
      ["discovery: 7\n", /^roster\.yaml: discovery: /],
      [
        "backends: [x:1]\ndiscovery: etcd://h:1/p\n",
        /^roster\.yaml: discovery: give backends or discovery, not both/,
      ],
      [
        "clusters:\n  b: { backends: [], discovery: 'etcd://h:1/p' }\n",
        /^roster\.yaml: clusters\.b\.discovery: give/,
      ],
    ];
    for (const [yaml, re] of cases)
      assert.throws(
        () => load(yaml),
        (err: Error) => re.test(err.message),
        yaml,
      );
  });
});

describe("roster lb clusters and routes", () => {
  const twoClusters = [
    "backends: [127.0.0.1:7001]",
    "clusters:",
    "  alpha:",
    "    backends: [127.0.0.1:7101, 127.0.0.1:7102]",
    "    policy: round_robin",
    "    healthCheck: {}",
    "  beta:",
    "    backends: [127.0.0.1:7201]",
    "    classifier: { header: x-tenant }",
    "routes:",
    "  - match: { header: x-upstream }",
    "    clusterFromHeader: true",
    "  - match: { service: pkg.Billing, methodPrefix: /pkg.Billing/Get }",
    "    cluster: beta",
    "",
  ].join("\n");

  it("keeps the top-level backends as the cluster default beside the named clusters", () => {
    const c = load(twoClusters);
    assert.deepEqual([...c.clusters.keys()], ["default", "alpha", "beta"]);
    const alpha = c.clusters.get("alpha")!;
    assert.equal(alpha.policy.name, "round_robin");
    assert.deepEqual(alpha.healthCheck, { service: "", intervalMs: 1000, timeoutMs: 1000 });
    assert.equal(alpha.backends.length, 2);
    assert.equal(c.clusters.get("beta")!.policy.name, "least_request");
    assert.deepEqual(c.clusters.get("beta")!.classifier, { header: "x-tenant" });
    assert.equal(c.clusters.get("default")!.healthCheck, undefined);
    assert.deepEqual(c.routing.routes, [
      { match: { header: { name: "x-upstream", present: true } }, clusterFromHeader: true },
      { match: { service: "pkg.Billing", methodPrefix: "/pkg.Billing/Get" }, cluster: "beta" },
    ]);
    assert.equal(c.routing.defaultCluster, "default");
  });

  it("has no default cluster without top-level backends, and answers calls no route takes as configured", () => {
    const c = load("clusters:\n  a: { backends: [x:1] }\nnoRoute: unavailable\n");
    assert.deepEqual([...c.clusters.keys()], ["a"]);
    assert.equal(c.routing.defaultCluster, undefined);
    assert.equal(c.routing.noRoute, "unavailable");
    assert.equal(
      load("clusters:\n  a: { backends: [x:1] }\ndefaultCluster: a\n").routing.defaultCluster,
      "a",
    );
    // A cluster named default may stand in for the top-level backends.
    assert.equal(load("clusters:\n  default: { backends: [x:1] }\n").routing.defaultCluster, "default");
  });

  it("names the file and the field of every cluster and route error", () => {
    const cases: Array<[string, RegExp]> = [
      [
        "backends: [x:1]\nroutes:\n  - { match: {}, cluster: default }\n  - { match: {}, cluster: default }\n  - { match: { service: a.B }, cluster: billing }\n",
        /^roster\.yaml: routes\[2\]\.cluster: unknown cluster "billing"; clusters: default$/,
      ],
      [
        "backends: [x:1]\nroutes: [{ match: { header: x-upstream, regex: '[' }, cluster: default }]\n",
        /^roster\.yaml: routes\[0\]\.match\.regex: is not a valid regular expression/,
      ],
      [
        "backends: [x:1]\nroutes: [{ match: { hedaer: x }, cluster: default }]\n",
        /^roster\.yaml: routes\[0\]\.match: unknown setting "hedaer"$/,
      ],
      ["backends: [x:1]\nroutes: [{ cluster: default }]\n", /^roster\.yaml: routes\[0\]\.match: /],
      [
        "clusters:\n  billing: { backends: [] }\n",
        /^roster\.yaml: clusters\.billing\.backends: at least one backend is needed$/,
      ],
      ["clusters:\n  billing: {}\n", /^roster\.yaml: clusters\.billing\.backends: /],
      [
        "clusters:\n  billing: { backends: [a:1, b:2, a:1] }\n",
        /^roster\.yaml: clusters\.billing\.backends\[2\]: a:1 is listed twice$/,
      ],
      [
        "clusters:\n  billing: { backends: [a:1], policy: { name: least_request, choiceCount: 1 } }\n",
        /^roster\.yaml: clusters\.billing\.policy\.choiceCount: must be at least 2/,
      ],
      [
        "clusters:\n  billing: { backends: [a:1], outlierDetection: { intervalMs: 0 } }\n",
        /^roster\.yaml: clusters\.billing\.outlierDetection\.intervalMs: /,
      ],
      [
        "clusters:\n  billing: { backends: [a:1], classifier: { header: 'x y' } }\n",
        /^roster\.yaml: clusters\.billing\.classifier\.header: /,
      ],
      [
        "clusters:\n  billing: { backends: [a:1], listen: a:1 }\n",
        /^roster\.yaml: clusters\.billing: unknown setting "listen"$/,
      ],
      [
        "clusters:\n  bil ling: { backends: [a:1] }\n",
        /^roster\.yaml: clusters\.bil ling: a cluster name is letters/,
      ],
      [
        "backends: [x:1]\nclusters:\n  default: { backends: [a:1] }\n",
        /^roster\.yaml: clusters\.default: the top-level backends are the cluster "default" already/,
      ],
      [
        "policy: round_robin\nclusters:\n  a: { backends: [a:1] }\n",
        /^roster\.yaml: policy: belongs to the top-level backends or discovery \(the cluster "default"\), neither of which is set/,
      ],
      [
        "clusters:\n  a: { backends: [a:1] }\ndefaultCluster: b\n",
        /^roster\.yaml: defaultCluster: unknown cluster "b"/,
      ],
      ["clusters:\n  a: { backends: [a:1] }\nnoRoute: 404\n", /^roster\.yaml: noRoute: /],
      ["clusters: {}\n", /^roster\.yaml: backends: at least one backend is needed$/],
    ];
    for (const [yaml, re] of cases)
      assert.throws(
        () => load(yaml),
        (err: Error) => re.test(err.message),
        yaml,
      );
  });
});
