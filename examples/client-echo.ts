// The thick client, run it: `npm run example:client` (or `node --import tsx examples/client-echo.ts`).
// Starts two small Echo servers of its own that allow 100 streams per connection (or uses
// ROSTER_TARGET, e.g. a `roster serve` front: ROSTER_TARGET=127.0.0.1:50051 after
// `npx roster serve examples/echo-service.ts --listen 127.0.0.1:50051`), then shows, from one process:
//   1. a preset (lowLatency) and Roster's peak_ewma policy: 500 calls at once, at most 50 in flight (the
//      limiter queues the rest), balanced per call, the slow server avoided, slow calls hedged;
//   2. the channel pool: 300 calls held at once on server-1, which allows 100 streams per connection,
//      need 3 connections or more; the pool opens a channel (its own connection) each time every channel
//      carries 100 calls, then closes them when the calls are gone.
// Outside this repository, import { createClient, presets } from "roster/client".
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, presets, type Unary } from "../src/client/index.ts";

const PROTO = fileURLToPath(new URL("../proto/roster/demo/echo.proto", import.meta.url));

interface EchoRequest {
  payload: Buffer;
  sleep_us?: number;
}
interface EchoReply {
  payload: Buffer;
  served_by: string;
}
type EchoService = { Echo: Unary<EchoRequest, EchoReply> };

async function main(): Promise<void> {
  const servers: grpc.Server[] = [];
  const own = process.env.ROSTER_TARGET === undefined ? await startServers(servers) : [];
  const target = process.env.ROSTER_TARGET ?? `roster:///${own.join(",")}`;

  // The three lines: a client for a service from its .proto, with a preset and a policy.
  const echo = createClient<EchoService>({
    proto: PROTO,
    service: "roster.demo.Echo",
    target,
    preset: presets.lowLatency({ deadlineMs: 2000, limiter: { maxQueueWaitMs: 1500 } }),
    policy: "roster_peak_ewma",
    // echo.proto declares no idempotency_level; say here what roster serve's example says.
    idempotent: ["Echo"],
    hedge: ["Echo"],
  });
  const reply = await echo.Echo({ payload: Buffer.from("hello") });
  console.log(`one call: served by ${reply.served_by}`);
  const p = echo.preset;
  console.log(
    `preset lowLatency: deadline ${p.deadlineMs} ms, at most ${p.limiter.maxConcurrent} calls in flight ` +
      `(queue ${p.limiter.maxQueue}, wait ≤ ${p.limiter.maxQueueWaitMs} ms), pool ${p.pool.min}–${p.pool.max} channels`,
  );

  const servedBy = new Map<string, number>();
  const failed = new Map<string, number>();
  let firstFailure = "";
  const burst = Array.from({ length: 500 }, async () => {
    try {
      const r = await echo.Echo({ payload: Buffer.alloc(16), sleep_us: 2000 });
      servedBy.set(r.served_by, (servedBy.get(r.served_by) ?? 0) + 1);
    } catch (err) {
      // On an overloaded machine, calls still queued after 1.5 s end RESOURCE_EXHAUSTED: the limiter.
      const e = err as grpc.ServiceError;
      const code = grpc.status[e.code] ?? String(e.code);
      failed.set(code, (failed.get(code) ?? 0) + 1);
      firstFailure ||= `${code}: ${e.details}`;
    }
  });
  const during = echo.stats();
  console.log(`limiter, just after sending 500 calls: ${during.running} running, ${during.queued} waiting`);
  await Promise.all(burst);
  console.log(
    "500 calls; answered per server:",
    Object.fromEntries(servedBy),
    "failed:",
    Object.fromEntries(failed),
  );
  if (firstFailure !== "") console.log(`  the first failure: ${firstFailure}`);
  const s = echo.stats();
  console.log(
    `hedges sent ${s.hedges.sent}, won ${s.hedges.won}, not sent for want of a free slot ` +
      `${s.hedges.skippedNoSlot}; retry budget tokens ${s.budgetTokens.toFixed(1)}`,
  );
  echo.close();

  // The pool: a limit of 1000 calls in flight, up to 8 channels of 100 streams, idle ones closed after 200 ms.
  const wide = createClient<EchoService>({
    proto: PROTO,
    service: "roster.demo.Echo",
    target: process.env.ROSTER_TARGET ?? own[0]!,
    preset: presets.inRegion({
      deadlineMs: 5000,
      limiter: { maxConcurrent: 1000 },
      pool: { min: 1, max: 8, streamsPerConnection: 100, idleMs: 200 },
    }),
  });
  await wide.Echo({ payload: Buffer.alloc(0) });
  console.log(`pool before: ${wide.stats().pool.size} channel`);
  let largest = 0;
  let busiest = 0;
  const sample = setInterval(() => {
    const pool = wide.stats().pool;
    largest = Math.max(largest, pool.size);
    busiest = Math.max(busiest, ...pool.perChannel);
  }, 5);
  await Promise.all(
    Array.from({ length: 300 }, () => wide.Echo({ payload: Buffer.alloc(16), sleep_us: 200_000 })),
  );
  clearInterval(sample);
  console.log(
    `pool with 300 calls of 200 ms at once on one server: grew to ${largest} channels, ` +
      `at most ${busiest} calls on one`,
  );
  // Bounded: at most 5 s for the idle channels to close.
  for (let i = 0; i < 100 && wide.stats().pool.size > 1; i++) await new Promise((r) => setTimeout(r, 50));
  console.log(`pool when idle again: ${wide.stats().pool.size} channel`);
  wide.close();
  for (const server of servers) server.forceShutdown();
}

/** Two roster.demo.Echo servers on 127.0.0.1, 100 streams per connection; the second is slow on every 20th call. */
async function startServers(servers: grpc.Server[]): Promise<string[]> {
  const def = protoLoader.loadSync(PROTO, { keepCase: true })["roster.demo.Echo"] as grpc.ServiceDefinition;
  const addresses: string[] = [];
  for (const name of ["server-1", "server-2"]) {
    const server = new grpc.Server({ "grpc.max_concurrent_streams": 100 });
    let calls = 0;
    const handle = (
      call: grpc.ServerUnaryCall<EchoRequest, EchoReply>,
      cb: grpc.sendUnaryData<EchoReply>,
    ) => {
      const slow = name === "server-2" && ++calls % 20 === 0;
      const ms = slow ? 300 : (call.request.sleep_us ?? 0) / 1000;
      const timer = setTimeout(() => cb(null, { payload: call.request.payload, served_by: name }), ms);
      call.on("cancelled", () => clearTimeout(timer));
    };
    server.addService(def, { Echo: handle, EchoOnce: handle });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? rej(e) : res(p),
      ),
    );
    servers.push(server);
    addresses.push(`127.0.0.1:${port}`);
  }
  return addresses;
}

await main();
