// Active health checking behind `roster lb`, over real sockets against grpc-js servers running
// grpc-health-check's HealthImplementation: a backend flipped to NOT_SERVING leaves the picker within a
// second and returns when flipped back; no health service counts as serving; Check polling when Watch is
// unimplemented; the configured service name; unix sockets; connection recycling does not flap.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation, service as healthService, type ServingStatus } from "grpc-health-check";
import type { ChannelEvent } from "../../src/channel/channel.ts";
import { type Address, type Endpoint, staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { type Lb, type LbOptions, startLb } from "../../src/proxy/lb.ts";
import {
  EchoClient,
  type EchoReply,
  type EchoRequest,
  echoService,
  waitFor,
} from "../support/echo-backend.ts";

const closers: (() => Promise<void> | void)[] = [];
const socketDir = mkdtempSync(join(tmpdir(), "roster-health-"));

after(async () => {
  for (const close of closers.reverse()) await close();
  rmSync(socketDir, { recursive: true, force: true });
});

/** A grpc-js backend: roster.test.Echo answering with its id, and optionally a health service. */
interface Backend {
  readonly id: string;
  readonly endpoint: Endpoint;
  readonly key: string;
  /** performance.now() of each Echo call received. */
  readonly calls: number[];
  /** Graceful: GOAWAY, then resolves once every open call (a health Watch included) has ended. */
  shutdown(): Promise<void>;
  close(): Promise<void>;
}

interface BackendOptions {
  /** grpc-health-check's implementation with these statuses; absent: no health service at all. */
  readonly health?: HealthImplementation;
  /** A health service with only Check (Watch answers UNIMPLEMENTED), reporting `status()`. */
  readonly checkOnly?: () => ServingStatus;
  readonly address?: Address;
  readonly serverOptions?: grpc.ServerOptions;
}

async function startBackend(id: string, o: BackendOptions = {}): Promise<Backend> {
  const server = new grpc.Server(o.serverOptions ?? {});
  const calls: number[] = [];
  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) {
      calls.push(performance.now());
      callback(null, {
        message: call.request.message,
        payload: Buffer.alloc(0),
        served_by: id,
        deadline_budget_ms: -1,
      });
    },
  });
  o.health?.addToServer(server);
  if (o.checkOnly !== undefined) {
    const status = o.checkOnly;
    // Only Check: grpc-js answers the missing Watch with UNIMPLEMENTED.
    server.addService(healthService as unknown as grpc.ServiceDefinition, {
      check: (_call: unknown, callback: grpc.sendUnaryData<{ status: ServingStatus }>) =>
        callback(null, { status: status() }),
    });
  }
  const address = o.address ?? { kind: "tcp", host: "127.0.0.1", port: 0 };
  const bindTo = address.kind === "unix" ? `unix:${address.path}` : `${address.host}:${address.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(bindTo, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const endpoint = staticEndpoint(address.kind === "unix" ? address : { ...address, port });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    server.forceShutdown();
  };
  closers.push(close);
  const shutdown = () =>
    new Promise<void>((resolve, reject) => server.tryShutdown((err) => (err ? reject(err) : resolve())));
  return { id, endpoint, key: endpoint.key, calls, shutdown, close };
}

async function balancer(backends: readonly Backend[], extra: Partial<LbOptions> = {}): Promise<Lb> {
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: backends.map((b) => b.endpoint),
    policy: createDefaultRegistry().resolve("round_robin", {}),
    healthCheck: { intervalMs: 200, timeoutMs: 500 },
    ...extra,
  });
  closers.push(() => lb.close(1000));
  return lb;
}

/** A TCP relay to `target` (a TCP endpoint) counting the connections it accepted. */
async function countingRelay(target: Endpoint): Promise<{ endpoint: Endpoint; accepted(): number }> {
  assert.equal(target.address.kind, "tcp");
  const to = target.address as Extract<Address, { kind: "tcp" }>;
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    accepted++;
    const up = net.connect(to.port, to.host);
    for (const s of [down, up]) {
      sockets.add(s);
      s.on("error", () => {});
      s.once("close", () => {
        sockets.delete(s);
        down.destroy();
        up.destroy();
      });
    }
    down.pipe(up).pipe(down);
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { endpoint: staticEndpoint({ kind: "tcp", host: "127.0.0.1", port }), accepted: () => accepted };
}

function client(lb: Lb): EchoClient {
  const c = new EchoClient(lb.server.address);
  closers.push(() => c.close());
  return c;
}

function statusOf(lb: Lb, key: string) {
  const s = lb.channel.status().find((b) => b.key === key);
  assert.ok(s, `no status for ${key}`);
  return s;
}

async function waitHealth(lb: Lb, key: string, health: string, timeoutMs = 5000): Promise<void> {
  await waitFor(
    () => {
      const s = statusOf(lb, key);
      return s.state === "ready" && s.health === health;
    },
    timeoutMs,
    `${key} to be ready and ${health}`,
  );
}

interface CallRecord {
  readonly startedAt: number;
  code?: number;
  servedBy?: string;
}

/** Closed-loop Echo calls through the balancer until `stop()`; every call has a 2 s deadline. */
function load(c: EchoClient, concurrency: number) {
  const calls: CallRecord[] = [];
  let stopped = false;
  const worker = async () => {
    // Bounded by `stop()` and each call's deadline.
    while (!stopped) {
      const r: CallRecord = { startedAt: performance.now() };
      calls.push(r);
      try {
        r.servedBy = (await c.echo({}, { deadlineMs: 2000 })).served_by;
        r.code = Status.OK;
      } catch (err) {
        r.code = (err as grpc.ServiceError).code;
      }
    }
  };
  const workers = Promise.all(Array.from({ length: concurrency }, worker));
  return {
    calls,
    async stop(): Promise<void> {
      stopped = true;
      await workers;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("active health checking", () => {
  test("a backend flipped to NOT_SERVING gets no new calls within a second and gets calls again after it flips back", async () => {
    const healths = [0, 1, 2].map(() => new HealthImplementation({ "": "SERVING" }));
    const backends = await Promise.all(healths.map((h, i) => startBackend(`b${i}`, { health: h })));
    const target = backends[1]!;
    const events: { at: number; event: ChannelEvent }[] = [];
    const lb = await balancer(backends, {
      healthCheck: {},
      onChannelEvent: (event) => events.push({ at: performance.now(), event }),
    });
    for (const b of backends) await waitHealth(lb, b.key, "serving");
    const run = load(client(lb), 4);
    try {
      await sleep(300);
      const flippedAt = performance.now();
      healths[1]!.setStatus("", "NOT_SERVING");
      await waitFor(() => statusOf(lb, target.key).health === "not-serving", 1000, "the balancer to notice");
      const noticedAt = events.find(
        (e) =>
          e.event.kind === "backend-health" && e.event.key === target.key && e.event.health === "not-serving",
      )?.at;
      assert.ok(noticedAt !== undefined && noticedAt - flippedAt < 1000, "noticed within a second");
      assert.equal(statusOf(lb, target.key).healthDetail, "NOT_SERVING");
      await sleep(1300);
      const late = run.calls.filter((c) => c.startedAt >= flippedAt + 1000 && c.servedBy === target.id);
      assert.equal(late.length, 0, "no call started a second after the flip reached the backend");
      assert.equal(
        target.calls.filter((t) => t >= flippedAt + 1000).length,
        0,
        "the backend saw no call a second after the flip",
      );

      const backAt = performance.now();
      healths[1]!.setStatus("", "SERVING");
      await waitFor(() => target.calls.some((t) => t > backAt), 2000, "calls to reach the backend again");
    } finally {
      await run.stop();
    }
    const failed = run.calls.filter((c) => c.code !== Status.OK);
    assert.equal(failed.length, 0, `every call succeeded (${failed.length} failed)`);
  });

  test("a backend without the health service (Watch and Check UNIMPLEMENTED) is treated as serving", async () => {
    const withHealth = await startBackend("with", { health: new HealthImplementation({ "": "SERVING" }) });
    const without = await startBackend("without");
    const lb = await balancer([withHealth, without]);
    await waitHealth(lb, without.key, "serving");
    await waitHealth(lb, withHealth.key, "serving");
    assert.match(statusOf(lb, without.key).healthDetail ?? "", /no health service/);
    const c = client(lb);
    const served = new Set<string>();
    for (let i = 0; i < 10; i++) served.add((await c.echo({}, { deadlineMs: 2000 })).served_by);
    assert.deepEqual([...served].sort(), ["with", "without"]);
  });

  test("Check is polled when Watch is unimplemented, and a NOT_SERVING answer takes the backend out", async () => {
    let status: ServingStatus = "SERVING";
    const polled = await startBackend("polled", { checkOnly: () => status });
    const other = await startBackend("other", { health: new HealthImplementation({ "": "SERVING" }) });
    const lb = await balancer([polled, other], { healthCheck: { intervalMs: 200, timeoutMs: 500 } });
    await waitHealth(lb, polled.key, "serving");
    await waitHealth(lb, other.key, "serving");
    const flippedAt = performance.now();
    status = "NOT_SERVING";
    await waitFor(() => statusOf(lb, polled.key).health === "not-serving", 1000, "the poll to notice");
    assert.ok(performance.now() - flippedAt < 1000);
    assert.equal(statusOf(lb, polled.key).healthDetail, "NOT_SERVING");
    const c = client(lb);
    for (let i = 0; i < 6; i++) assert.equal((await c.echo({}, { deadlineMs: 2000 })).served_by, "other");
    status = "SERVING";
    await waitHealth(lb, polled.key, "serving", 2000);
  });

  test("the configured service name is asked for, and a backend that does not know it is not serving", async () => {
    const knows = await startBackend("knows", {
      health: new HealthImplementation({ "roster.test.Echo": "SERVING" }),
    });
    const unaware = await startBackend("unaware", { health: new HealthImplementation({ "": "SERVING" }) });
    const lb = await balancer([knows, unaware], { healthCheck: { service: "roster.test.Echo" } });
    await waitHealth(lb, knows.key, "serving");
    await waitHealth(lb, unaware.key, "not-serving");
    assert.equal(statusOf(lb, unaware.key).healthDetail, "SERVICE_UNKNOWN");
    const c = client(lb);
    for (let i = 0; i < 6; i++) assert.equal((await c.echo({}, { deadlineMs: 2000 })).served_by, "knows");
  });

  test("when every backend is not serving, calls fail at once with UNAVAILABLE naming the reason", async () => {
    const health = new HealthImplementation({ "": "NOT_SERVING" });
    const only = await startBackend("only", { health });
    const lb = await balancer([only]);
    await waitHealth(lb, only.key, "not-serving");
    const c = client(lb);
    const startedAt = performance.now();
    await assert.rejects(c.echo({}, { deadlineMs: 5000 }), (err: grpc.ServiceError) => {
      assert.equal(err.code, Status.UNAVAILABLE);
      assert.match(err.details, /not serving \(NOT_SERVING\)/);
      return true;
    });
    assert.ok(performance.now() - startedAt < 1000, "failed without waiting");
    assert.equal(only.calls.length, 0);
  });

  test("a backend on a unix socket leaves when it stops and is checked again when it comes back", async () => {
    const path = join(socketDir, "b.sock");
    const address: Address = { kind: "unix", path };
    const first = await startBackend("unix-1", {
      address,
      health: new HealthImplementation({ "": "SERVING" }),
    });
    const steady = await startBackend("steady", { health: new HealthImplementation({ "": "SERVING" }) });
    const lb = await balancer([first, steady], {
      connection: { backoff: { initialMs: 50, maxMs: 200, multiplier: 1.6, jitter: 0.2 } },
      healthCheck: {
        intervalMs: 200,
        timeoutMs: 500,
        backoff: { initialMs: 50, maxMs: 200, multiplier: 1.6, jitter: 0.2 },
      },
    });
    await waitHealth(lb, first.key, "serving");
    await waitHealth(lb, steady.key, "serving");
    await first.close();
    await waitFor(
      () => statusOf(lb, first.key).health === "not-serving",
      1000,
      "the stopped backend to leave",
    );
    assert.match(statusOf(lb, first.key).healthDetail ?? "", /unreachable/);
    const c = client(lb);
    for (let i = 0; i < 4; i++) assert.equal((await c.echo({}, { deadlineMs: 2000 })).served_by, "steady");

    const second = await startBackend("unix-2", {
      address,
      health: new HealthImplementation({ "": "SERVING" }),
    });
    await waitHealth(lb, second.key, "serving", 3000);
    const served = new Set<string>();
    for (let i = 0; i < 6; i++) served.add((await c.echo({}, { deadlineMs: 2000 })).served_by);
    assert.ok(served.has("unix-2"), `the restarted backend gets calls (${[...served].join(", ")})`);
  });

  test("a backend's graceful shutdown is not held up by the health Watch, and the backend leaves at once", async () => {
    const leaving = await startBackend("leaving", { health: new HealthImplementation({ "": "SERVING" }) });
    const staying = await startBackend("staying", { health: new HealthImplementation({ "": "SERVING" }) });
    const lb = await balancer([leaving, staying]);
    await waitHealth(lb, leaving.key, "serving");
    await waitHealth(lb, staying.key, "serving");
    const startedAt = performance.now();
    // The data path's idle sessions close on GOAWAY too; the Watch is cancelled on GOAWAY (gRFC A17).
    let guard: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        leaving.shutdown(),
        new Promise<never>((_, reject) => {
          guard = setTimeout(() => reject(new Error("tryShutdown still waiting after 3 s")), 3000);
        }),
      ]);
    } finally {
      clearTimeout(guard);
    }
    assert.ok(performance.now() - startedAt < 1000, "shut down within a second");
    await waitFor(() => statusOf(lb, leaving.key).health === "not-serving", 1000, "the backend to leave");
    const c = client(lb);
    for (let i = 0; i < 4; i++) assert.equal((await c.echo({}, { deadlineMs: 2000 })).served_by, "staying");
  });

  test("a backend that recycles its connections (max connection age) stays serving", async () => {
    const recycled = await startBackend("recycled", {
      health: new HealthImplementation({ "": "SERVING" }),
      serverOptions: { "grpc.max_connection_age_ms": 300, "grpc.max_connection_age_grace_ms": 200 },
    });
    // The balancer reaches the backend through a relay that counts connections, so the test sees the
    // recycles happen: the data connection and the health checker's each start with one, and every
    // recycle of either adds one.
    const relay = await countingRelay(recycled.endpoint);
    const events: ChannelEvent[] = [];
    const lb = await balancer([{ ...recycled, endpoint: relay.endpoint, key: relay.endpoint.key }], {
      onChannelEvent: (e) => events.push(e),
    });
    await waitHealth(lb, relay.endpoint.key, "serving");
    const RECYCLES = 4;
    await waitFor(() => relay.accepted() >= 2 + RECYCLES, 20_000, `${RECYCLES} connection recycles`);
    assert.equal(statusOf(lb, relay.endpoint.key).health, "serving");
    const healthEvents = events.filter((e) => e.kind === "backend-health");
    assert.deepEqual(
      healthEvents.map((e) => (e.kind === "backend-health" ? e.health : "")),
      ["serving"],
      `one verdict, never not-serving, across ${relay.accepted() - 2} connection recycles`,
    );
  });
});
