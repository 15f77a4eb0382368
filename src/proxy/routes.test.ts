import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status } from "../core/status.ts";
import { lookupOfRecord } from "./headers.ts";
import { createRouter, parseRouting, type RawRouting, type RequestHeaders } from "./routes.ts";

const clusters = new Set(["default", "alpha", "beta"]);
const targets = new Map([...clusters].map((name) => [name, { name }]));

function router(raw: RawRouting, names: ReadonlySet<string> = clusters) {
  const config = parseRouting(raw, names, "roster.yaml");
  return createRouter(config, new Map([...names].map((n) => [n, targets.get(n) ?? { name: n }])));
}

/** The cluster a call goes to, or "CODE: message" when none. */
function where(r: ReturnType<typeof router>, path: string, headers: RequestHeaders = {}): string {
  const result = r.route(path, lookupOfRecord(headers));
  return result.kind === "cluster" ? result.cluster : `${result.code}: ${result.message}`;
}

describe("route matching", () => {
  const table = router({
    routes: [
      { match: { header: "x-upstream", exact: "beta" }, cluster: "beta" },
      { match: { service: "pkg.Billing", header: "x-tenant", prefix: "gold-" }, cluster: "alpha" },
      { match: { methodPrefix: "/pkg.Users/Get" }, cluster: "beta" },
      { match: { header: "X-Region", regex: "^eu-(west|north)$" }, cluster: "alpha" },
      { match: { header: "x-upstream" }, clusterFromHeader: true },
      { match: { service: "pkg.Billing" }, cluster: "beta" },
    ],
  });
  const cases: Array<[string, RequestHeaders, string]> = [
    ["/pkg.Users/List", {}, "default"],
    ["/pkg.Users/List", { "x-upstream": "beta" }, "beta"],
    ["/pkg.Users/List", { "x-upstream": "alpha" }, "alpha"],
    ["/pkg.Users/List", { "x-upstream": "default" }, "default"],
    ["/pkg.Users/List", { "x-upstream": "nowhere" }, "default"],
    ["/pkg.Users/List", { "x-upstream": ["alpha", "beta"] }, "alpha"],
    ["/pkg.Users/GetOne", {}, "beta"],
    ["/pkg.Users/GetOne", { "x-upstream": "alpha" }, "beta"],
    ["/pkg.Billing/Charge", { "x-tenant": "gold-7" }, "alpha"],
    ["/pkg.Billing/Charge", { "x-tenant": "silver-7" }, "beta"],
    ["/pkg.Billing/Charge", {}, "beta"],
    ["/pkg.BillingV2/Charge", { "x-tenant": "gold-7" }, "default"],
    ["/pkg.Users/List", { "x-region": "eu-west" }, "alpha"],
    ["/pkg.Users/List", { "x-region": "eu-westish" }, "default"],
    ["/pkg.Users/List", { "x-region": "us-east" }, "default"],
  ];
  for (const [path, headers, expected] of cases) {
    it(`sends ${path} with ${JSON.stringify(headers)} to ${expected}`, () => {
      assert.equal(where(table, path, headers), expected);
    });
  }

  it("hands back the same result object for every routed call (no allocation per call)", () => {
    const a = table.route("/pkg.Users/GetOne", lookupOfRecord({}));
    const b = table.route("/pkg.Users/GetOne", lookupOfRecord({}));
    assert.equal(a, b);
    assert.equal(
      table.route("/x/y", lookupOfRecord({ "x-upstream": "alpha" })),
      table.route("/z/w", lookupOfRecord({ "x-upstream": "alpha" })),
    );
  });

  it("takes the first matching route, whatever comes after it", () => {
    const r = router({
      routes: [
        { match: {}, cluster: "alpha" },
        { match: { service: "pkg.Users" }, cluster: "beta" },
      ],
    });
    assert.equal(where(r, "/pkg.Users/Get"), "alpha");
  });

  it("answers UNIMPLEMENTED naming the method and the routes tried when there is no default cluster", () => {
    const r = router(
      {
        routes: [
          { match: { header: "x-upstream", exact: "a" }, cluster: "alpha" },
          { match: { header: "x-upstream" }, clusterFromHeader: true },
        ],
      },
      new Set(["alpha", "beta"]),
    );
    const result = r.route("/pkg.Users/Get", lookupOfRecord({ "x-upstream": "gamma" }));
    assert.equal(result.kind, "none");
    assert.ok(result.kind === "none");
    assert.equal(result.code, Status.UNIMPLEMENTED);
    assert.match(
      result.message,
      /^roster: no route for "\/pkg\.Users\/Get": tried routes\[0\] \(x-upstream="a" → alpha\)/,
    );
    assert.match(result.message, /routes\[1\] \(x-upstream present → the cluster named by x-upstream\)/);
    assert.match(
      result.message,
      /x-upstream "gamma" is not a cluster \(clusters: alpha, beta\); no default cluster$/,
    );
  });

  it("answers UNAVAILABLE when configured so, and says when there are no routes at all", () => {
    const r = router({ noRoute: "unavailable" }, new Set(["alpha"]));
    const result = r.route("/a.B/C", lookupOfRecord({}));
    assert.ok(result.kind === "none");
    assert.equal(result.code, Status.UNAVAILABLE);
    assert.equal(
      result.message,
      'roster: no route for "/a.B/C": no routes are configured; no default cluster',
    );
  });

  it("cuts a huge client-supplied header value in its message", () => {
    const r = router(
      { routes: [{ match: { header: "x-upstream" }, clusterFromHeader: true }] },
      new Set(["a"]),
    );
    const result = r.route("/a.B/C", lookupOfRecord({ "x-upstream": "z".repeat(10_000) }));
    assert.ok(result.kind === "none");
    assert.ok(result.message.length < 1500, `${result.message.length}`);
  });
});

