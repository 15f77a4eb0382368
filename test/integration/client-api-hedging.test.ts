// Hedging in the thick client against a real grpc-js server: a method the proto declares
// NO_SIDE_EFFECTS gets a second attempt when the first is slow; the first answer wins and the server
// sees the other attempt cancelled. Methods without the mark are never hedged, and the retry budget
// stops hedges once spent.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, inRegion, type Unary } from "../../src/client/index.ts";
import { waitFor } from "../support/echo-backend.ts";

const CATALOG_PROTO = fileURLToPath(new URL("../fixtures/catalog.proto", import.meta.url));
const catalogDef = protoLoader.loadSync(CATALOG_PROTO, { keepCase: true })[
  "roster.test.Catalog"
] as grpc.ServiceDefinition;

interface Item {
  id: string;
}
interface CatalogService {
  Get: Unary<Item, Item>;
  Buy: Unary<Item, Item>;
}

interface Backend {
  port: number;
  server: grpc.Server;
  /** Every request id as it arrived, per method. */
  arrivals: string[];
  cancelled: string[];
  pending: Set<() => void>;
}

/**
 * The first attempt of each id is held until the client cancels it (or the test ends); any later
 * attempt of the same id answers at once with "<id> from attempt <n>".
 */
async function backend(): Promise<Backend> {
  const server = new grpc.Server();
  const b: Backend = { port: 0, server, arrivals: [], cancelled: [], pending: new Set() };
  const handler =
    (method: string) => (call: grpc.ServerUnaryCall<Item, Item>, cb: grpc.sendUnaryData<Item>) => {
      const id = call.request.id;
      const attempt = b.arrivals.filter((a) => a === `${method} ${id}`).length + 1;
      b.arrivals.push(`${method} ${id}`);
      if (attempt > 1) {
        cb(null, { id: `${id} from attempt ${attempt}` });
        return;
      }
      const finish = () => {
        b.pending.delete(finish);
        cb(null, { id: `${id} from attempt 1` });
      };
      b.pending.add(finish);
      call.on("cancelled", () => {
        b.pending.delete(finish);
        b.cancelled.push(`${method} ${id}`);
      });
    };
  server.addService(catalogDef, {
    Get: handler("Get"),
    Buy: handler("Buy"),
    Put: handler("Put"),
    Sell: handler("Sell"),
  });
  b.port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return b;
}

describe("client hedging", () => {
  let b: Backend;
  before(async () => {
    b = await backend();
  });
  after(() => {
    for (const finish of [...b.pending]) finish();
    b.server.forceShutdown();
  });

  it("hedges a slow NO_SIDE_EFFECTS call, takes the hedge's answer and cancels the first attempt", async () => {
    const client = createClient<CatalogService>({
      proto: CATALOG_PROTO,
      service: "roster.test.Catalog",
      target: `127.0.0.1:${b.port}`,
      preset: inRegion({ hedging: { initialDelayMs: 20, minDelayMs: 1 }, deadlineMs: 10_000 }),
    });
    try {
      assert.deepEqual(
        client.methods.filter((m) => m.hedged).map((m) => m.key),
        ["Get"],
      );
      const reply = await client.Get({ id: "g1" });
      assert.equal(reply.id, "g1 from attempt 2");
      await waitFor(
        () => b.cancelled.includes("Get g1"),
        5000,
        "the server to see the first attempt cancelled",
      );
      assert.deepEqual(client.stats().hedges, { sent: 1, won: 1, skippedByBudget: 0, skippedNoSlot: 0 });
      await waitFor(() => client.stats().pool.inFlight === 0, 5000, "both attempts to end");
      assert.equal(client.stats().running, 0);
    } finally {
      client.close();
    }
  });

  it("never hedges a method without the mark: the slow call simply waits", async () => {
    const client = createClient<CatalogService>({
      proto: CATALOG_PROTO,
      service: "roster.test.Catalog",
      target: `127.0.0.1:${b.port}`,
      preset: inRegion({ hedging: { initialDelayMs: 5, minDelayMs: 1 }, deadlineMs: 10_000 }),
    });
    try {
      const reply = client.Buy({ id: "b1" });
      await waitFor(() => b.arrivals.includes("Buy b1"), 5000, "Buy at the server");
      // Well past the hedge delay: a hedge would have arrived by now as a second "Buy b1".
      await new Promise((r) => setTimeout(r, 100));
      for (const finish of [...b.pending]) finish();
      assert.equal((await reply).id, "b1 from attempt 1");
      assert.deepEqual(
        b.arrivals.filter((a) => a === "Buy b1"),
        ["Buy b1"],
      );
      assert.equal(client.stats().hedges.sent, 0);
    } finally {
      client.close();
    }
  });

  it("stops hedging when the budget is spent, and the unhedged call runs to its deadline", async () => {
    const client = createClient<CatalogService>({
      proto: CATALOG_PROTO,
      service: "roster.test.Catalog",
      target: `127.0.0.1:${b.port}`,
      // 3 tokens, hedges allowed while more than 1.5 remain: two hedges (3 → 2.01 → 1.02), then none.
      preset: inRegion({
        hedging: { initialDelayMs: 20, minDelayMs: 1 },
        budget: { maxTokens: 3, tokenRatio: 0.01 },
      }),
    });
    try {
      assert.equal((await client.Get({ id: "x1" })).id, "x1 from attempt 2");
      assert.equal((await client.Get({ id: "x2" })).id, "x2 from attempt 2");
      await assert.rejects(client.Get({ id: "x3" }, { deadlineMs: 300 }), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
        return true;
      });
      assert.deepEqual(client.stats().hedges, { sent: 2, won: 2, skippedByBudget: 1, skippedNoSlot: 0 });
      assert.deepEqual(
        b.arrivals.filter((a) => a === "Get x3"),
        ["Get x3"],
      );
    } finally {
      client.close();
    }
  });
});
