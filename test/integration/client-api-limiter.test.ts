// The thick client's concurrency limiter against a real grpc-js server: calls past the limit wait in a
// bounded queue; a full queue, a deadline reached while waiting and a cancel while waiting each end
// the call without it ever reaching the server.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, createClientLimiter, inRegion, type Unary } from "../../src/client/index.ts";
import { waitFor } from "../support/echo-backend.ts";

const ECHO_PROTO = fileURLToPath(new URL("../support/echo.proto", import.meta.url));
const echoDef = protoLoader.loadSync(ECHO_PROTO, { keepCase: true })[
  "roster.test.Echo"
] as grpc.ServiceDefinition;

/** The client's type for the methods these tests call (proto-loader gives no types). */
interface EchoService {
  Echo: Unary<{ message: string }, { message: string; served_by: string }>;
}

interface HeldServer {
  port: number;
  server: grpc.Server;
  received: string[];
  held: (() => void)[];
  releaseAll(): void;
}

/** An Echo server that holds every call until released, and records each message it received. */
async function heldServer(): Promise<HeldServer> {
  const server = new grpc.Server();
  const s: HeldServer = {
    port: 0,
    server,
    received: [],
    held: [],
    releaseAll() {
      for (const r of s.held.splice(0)) r();
    },
  };
  server.addService(echoDef, {
    Echo(call: grpc.ServerUnaryCall<{ message: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      s.received.push(call.request.message);
      s.held.push(() => cb(null, { message: call.request.message, served_by: "held" }));
    },
  });
  s.port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return s;
}

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    const r = (await p) as { message: string };
    return `ok ${r.message}`;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return `${grpc.status[e.code]} ${e.details}`;
  }
}

describe("client concurrency limiter", () => {
  let backend: HeldServer;
  before(async () => {
    backend = await heldServer();
  });
  after(() => {
    backend.releaseAll();
    backend.server.forceShutdown();
  });

  it("queues calls past the limit, refuses past the queue, and ends a queued call at its deadline", async () => {
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: `127.0.0.1:${backend.port}`,
      preset: inRegion({ limiter: { maxConcurrent: 2, maxQueue: 2 }, deadlineMs: 10_000 }),
    });
    try {
      const c1 = outcome(client.Echo({ message: "c1" }));
      const c2 = outcome(client.Echo({ message: "c2" }));
      await waitFor(() => backend.received.length === 2, 5000, "two calls at the server");
      const c3 = outcome(client.Echo({ message: "c3" }));
      const c4 = outcome(client.Echo({ message: "c4" }, { deadlineMs: 150 }));
      assert.deepEqual(client.stats().queued, 2);
      // The queue is full: refused at once.
      assert.match(
        await outcome(client.Echo({ message: "c5" })),
        /^RESOURCE_EXHAUSTED roster client: concurrency limit reached: 2 calls in flight \(limit 2\) and 2 waiting \(queue limit 2\)$/,
      );
      // c4 waits until its deadline and fails RESOURCE_EXHAUSTED (not DEADLINE_EXCEEDED), saying why.
      assert.match(
        await c4,
        /^RESOURCE_EXHAUSTED roster client: concurrency limit reached: waited \d+ ms for one of 2 call slots and the call's deadline was reached$/,
      );
      assert.deepEqual(backend.received, ["c1", "c2"]);
      backend.releaseAll();
      assert.equal(await c1, "ok c1");
      assert.equal(await c2, "ok c2");
      // c3 got the freed slot and reached the server.
      await waitFor(() => backend.received.length === 3, 5000, "c3 at the server");
      backend.releaseAll();
      assert.equal(await c3, "ok c3");
      assert.deepEqual(backend.received, ["c1", "c2", "c3"]);
      const s = client.stats();
      assert.equal(s.running, 0);
      assert.equal(s.queued, 0);
      assert.equal(s.pool.inFlight, 0);
    } finally {
      client.close();
    }
  });

  it("takes a call cancelled while waiting out of the queue without it reaching the server", async () => {
    backend.received.length = 0;
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: `127.0.0.1:${backend.port}`,
      preset: inRegion({ limiter: { maxConcurrent: 1, maxQueue: 5 } }),
    });
    try {
      const first = outcome(client.Echo({ message: "first" }));
      await waitFor(() => backend.received.length === 1, 5000, "the first call at the server");
      const abort = new AbortController();
      const waiting = outcome(client.Echo({ message: "cancelled" }, { signal: abort.signal }));
      const next = outcome(client.Echo({ message: "next" }));
      assert.equal(client.stats().queued, 2);
      abort.abort();
      assert.equal(await waiting, "CANCELLED Cancelled on client while waiting for a concurrency slot");
      assert.equal(client.stats().queued, 1);
      backend.releaseAll();
      assert.equal(await first, "ok first");
      await waitFor(() => backend.received.length === 2, 5000, "the next call at the server");
      backend.releaseAll();
      assert.equal(await next, "ok next");
      assert.deepEqual(backend.received, ["first", "next"]);
      assert.equal(client.stats().running, 0);
    } finally {
      client.close();
    }
  });

  it("works as an interceptor on a plain grpc-js client, with and without deadlines", async () => {
    backend.received.length = 0;
    const limiter = createClientLimiter({ maxConcurrent: 1, maxQueue: 2, maxQueueWaitMs: Infinity });
    const plain = new grpc.Client(`127.0.0.1:${backend.port}`, grpc.credentials.createInsecure(), {
      interceptors: [limiter.interceptor],
    });
    const m = echoDef.Echo!;
    const call = (message: string, deadline?: number) =>
      outcome(
        new Promise((resolve, reject) =>
          plain.makeUnaryRequest(
            m.path,
            m.requestSerialize,
            m.responseDeserialize,
            { message },
            deadline === undefined ? {} : { deadline },
            (err, res) => (err ? reject(err) : resolve(res)),
          ),
        ),
      );
    try {
      const first = call("first");
      await waitFor(() => backend.received.length === 1, 5000, "the first call at the server");
      // No deadline, no queue wait limit: it waits as long as the slot is taken.
      const patient = call("patient");
      // grpc-js's own deadline timer runs on this call while it waits; the limiter still answers.
      assert.match(
        await call("hurried", Date.now() + 150),
        /^RESOURCE_EXHAUSTED .*the call's deadline was reached$/,
      );
      assert.equal(limiter.limiter.queued, 1);
      backend.releaseAll();
      assert.equal(await first, "ok first");
      await waitFor(() => backend.received.length === 2, 5000, "the patient call at the server");
      backend.releaseAll();
      assert.equal(await patient, "ok patient");
      assert.deepEqual(backend.received, ["first", "patient"]);
      assert.equal(limiter.limiter.inFlight, 0);
    } finally {
      plain.close();
    }
  });
});
