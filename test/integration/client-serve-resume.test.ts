// Résumé affinity in the thick client against the real workers of `roster serve`: a createClient
// client with policy roster_resume talks to the workers directly (their unix sockets, from serve()'s
// workers()), reads each worker's ORCA résumé (server/resume.ts: `roster.skill.<class>` named metrics on
// the out-of-band stream) and sends each class of call to the worker that has the skill for it.
//
// Each worker is first taught its own classes by calls sent to it alone; nothing else gives the client
// a reason to prefer it. Without the résumés, roster_resume would hand each new class to the least
// recently used worker (then keep it there), so the first call of each of 8 classes would land on its
// trained worker about one time in four. Shares of calls are counted; no timing is asserted.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { createClient, type RosterClient, type Unary } from "../../src/client/index.ts";
import { type RosterServer, serve, type WorkerStatus } from "../../src/server/index.ts";

const fixture = fileURLToPath(new URL("../fixtures/cache-service.ts", import.meta.url));
const PROTO = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));

interface EchoService {
  Echo: Unary<{ payload: Buffer }, { served_by: string }>;
}
type Echo = RosterClient<EchoService>;

/** Which worker served a reply: the fixture's served_by is `worker-N-PID`. */
function workerOf(servedBy: string): number {
  const m = /^worker-(\d+)-\d+$/.exec(servedBy);
  assert.ok(m, `unexpected served_by ${servedBy}`);
  return Number(m[1]);
}

async function call(client: Echo, className: string): Promise<string> {
  const metadata = new grpc.Metadata();
  metadata.set("x-roster-class", className);
  const reply = await client.Echo({ payload: Buffer.alloc(8) }, { metadata, deadlineMs: 10_000 });
  return reply.served_by;
}

describe("roster_resume in a thick client on the workers of roster serve", () => {
  let server: RosterServer | undefined;
  const clients: Echo[] = [];

  before(async () => {
    server = await serve({
      module: fixture,
      workers: 4,
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.close();
  });

  it("sends each class to the worker whose ORCA résumé has its skill, from the class's first call", {
    timeout: 60_000,
  }, async () => {
    const workers: WorkerStatus[] = server!.workers();
    assert.equal(workers.length, 4);
    for (const w of workers) assert.match(w.address ?? "", /^unix:\/.+\.sock$/, JSON.stringify(w));

    // Teach worker N the classes k-(2N-2) and k-(2N-1), and probe-N, by calls to it alone.
    const owner = new Map<string, number>();
    for (const w of workers) {
      const direct = createClient<EchoService>({
        proto: PROTO,
        service: "roster.demo.Echo",
        target: w.address!,
      });
      clients.push(direct);
      const classes = [`k-${2 * w.worker - 2}`, `k-${2 * w.worker - 1}`, `probe-${w.worker}`];
      for (const c of classes) {
        owner.set(c, w.worker);
        for (let i = 0; i < 10; i++) {
          const servedBy = await call(direct, c);
          assert.equal(servedBy, `worker-${w.worker}-${w.pid}`, `${w.address} is worker ${w.worker}`);
        }
      }
    }

    // One thick client over the four workers' sockets.
    const echo = createClient<EchoService>({
      proto: PROTO,
      service: "roster.demo.Echo",
      target: `roster:///${workers.map((w) => w.address).join(",")}`,
      policy: "roster_resume",
    });
    clients.push(echo);

    // Until every worker's résumé has reached the client: probe-N calls until one lands on worker N.
    // (A probe that lands elsewhere first teaches that worker the probe too; it does not touch k-*.)
    const confirmed = new Set<number>();
    for (let round = 0; round < 100 && confirmed.size < workers.length; round++) {
      for (const w of workers) {
        if (confirmed.has(w.worker)) continue;
        if (workerOf(await call(echo, `probe-${w.worker}`)) === w.worker) confirmed.add(w.worker);
      }
      if (confirmed.size < workers.length) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(confirmed.size, workers.length, `résumés seen from workers ${[...confirmed].join(", ")}`);

    // The 8 trained classes, in turn, 25 calls each; the client has never sent one of them before.
    const classes = [...owner.keys()].filter((c) => c.startsWith("k-"));
    const first = new Map<string, number>();
    const served = new Map<string, number[]>();
    for (let round = 0; round < 25; round++) {
      for (const c of classes) {
        const w = workerOf(await call(echo, c));
        if (!first.has(c)) first.set(c, w);
        served.set(c, [...(served.get(c) ?? []), w]);
      }
    }
    const detail = JSON.stringify(Object.fromEntries(served));
    for (const c of classes) {
      assert.equal(first.get(c), owner.get(c), `first call of ${c}: ${detail}`);
      const onOwner = served.get(c)!.filter((w) => w === owner.get(c)).length;
      assert.ok(onOwner >= 24, `${c}: ${onOwner} of 25 on worker ${owner.get(c)}; ${detail}`);
    }
  });
});
