// The thick client's channel pool against a grpc-js server that allows 100 streams per connection:
// one connection holds at most 100 calls at the server; the pool opens more connections as calls
// pass that, so all of them run at once, and closes them again when demand is gone.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, inRegion, type Unary } from "../../src/client/index.ts";
import { waitFor } from "../support/echo-backend.ts";

const ECHO_PROTO = fileURLToPath(new URL("../support/echo.proto", import.meta.url));
const echoDef = protoLoader.loadSync(ECHO_PROTO, { keepCase: true })[
  "roster.test.Echo"
] as grpc.ServiceDefinition;

interface EchoService {
  Echo: Unary<{ message: string }, { message: string }>;
}

interface Backend {
  port: number;
  server: grpc.Server;
  /** Calls the handler holds now. */
  held: (() => void)[];
  /** The client ends of the connections calls came on ("127.0.0.1:PORT"). */
  peers: Set<string>;
  releaseAll(): void;
}

async function limitedServer(): Promise<Backend> {
  const server = new grpc.Server({ "grpc.max_concurrent_streams": 100 });
  const b: Backend = {
    port: 0,
    server,
    held: [],
    peers: new Set(),
    releaseAll() {
      for (const r of b.held.splice(0)) r();
    },
  };
  server.addService(echoDef, {
    Echo(call: grpc.ServerUnaryCall<{ message: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      b.peers.add(call.getPeer());
      b.held.push(() => cb(null, { message: call.request.message }));
    },
  });
  b.port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return b;
}

describe("client channel pool", () => {
  let b: Backend;
  before(async () => {
    b = await limitedServer();
  });
  after(() => {
    b.releaseAll();
    b.server.forceShutdown();
  });

  it("with one channel, the server's limit of 100 streams holds the other calls back", async () => {
    b.peers.clear();
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: `127.0.0.1:${b.port}`,
      preset: inRegion({ pool: { min: 1, max: 1 }, limiter: { maxConcurrent: 1000 }, deadlineMs: 30_000 }),
    });
    try {
      const calls = Array.from({ length: 150 }, (_, i) => client.Echo({ message: `m${i}` }));
      await waitFor(() => b.held.length === 100, 10_000, "100 calls at the server");
      // The 50 others are in flight at the client but cannot open a stream: still 100 after a while.
      await waitFor(() => client.stats().pool.inFlight === 150, 5000, "150 calls in flight at the client");
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(b.held.length, 100);
      b.releaseAll();
      await waitFor(() => b.held.length === 50, 10_000, "the other 50 calls at the server");
      b.releaseAll();
      const replies = await Promise.all(calls);
      assert.equal(replies.length, 150);
      assert.equal(b.peers.size, 1);
    } finally {
      client.close();
    }
  });

  it("grows past the limit so that 250 calls run at once on 3 connections, then shrinks when idle", async () => {
    b.peers.clear();
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: `127.0.0.1:${b.port}`,
      preset: inRegion({
        pool: { min: 1, max: 4, streamsPerConnection: 100, idleMs: 100 },
        limiter: { maxConcurrent: 1000 },
        deadlineMs: 30_000,
      }),
    });
    try {
      const calls = Array.from({ length: 250 }, (_, i) => client.Echo({ message: `m${i}` }));
      await waitFor(() => b.held.length === 250, 10_000, "all 250 calls at the server at once");
      const s = client.stats();
      assert.equal(s.pool.size, 3);
      assert.deepEqual(s.pool.perChannel, [100, 100, 50]);
      // Each channel has its own connection (grpc.use_local_subchannel_pool).
      assert.equal(b.peers.size, 3);
      b.releaseAll();
      assert.equal((await Promise.all(calls)).length, 250);
      await waitFor(() => client.stats().pool.size === 1, 10_000, "the pool to shrink back to its minimum");
      // The channel that stays still works.
      const again = client.Echo({ message: "again" });
      await waitFor(() => b.held.length === 1, 5000, "a call after shrinking");
      b.releaseAll();
      assert.equal((await again).message, "again");
    } finally {
      client.close();
    }
  });

  it("counts one connection per backend: over 2 backends a channel holds 200 calls before the pool grows", async () => {
    const b2 = await limitedServer();
    b.peers.clear();
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: `ipv4:127.0.0.1:${b.port},127.0.0.1:${b2.port}`,
      preset: inRegion({
        pool: { min: 1, max: 4, streamsPerConnection: 100, idleMs: 60_000 },
        limiter: { maxConcurrent: 1000 },
        deadlineMs: 30_000,
      }),
    });
    try {
      // Both connections of the first channel READY before the load, as grpc-js reports them.
      const warm = client.Echo({ message: "warm" });
      await waitFor(() => b.held.length + b2.held.length === 1, 10_000, "the first call at a server");
      b.releaseAll();
      b2.releaseAll();
      assert.equal((await warm).message, "warm");
      await waitFor(
        () => client.stats().pool.connections[0] === 2,
        10_000,
        "2 READY connections on the channel",
      );
      const calls = Array.from({ length: 250 }, (_, i) => client.Echo({ message: `m${i}` }));
      await waitFor(() => b.held.length + b2.held.length === 250, 10_000, "all 250 calls at the servers");
      const s = client.stats();
      // 200 fill the first channel (100 per connection); one more channel for the other 50, not two.
      assert.equal(s.pool.size, 2);
      assert.deepEqual(s.pool.perChannel, [200, 50]);
      b.releaseAll();
      b2.releaseAll();
      assert.equal((await Promise.all(calls)).length, 250);
    } finally {
      client.close();
      b2.releaseAll();
      b2.server.forceShutdown();
    }
  });
});
