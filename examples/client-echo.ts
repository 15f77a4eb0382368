// The thick client in a few lines: `node --import tsx examples/client-echo.ts`.
// Starts two small Echo servers of its own (or uses ROSTER_TARGET, e.g. a `roster serve` front:
// ROSTER_TARGET=127.0.0.1:50051 after `npx roster serve examples/echo-service.ts --port 50051`), then
// sends 500 calls at once through one client: balanced per call, at most 50 in flight (the others
// queue), Echo retried on UNAVAILABLE and hedged when slow.
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

async function main(): Promise<void> {
  const servers: grpc.Server[] = [];
  const target = process.env.ROSTER_TARGET ?? `ipv4:${(await startServers(servers)).join(",")}`;

  // The three lines: a client for a service from its .proto, with a preset and a policy.
  const echo = createClient<{ Echo: Unary<EchoRequest, EchoReply> }>({
    proto: PROTO,
    service: "roster.demo.Echo",
    target,
    preset: presets.lowLatency({ deadlineMs: 2000, limiter: { maxQueueWaitMs: 1500 } }),
    policy: "round_robin", // or "roster_peak_ewma" once registerRosterPolicies() has run
    // echo.proto declares no idempotency_level; say here what roster serve's example says.
    idempotent: ["Echo"],
    hedge: ["Echo"],
  });
  const reply = await echo.Echo({ payload: Buffer.from("hello") });
  console.log(`one call: served by ${reply.served_by}`);

  const servedBy = new Map<string, number>();
  let failed = 0;
  await Promise.all(
    Array.from({ length: 500 }, async () => {
      try {
        const r = await echo.Echo({ payload: Buffer.alloc(16), sleep_us: 2000 });
        servedBy.set(r.served_by, (servedBy.get(r.served_by) ?? 0) + 1);
      } catch (err) {
        failed++;
        console.log(`failed: ${(err as grpc.ServiceError).details}`);
      }
    }),
  );
  console.log(`500 calls at once: ${failed} failed; per server:`, Object.fromEntries(servedBy));
  const s = echo.stats();
  console.log(
    `channels in the pool: ${s.pool.size}; hedges sent ${s.hedges.sent}, won ${s.hedges.won}, ` +
      `not sent for want of a free slot ${s.hedges.skippedNoSlot}; ` +
      `retry budget tokens ${s.budgetTokens.toFixed(1)}`,
  );
  echo.close();
  for (const server of servers) server.forceShutdown();
}

/** Two roster.demo.Echo servers on 127.0.0.1; the second is slow on every 20th call. */
async function startServers(servers: grpc.Server[]): Promise<string[]> {
  const def = protoLoader.loadSync(PROTO, { keepCase: true })["roster.demo.Echo"] as grpc.ServiceDefinition;
  const addresses: string[] = [];
  for (const name of ["server-1", "server-2"]) {
    const server = new grpc.Server();
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
