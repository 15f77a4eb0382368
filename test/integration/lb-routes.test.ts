// Routes of `roster lb` end to end: two named clusters of real grpc-js backends (and the top-level
// cluster "default") behind one listener; calls chosen by an `x-upstream` metadata value, by service
// and by method reach only their cluster's backends; the rest fall through to "default"; with no
// default cluster the configured status answers. Reloads: in-process through Lb.reconfigure, and
// through the real CLI (`node bin/roster.js lb --config FILE`) with SIGHUP, a bad file keeping the old
// routes serving.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { lbClusters, parseLbConfigText, resolveLbConfig } from "../../src/proxy/config.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import { type EchoBackend, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** Backends by id: a1, a2 (cluster alpha), b1 (beta), d1 (the top-level backends, cluster default). */
const backends = new Map<string, EchoBackend>();
const addr = (id: string) => backends.get(id)!.address;

function config(extra: string[] = [], routes?: string[]): string {
  return [
    "listen: 127.0.0.1:0",
    `backends: [${addr("d1")}]`,
    "clusters:",
    "  alpha:",
    `    backends: [${addr("a1")}, ${addr("a2")}]`,
    "    policy: round_robin",
    "  beta:",
    `    backends: [${addr("b1")}]`,
    "routes:",
    ...(routes ?? [
      "  - match: { header: x-upstream, regex: '^(alpha|beta)$' }",
      "    clusterFromHeader: true",
      "  - match: { service: roster.test.Echo, header: x-tenant, prefix: gold- }",
      "    cluster: alpha",
      "  - match: { methodPrefix: /roster.test.Echo/Stats }",
      "    cluster: beta",
    ]),
    ...extra,
    "",
  ].join("\n");
}

const resolve = (yaml: string) =>
  resolveLbConfig(parseLbConfigText(yaml, "roster.yaml"), createDefaultRegistry(), "roster.yaml");

function md(pairs: Record<string, string>): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(pairs)) m.set(k, v);
  return m;
}

/** The backends that served `n` Echo calls with this metadata, sorted. */
async function servedBy(
  client: EchoClient,
  n: number,
  pairs: Record<string, string> = {},
): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++)
    seen.add((await client.echo({ message: "x" }, { deadlineMs: 5000, metadata: md(pairs) })).served_by);
  return [...seen].sort();
}

