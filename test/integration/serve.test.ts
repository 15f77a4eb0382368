// roster serve: per-call shares from one connection, a handler that throws, and workers killed under load.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type RosterServer, serve } from "../../src/server/index.ts";
import { createDemoClient, runCalls } from "../support/demo-client.ts";

const example = fileURLToPath(new URL("../../examples/echo-service.ts", import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const listen = { kind: "tcp", host: "127.0.0.1", port: 0 } as const;

describe("roster serve with 4 workers", () => {
  let server: RosterServer | undefined;
  before(async () => {
    server = await serve({ module: example, workers: 4, listen });
  });
  after(async () => {
    await server?.close();
  });

  it("spreads the calls of ONE client connection over every worker: max/min worker share at most 1.5", async () => {
    // Handlers that wait 2 ms (I/O-bound): every worker has about the same capacity, so the split is
    // near even. Node cluster gives one worker 100 % here.
    //
    // Why 1.5 and not the 1.05–1.08 a quiet machine shows: the default policy joins the shortest queue
    // (least_request scanning every worker, ties in turn), so it follows how fast each worker really
    // answers. On this 2-core machine the four workers, the front and the client share the cores; when
    // other work loads them, a worker the OS runs less holds its calls longer and rightly gets fewer
    // (1.20 was seen under a valgrind run beside the tests). The split on a quiet machine is measured in
    // bench/serve-scaling (per-worker shares), not asserted here: a test must not fail because the
    // machine was busy. What this test guards is the behaviour: one connection's calls reach every
    // worker in comparable shares, not one worker.
    const client = createDemoClient(server!.address);
    const results = await runCalls(4000, 32, () => client.echo("Echo", 0, 10_000, 2000));
    client.close();
    const counts = new Map<string, number>();
    for (const r of results) {
      assert.ok(r.ok, r.ok ? "" : `call failed: ${r.error.message}`);
      if (r.ok) counts.set(r.reply.served_by, (counts.get(r.reply.served_by) ?? 0) + 1);
    }
    assert.equal(counts.size, 4, `workers seen: ${[...counts.keys()].join(", ")}`);
    const values = [...counts.values()];
    const ratio = Math.max(...values) / Math.min(...values);
    console.log(`shares ${JSON.stringify(Object.fromEntries(counts))}, max/min ${ratio.toFixed(3)}`);
    assert.ok(
      ratio <= 1.5,
      `shares ${JSON.stringify(Object.fromEntries(counts))}, max/min ${ratio.toFixed(3)}`,
    );
  });

  it("keeps every idempotent call alive while a worker is SIGKILLed every 2 s for 30 s", {
    timeout: 120_000,
  }, async () => {
    const client = createDemoClient(server!.address);
    let stop = false;
    const idempotent: Array<{ ok: boolean; message?: string }> = [];
    const once: Array<{ ok: boolean; code?: number; message?: string }> = [];
    const lane = async (method: "Echo" | "EchoOnce") => {
      // Bounded by `stop` (set after 30 s) and each call's 10 s deadline.
      while (!stop) {
        try {
          await client.echo(method, 300);
          (method === "Echo" ? idempotent : once).push({ ok: true });
        } catch (err) {
          const e = err as { code?: number; message: string };
          if (method === "Echo") idempotent.push({ ok: false, message: e.message });
          else once.push({ ok: false, code: e.code ?? -1, message: e.message });
        }
      }
    };
    const load = Promise.all([
      ...Array.from({ length: 12 }, () => lane("Echo")),
      ...Array.from({ length: 4 }, () => lane("EchoOnce")),
    ]);
    let kills = 0;
    // 15 kills 2 s apart; a turn that finds no worker ready (restarts are slow on a loaded machine)
    // kills nothing and the next turn tries again, bounded by 60 s in all.
    const until = Date.now() + 60_000;
    for (let i = 0; kills < 15 && Date.now() < until; i++) {
      await new Promise((r) => setTimeout(r, 2000));
      const ready = server!.workers().filter((w) => w.state === "ready" && w.pid !== undefined);
      const victim = ready[i % Math.max(ready.length, 1)];
      if (victim?.pid !== undefined) {
        process.kill(victim.pid, "SIGKILL");
        kills++;
      }
    }
    stop = true;
    await load;
    client.close();
    assert.ok(kills >= 10, `only ${kills} workers were killed`);
    const failed = idempotent.filter((r) => !r.ok);
    assert.ok(idempotent.length > 500, `only ${idempotent.length} idempotent calls ran`);
    assert.equal(
      failed.length,
      0,
      `idempotent calls failed: ${failed
        .slice(0, 3)
        .map((f) => f.message)
        .join(" | ")}`,
    );
    for (const r of once) {
      if (!r.ok) assert.equal(r.code, 14, `a non-idempotent call ended with ${r.code}: ${r.message}`);
    }
    // Every slot came back.
    const deadline = Date.now() + 15_000;
    while (server!.workers().some((w) => w.state !== "ready") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(
      server!.workers().map((w) => w.state),
      ["ready", "ready", "ready", "ready"],
    );
  });
});

describe("roster serve with a handler that throws", () => {
  let server: RosterServer | undefined;
  before(async () => {
    server = await serve({ module: fixture("throwing-service.ts"), workers: 1, listen });
  });
  after(async () => {
    await server?.close();
  });

  it("answers the call with UNKNOWN and the handler's message, and the worker keeps serving", async () => {
    const client = createDemoClient(server!.address);
    await assert.rejects(client.echo("Echo"), (e: { code: number; details: string }) => {
      assert.equal(e.code, 2);
      assert.match(e.details, /kaboom/);
      return true;
    });
    assert.equal((await client.echo("EchoOnce")).served_by, "ok");
    client.close();
    assert.equal(server!.workers()[0]!.restarts, 0);
  });
});

describe("roster serve with a broken service module", () => {
  const cases: Array<[string, RegExp]> = [
    ["syntax-error-service.ts", /cannot load service module .*syntax-error-service\.ts/],
    ["no-export-service.ts", /exports no services/],
    ["unknown-service.ts", /has no service "roster\.demo\.Nope"; it has: roster\.demo\.Echo/],
    ["exits-at-start-service.ts", /worker \d exited \(code 7\) before it was ready/],
  ];
  for (const [file, message] of cases) {
    it(`refuses to start on ${file} with a clear message`, async () => {
      await assert.rejects(
        serve({ module: fixture(file), workers: 2, listen, startTimeoutMs: 20_000 }),
        (e: Error) => {
          assert.match(e.message, message);
          return true;
        },
      );
    });
  }
});
