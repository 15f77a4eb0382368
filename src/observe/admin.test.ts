import assert from "node:assert/strict";
import http from "node:http";
import { Writable } from "node:stream";
import { after, describe, it } from "node:test";
import pino from "pino";
import { Gauge, type OpenMetricsContentType, Registry, type RegistryContentType } from "prom-client";
import { Status } from "../core/status.ts";
import { type AdminServer, startAdminServer } from "./admin.ts";
import { createProxyMetrics } from "./metrics.ts";

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on its own connection (no agent), so nothing lingers after the test. */
function request(
  port: number,
  method: string,
  path: string,
  agent: http.Agent | false = false,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

function memoryLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

describe("startAdminServer", () => {
  const servers: AdminServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  async function start(
    status: () => unknown,
    registry?: Registry<RegistryContentType>,
    log?: pino.Logger,
  ): Promise<AdminServer> {
    const metrics = registry ? { registry } : createProxyMetrics({ defaultMetrics: false });
    const server = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      metrics,
      status,
      ...(log ? { log } : {}),
    });
    servers.push(server);
    return server;
  }

  it("binds the port asked for (0 = any) and reports host:port", async () => {
    const server = await start(() => ({}));
    assert.ok(server.port > 0, `port ${server.port}`);
    assert.equal(server.address, `127.0.0.1:${server.port}`);
  });

  it("serves /metrics in the registry's exposition format", async () => {
    const metrics = createProxyMetrics({ defaultMetrics: false });
    metrics.callEnded("c", "b:1", Status.OK, 0.001);
    const server = await start(() => ({}), metrics.registry);
    const reply = await request(server.port, "GET", "/metrics");
    assert.equal(reply.status, 200);
    assert.equal(reply.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert.match(reply.body, /^roster_backend_calls_total\{cluster="c",backend="b:1",code="OK"\} 1$/m);
    assert.equal(Number(reply.headers["content-length"]), Buffer.byteLength(reply.body));
  });

  it("uses the OpenMetrics content type when the registry is set to it", async () => {
    const registry = new Registry<OpenMetricsContentType>();
    registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    createProxyMetrics({ registry, defaultMetrics: false });
    const server = await start(() => ({}), registry);
    const reply = await request(server.port, "GET", "/metrics");
    assert.equal(reply.status, 200);
    assert.equal(reply.headers["content-type"], Registry.OPENMETRICS_CONTENT_TYPE);
    assert.match(reply.body, /# EOF\n$/);
  });

  it("serves /status as pretty-printed JSON of status(), sync or async, ignoring the query", async () => {
    const state = { backends: [{ key: "a:1", state: "ready", inFlight: 2 }], policy: "round_robin" };
    const server = await start(() => state);
    const reply = await request(server.port, "GET", "/status?verbose=1");
    assert.equal(reply.status, 200);
    assert.equal(reply.headers["content-type"], "application/json; charset=utf-8");
    assert.deepEqual(JSON.parse(reply.body), state);
    assert.equal(reply.body, `${JSON.stringify(state, null, 2)}\n`);

    const asyncServer = await start(async () => ({ ok: true }));
    assert.deepEqual(JSON.parse((await request(asyncServer.port, "GET", "/status")).body), { ok: true });
  });

  it("answers /healthz with ok", async () => {
    const server = await start(() => ({}));
    const reply = await request(server.port, "GET", "/healthz");
    assert.equal(reply.status, 200);
    assert.match(String(reply.headers["content-type"]), /^text\/plain/);
    assert.equal(reply.body, "ok\n");
  });

  it("answers unknown paths with 404 and the list of endpoints", async () => {
    const server = await start(() => ({}));
    for (const path of ["/", "/nope", "/metrics/extra", "/status/"]) {
      const reply = await request(server.port, "GET", path);
      assert.equal(reply.status, 404, path);
      assert.match(reply.body, /\/metrics/);
      assert.match(reply.body, /\/status/);
      assert.match(reply.body, /\/healthz/);
    }
  });

  it("answers methods other than GET and HEAD with 405 and an Allow header", async () => {
    const server = await start(() => ({}));
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
      const reply = await request(server.port, method, "/metrics");
      assert.equal(reply.status, 405, method);
      assert.equal(reply.headers["allow"], "GET, HEAD");
    }
    const head = await request(server.port, "HEAD", "/healthz");
    assert.equal(head.status, 200);
    assert.equal(head.body, "");
    assert.equal(head.headers["content-length"], "3");
  });

  it("turns a throwing status() into a 500 with the message, logs it, and keeps serving", async () => {
    const { log, lines } = memoryLogger();
    let fail = true;
    const server = await start(
      () => {
        if (fail) throw new Error("channel is closed");
        return { ok: true };
      },
      undefined,
      log,
    );
    const bad = await request(server.port, "GET", "/status");
    assert.equal(bad.status, 500);
    assert.match(bad.body, /channel is closed/);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.["level"], 50);
    assert.equal(lines[0]?.["path"], "/status");

    assert.equal((await request(server.port, "GET", "/healthz")).status, 200);
    fail = false;
    assert.equal((await request(server.port, "GET", "/status")).status, 200);
  });

  it("turns a rejected promise, a non-Error throw and unserialisable status into 500s", async () => {
    const rejecting = await start(() => Promise.reject(new Error("later")));
    assert.match((await request(rejecting.port, "GET", "/status")).body, /later/);
    const throwsString = await start(() => {
      throw "plain string";
    });
    const reply = await request(throwsString.port, "GET", "/status");
    assert.equal(reply.status, 500);
    assert.match(reply.body, /plain string/);
    const bigint = await start(() => ({ n: 1n }));
    assert.equal((await request(bigint.port, "GET", "/status")).status, 500);
  });

  it("turns a failing metrics collection into a 500", async () => {
    const registry = new Registry();
    new Gauge({
      name: "broken",
      help: "throws on collect",
      registers: [registry],
      collect() {
        throw new Error("collector broke");
      },
    });
    const server = await start(() => ({}), registry);
    const reply = await request(server.port, "GET", "/metrics");
    assert.equal(reply.status, 500);
    assert.match(reply.body, /collector broke/);
    assert.equal((await request(server.port, "GET", "/healthz")).status, 200);
  });

  it("rejects with a clear error when the port is taken", async () => {
    const first = await start(() => ({}));
    await assert.rejects(
      startAdminServer({
        host: "127.0.0.1",
        port: first.port,
        metrics: { registry: new Registry() },
        status: () => ({}),
      }),
      /admin server cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/,
    );
  });

  it("closes promptly with an idle keep-alive connection open, and close() is idempotent", async () => {
    const server = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      metrics: { registry: new Registry() },
      status: () => ({}),
    });
    const agent = new http.Agent({ keepAlive: true });
    try {
      assert.equal((await request(server.port, "GET", "/healthz", agent)).status, 200);
      const started = Date.now();
      await Promise.all([server.close(), server.close()]);
      assert.ok(Date.now() - started < 1_000, `close took ${Date.now() - started} ms`);
      await assert.rejects(request(server.port, "GET", "/healthz"), /ECONNREFUSED/);
    } finally {
      agent.destroy();
    }
  });
});