async function failure(client: EchoClient, pairs: Record<string, string> = {}): Promise<grpc.ServiceError> {
  try {
    await client.echo({ message: "x" }, { deadlineMs: 5000, metadata: md(pairs) });
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("the call succeeded");
}

before(async () => {
  for (const id of ["a1", "a2", "b1", "d1"]) backends.set(id, await startEchoBackend({ id }));
});

after(async () => {
  for (const b of backends.values()) await b.close();
});

describe("routes of an in-process roster lb", () => {
  let lb: Lb;
  let client: EchoClient;

  before(async () => {
    lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      ...lbClusters(resolve(config())),
    });
    client = new EchoClient(lb.server.address);
  });

  after(async () => {
    client.client.close();
    await lb.close(1000);
  });

  test("an x-upstream value sends calls to that cluster's backends only", async () => {
    assert.deepEqual(await servedBy(client, 10, { "x-upstream": "alpha" }), ["a1", "a2"]);
    assert.deepEqual(await servedBy(client, 10, { "x-upstream": "beta" }), ["b1"]);
  });

  test("calls without a matching route fall through to the cluster default", async () => {
    assert.deepEqual(await servedBy(client, 5), ["d1"]);
    // "default" is a cluster, but the route's regex lets only alpha and beta be named.
    assert.deepEqual(await servedBy(client, 5, { "x-upstream": "default" }), ["d1"]);
    assert.deepEqual(await servedBy(client, 5, { "x-upstream": "gamma" }), ["d1"]);
    assert.deepEqual(await servedBy(client, 5, { "x-tenant": "silver-1" }), ["d1"]);
  });

  test("a service route with a header condition, and a method route, reach their clusters", async () => {
    assert.deepEqual(await servedBy(client, 6, { "x-tenant": "gold-1" }), ["a1", "a2"]);
    assert.equal((await client.stats()).served_by, "b1");
  });

  test("a reconfiguration adds a route at once and keeps the running clusters' channels", async () => {
    const alpha = lb.clusters().get("alpha");
    const report = lb.reconfigure(
      lbClusters(
        resolve(
          config(
            [],
            [
              "  - match: { header: x-tenant, exact: silver-1 }",
              "    cluster: beta",
              "  - match: { header: x-upstream, regex: '^(alpha|beta)$' }",
              "    clusterFromHeader: true",
            ],
          ),
        ),
      ),
    );
    assert.deepEqual(report, { added: [], removed: [], rebuilt: [], policyLive: [] });
    assert.equal(lb.clusters().get("alpha"), alpha, "alpha kept its channel");
    assert.deepEqual(await servedBy(client, 5, { "x-tenant": "silver-1" }), ["b1"]);
    assert.deepEqual(await servedBy(client, 5, { "x-upstream": "alpha" }), ["a1", "a2"]);
  });

  test("a cluster whose policy or health settings change gets a new channel; the old one closes", async () => {
    const old = lb.clusters().get("alpha")!;
    const yaml = config().replace(
      "    policy: round_robin\n",
      "    policy: round_robin\n    healthCheck: {}\n",
    );
    const report = lb.reconfigure(lbClusters(resolve(yaml)));
    assert.deepEqual(report.rebuilt, ["alpha"]);
    const rebuilt = lb.clusters().get("alpha")!;
    assert.notEqual(rebuilt, old);
    assert.deepEqual(await servedBy(client, 10, { "x-upstream": "alpha" }), ["a1", "a2"]);
    await waitFor(() => old.status().length === 0, 5000, "the old alpha channel to close");
    assert.ok(
      rebuilt.status().every((b) => b.health === "serving"),
      JSON.stringify(rebuilt.status()),
    );
  });

  test("a removed cluster finishes its open calls, then closes", async () => {
    const slow = client.echo(
      { message: "slow", delay_ms: 300 },
      { deadlineMs: 5000, metadata: md({ "x-upstream": "alpha" }) },
    );
    await waitFor(
      () => backends.get("a1")!.stats().active + backends.get("a2")!.stats().active === 1,
      5000,
      "the slow call to reach alpha",
    );
    const alpha = lb.clusters().get("alpha")!;
    const yaml = [
      "listen: 127.0.0.1:0",
      `backends: [${addr("d1")}]`,
      "clusters:",
      `  beta: { backends: [${addr("b1")}] }`,
      "routes:",
      "  - { match: { header: x-upstream }, clusterFromHeader: true }",
      "",
    ].join("\n");
    const report = lb.reconfigure(lbClusters(resolve(yaml)));
    assert.deepEqual(report.removed, ["alpha"]);
    assert.deepEqual([...lb.clusters().keys()], ["default", "beta"]);
    // New calls naming alpha fall through; the call in flight still ends well on alpha.
    assert.deepEqual(await servedBy(client, 3, { "x-upstream": "alpha" }), ["d1"]);
    assert.equal(alpha.status().length, 2, "alpha stays open while its call runs");
    const reply = await slow;
    assert.match(reply.served_by, /^a[12]$/);
    await waitFor(() => alpha.status().length === 0, 5000, "alpha to close after its last call");
    assert.equal(backends.get("a1")!.stats().active + backends.get("a2")!.stats().active, 0);
  });

  test("with no default cluster a call no route takes gets the configured status, naming its method", async () => {
    const yaml = [
      "listen: 127.0.0.1:0",
      "clusters:",
      `  alpha: { backends: [${addr("a1")}] }`,
      `  beta: { backends: [${addr("b1")}] }`,
      "routes:",
      "  - { match: { header: x-upstream }, clusterFromHeader: true }",
      "noRoute: unavailable",
      "",
    ].join("\n");
    const report = lb.reconfigure(lbClusters(resolve(yaml)));
    assert.deepEqual(report.added, ["alpha"]);
    assert.deepEqual(report.removed, ["default"]);
    assert.equal(lb.channel.name, "alpha", "with no cluster default, lb.channel is the first one");
    assert.deepEqual(await servedBy(client, 3, { "x-upstream": "beta" }), ["b1"]);
    const none = await failure(client);
    assert.equal(none.code, Status.UNAVAILABLE);
    assert.match(none.details, /^roster: no route for "\/roster\.test\.Echo\/Echo": tried routes\[0\]/);
    assert.match(none.details, /no default cluster$/);
    const unknown = await failure(client, { "x-upstream": "gamma" });
    assert.match(unknown.details, /x-upstream "gamma" is not a cluster \(clusters: alpha, beta\)/);
  });

  test("a reconfiguration that names a cluster that is not running changes nothing", () => {
    const before = lb.routing();
    const bad = lbClusters(resolve(config()));
    assert.throws(
      () => lb.reconfigure({ clusters: new Map([...bad.clusters].slice(1)), routing: bad.routing }),
      /cluster default is not running/,
    );
    assert.equal(lb.routing(), before);
    assert.deepEqual([...lb.clusters().keys()], ["alpha", "beta"]);
  });
});

