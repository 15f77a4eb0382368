// A killed backend under the thick client: calls of a method the proto declares IDEMPOTENT that were
// running on it are retried on the other backend (grpc-js retryPolicy from the client's service
// config) and none fails; calls of an unmarked method running on it fail UNAVAILABLE, as they must.
//
// This file is also the backend: `node --import tsx client-api-retry.test.ts --catalog-backend ID`
// prints "PORT n", then "GOT <method> <id>" per call; a line "hold" on stdin makes it hold every later
// call unanswered. It exits when its stdin closes, so it never outlives the test.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, inRegion, type Unary } from "../../src/client/index.ts";
import { waitFor } from "../support/echo-backend.ts";

const CATALOG_PROTO = fileURLToPath(new URL("../fixtures/catalog.proto", import.meta.url));
const SELF = fileURLToPath(import.meta.url);

interface Item {
  id: string;
}
interface CatalogService {
  Put: Unary<Item, Item>;
  Buy: Unary<Item, Item>;
}

async function runBackend(id: string): Promise<void> {
  const def = protoLoader.loadSync(CATALOG_PROTO, { keepCase: true })[
    "roster.test.Catalog"
  ] as grpc.ServiceDefinition;
  let hold = false;
  const server = new grpc.Server();
  const handler =
    (method: string) => (call: grpc.ServerUnaryCall<Item, Item>, cb: grpc.sendUnaryData<Item>) => {
      process.stdout.write(`GOT ${method} ${call.request.id}\n`);
      if (!hold) cb(null, { id: `${call.request.id}@${id}` });
    };
  server.addService(def, {
    Get: handler("Get"),
    Put: handler("Put"),
    Buy: handler("Buy"),
    Sell: handler("Sell"),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  process.stdout.write(`PORT ${port}\n`);
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "hold") hold = true;
  });
  lines.on("close", () => process.exit(0));
}

interface Child {
  proc: ChildProcess;
  port: number;
  got: string[];
}

function spawnBackend(id: string): Promise<Child> {
  const proc = spawn(process.execPath, ["--import", "tsx", SELF, "--catalog-backend", id], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const child: Child = { proc, port: 0, got: [] };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`backend ${id} did not start in 15 s`)), 15_000);
    proc.once("exit", (code) => reject(new Error(`backend ${id} exited (${code}) before listening`)));
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      const port = /^PORT (\d+)$/.exec(line);
      if (port) {
        clearTimeout(timer);
        child.port = Number(port[1]);
        resolve(child);
      } else if (line.startsWith("GOT ")) child.got.push(line.slice(4));
    });
  });
}

async function outcome(p: Promise<Item>): Promise<string> {
  try {
    return (await p).id;
  } catch (err) {
    return grpc.status[(err as grpc.ServiceError).code] ?? String(err);
  }
}

const argAt = process.argv.indexOf("--catalog-backend");
if (argAt >= 0) {
  void runBackend(process.argv[argAt + 1] ?? "backend");
} else {
  describe("client retries across a killed backend", () => {
    let a: Child;
    let b: Child;
    before(async () => {
      [a, b] = await Promise.all([spawnBackend("A"), spawnBackend("B")]);
    });
    after(() => {
      for (const c of [a, b]) {
        if (c !== undefined && c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
      }
    });

    it("loses no call of an IDEMPOTENT method when a backend dies with calls on it", async () => {
      const client = createClient<CatalogService>({
        proto: CATALOG_PROTO,
        service: "roster.test.Catalog",
        target: `ipv4:127.0.0.1:${a.port},127.0.0.1:${b.port}`,
        policy: "round_robin",
        preset: inRegion({
          deadlineMs: 10_000,
          retry: { maxAttempts: 5, initialBackoffMs: 10, maxBackoffMs: 100 },
        }),
      });
      try {
        assert.deepEqual(
          client.methods.filter((m) => m.retried).map((m) => m.key),
          ["Get", "Put"],
        );
        // Both backends serve.
        const warm: string[] = [];
        for (let i = 0; i < 10; i++) warm.push(await outcome(client.Put({ id: `w${i}` })));
        assert.ok(warm.some((r) => r.endsWith("@A")) && warm.some((r) => r.endsWith("@B")), warm.join(" "));

        a.proc.stdin!.write("hold\n");
        const gotBefore = a.got.length;
        const puts = ["p1", "p2", "p3", "p4"].map((id) => outcome(client.Put({ id })));
        const buys = ["b1", "b2", "b3", "b4"].map((id) => outcome(client.Buy({ id })));
        const heldOnA = () => a.got.slice(gotBefore);
        await waitFor(
          () => heldOnA().some((g) => g.startsWith("Put")) && heldOnA().some((g) => g.startsWith("Buy")),
          10_000,
          "A to hold a Put and a Buy",
        );
        a.proc.kill("SIGKILL");
        const putResults = await Promise.all(puts);
        const buyResults = await Promise.all(buys);

        // Every Put succeeded; the ones A held were answered by B.
        const heldPuts = heldOnA()
          .filter((g) => g.startsWith("Put "))
          .map((g) => g.slice(4));
        assert.ok(heldPuts.length > 0);
        for (const id of heldPuts)
          assert.ok(putResults.includes(`${id}@B`), `${id}: ${putResults.join(" ")}`);
        assert.ok(
          putResults.every((r) => r.endsWith("@B")),
          putResults.join(" "),
        );
        // Buy is not idempotent: the ones A held fail, the others were answered by B.
        const heldBuys = heldOnA()
          .filter((g) => g.startsWith("Buy "))
          .map((g) => g.slice(4));
        for (const [i, id] of ["b1", "b2", "b3", "b4"].entries()) {
          assert.equal(
            buyResults[i],
            heldBuys.includes(id) ? "UNAVAILABLE" : `${id}@B`,
            buyResults.join(" "),
          );
        }
        // And the client goes on on B alone.
        for (let i = 0; i < 10; i++) assert.equal(await outcome(client.Put({ id: `z${i}` })), `z${i}@B`);
      } finally {
        client.close();
      }
    });
  });
}