describe("route configuration", () => {
  it("defaults to the cluster named default when it exists, and to UNIMPLEMENTED otherwise", () => {
    assert.deepEqual(parseRouting({}, clusters, "f"), {
      routes: [],
      defaultCluster: "default",
      noRoute: "unimplemented",
    });
    assert.equal(parseRouting({}, new Set(["a"]), "f").defaultCluster, undefined);
    assert.equal(parseRouting({ defaultCluster: "alpha" }, clusters, "f").defaultCluster, "alpha");
  });

  it("lower-cases header names and keeps the kind of comparison", () => {
    const c = parseRouting(
      {
        routes: [
          { match: { header: "X-Upstream", exact: "a" }, cluster: "alpha" },
          { match: { header: ":authority", prefix: "api." }, cluster: "alpha" },
          { match: { header: "x-upstream" }, clusterFromHeader: true },
        ],
      },
      clusters,
      "f",
    );
    assert.deepEqual(
      c.routes.map((r) => r.match.header),
      [
        { name: "x-upstream", exact: "a" },
        { name: ":authority", prefix: "api." },
        { name: "x-upstream", present: true },
      ],
    );
  });

  const bad: Array<[RawRouting, RegExp]> = [
    [
      { routes: [{ match: {}, cluster: "gamma" }] },
      /^f: routes\[0\]\.cluster: unknown cluster "gamma"; clusters: default, alpha, beta$/,
    ],
    [
      {
        routes: [
          { match: {}, cluster: "alpha" },
          { match: { header: "x", regex: "(" }, cluster: "beta" },
        ],
      },
      /^f: routes\[1\]\.match\.regex: is not a valid regular expression: /,
    ],
    [
      { routes: [{ match: { exact: "a" }, cluster: "alpha" }] },
      /^f: routes\[0\]\.match\.exact: needs match\.header/,
    ],
    [
      { routes: [{ match: { header: "x", exact: "a", prefix: "b" }, cluster: "alpha" }] },
      /^f: routes\[0\]\.match: takes one of exact, prefix, regex; got exact, prefix$/,
    ],
    [
      { routes: [{ match: { service: "/pkg.Svc/" }, cluster: "alpha" }] },
      /^f: routes\[0\]\.match\.service: must be a fully-qualified/,
    ],
    [
      { routes: [{ match: { methodPrefix: "pkg.Svc/Get" }, cluster: "alpha" }] },
      /^f: routes\[0\]\.match\.methodPrefix: must start with "\/"/,
    ],
    [
      { routes: [{ match: { header: "x y" }, cluster: "alpha" }] },
      /^f: routes\[0\]\.match\.header: must be a header name/,
    ],
    [{ routes: [{ match: {} }] }, /^f: routes\[0\]: needs cluster: NAME or clusterFromHeader: true$/],
    [
      { routes: [{ match: { header: "x" }, cluster: "alpha", clusterFromHeader: true }] },
      /^f: routes\[0\]: has both/,
    ],
    [
      { routes: [{ match: {}, clusterFromHeader: true }] },
      /^f: routes\[0\]\.clusterFromHeader: needs match\.header/,
    ],
    [
      { routes: [{ match: { header: "x" }, clusterFromHeader: false }] },
      /^f: routes\[0\]\.clusterFromHeader: must be true$/,
    ],
    [{ defaultCluster: "gamma" }, /^f: defaultCluster: unknown cluster "gamma"/],
  ];
  for (const [raw, re] of bad) {
    it(`rejects ${JSON.stringify(raw)} naming the field`, () => {
      assert.throws(
        () => parseRouting(raw, clusters, "f"),
        (err: Error) => re.test(err.message),
      );
    });
  }
});