describe("routes of roster lb run as a command", () => {
  let dir: string;
  let child: ChildProcess | undefined;
  const log: string[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "roster-routes-"));
  });
  after(() => {
    if (child?.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  test("routes by x-upstream, reloads an added route on SIGHUP, keeps serving through a bad file", {
    timeout: 60_000,
  }, async () => {
    const file = join(dir, "roster.yaml");
    writeFileSync(file, config(["admin: 127.0.0.1:0"]));
    // The source, not a possibly stale dist/ build.
    child = spawn(process.execPath, ["bin/roster.js", "lb", "--config", file], {
      cwd: root,
      env: { ...process.env, ROSTER_FROM_SOURCE: "1" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const exited = new Promise<number | null>((r) => child!.once("exit", (code) => r(code)));
    child.stderr!.on("data", (d: Buffer) => log.push(...d.toString().split("\n").filter(Boolean)));
    const seen = (text: string) => log.some((l) => l.includes(text));
    const count = (text: string) => log.filter((l) => l.includes(text)).length;
    await waitFor(() => seen("listening on"), 20_000, "roster lb to listen");
    const started = JSON.parse(log.find((l) => l.includes("listening on"))!) as {
      listen: string;
      admin: string;
      clusters: Record<string, string[]>;
    };
    assert.deepEqual(Object.keys(started.clusters), ["default", "alpha", "beta"]);
    const client = new EchoClient(started.listen);

    assert.deepEqual(await servedBy(client, 10, { "x-upstream": "alpha" }), ["a1", "a2"]);
    assert.deepEqual(await servedBy(client, 5, { "x-upstream": "beta" }), ["b1"]);
    assert.deepEqual(await servedBy(client, 5), ["d1"]);
    assert.deepEqual(await servedBy(client, 5, { "x-tenant": "silver-1" }), ["d1"]);

    const status = (await (await fetch(`http://${started.admin}/status`)).json()) as {
      clusters: Record<string, { policy: string; backends: Array<{ key: string }> }>;
      routing: { routes: Array<{ description: string }>; defaultCluster: string };
    };
    assert.equal(status.clusters["alpha"]!.policy, "round_robin");
    assert.deepEqual(
      status.clusters["alpha"]!.backends.map((b) => b.key),
      [addr("a1"), addr("a2")],
    );
    assert.equal(status.routing.defaultCluster, "default");
    assert.deepEqual(
      status.routing.routes.map((r) => r.description),
      [
        "x-upstream~/^(alpha|beta)$/ → the cluster named by x-upstream",
        'service roster.test.Echo and x-tenant="gold-"* → alpha',
        "method /roster.test.Echo/Stats* → beta",
      ],
    );
    const metrics = await (await fetch(`http://${started.admin}/metrics`)).text();
    assert.match(
      metrics,
      new RegExp(`roster_backend_calls_total\\{cluster="alpha",backend="${addr("a1")}",code="OK"\\}`),
    );
    assert.match(
      metrics,
      new RegExp(`roster_backend_calls_total\\{cluster="beta",backend="${addr("b1")}",code="OK"\\}`),
    );

    // A bad file (a route to a cluster that does not exist) is rejected, naming the field; the old
    // routes keep serving.
    writeFileSync(
      file,
      config(
        ["admin: 127.0.0.1:0"],
        ["  - match: { header: x-tenant, exact: silver-1 }", "    cluster: gamma"],
      ),
    );
    child.kill("SIGHUP");
    await waitFor(() => seen("config rejected"), 5000, "the bad config to be rejected");
    assert.ok(
      log.some((l) => l.includes('roster.yaml: routes[0].cluster: unknown cluster \\"gamma\\"')),
      log.filter((l) => l.includes("rejected")).join("\n"),
    );
    assert.deepEqual(await servedBy(client, 4, { "x-upstream": "alpha" }), ["a1", "a2"]);
    assert.deepEqual(await servedBy(client, 3, { "x-tenant": "silver-1" }), ["d1"]);

    // A good file adds a route: it takes effect at once.
    const reloads = count("config reloaded");
    writeFileSync(
      file,
      config(
        ["admin: 127.0.0.1:0"],
        [
          "  - match: { header: x-tenant, exact: silver-1 }",
          "    cluster: beta",
          "  - match: { header: x-upstream, regex: '^(alpha|beta)$' }",
          "    clusterFromHeader: true",
        ],
      ),
    );
    child.kill("SIGHUP");
    await waitFor(() => count("config reloaded") > reloads, 5000, "the config to be reloaded");
    assert.deepEqual(await servedBy(client, 3, { "x-tenant": "silver-1" }), ["b1"]);
    assert.deepEqual(await servedBy(client, 4, { "x-upstream": "alpha" }), ["a1", "a2"]);

    client.client.close();
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
    assert.doesNotMatch(log.join("\n"), /\n\s+at /, "no stack trace");
  });
});
