// Readiness behind `roster lb` over real sockets: a balancer started before its backend, a backend back
// after a long outage, and a dead backend under a burst of calls (no connect storm). Every call has a
// deadline; every server and client is closed after the test.
import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { type Lb, type LbOptions, startLb } from "../../src/proxy/lb.ts";
import { closedPort, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";

const closers: (() => Promise<void> | void)[] = [];

after(async () => {
  // Newest first: clients, then balancers, then backends.
  for (const close of closers.reverse()) await close();
});

async function balancer(port: number, extra: Partial<LbOptions> = {}): Promise<Lb> {
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port })],
    policy: createDefaultRegistry().resolve("round_robin", {}),
    ...extra,
  });
  closers.push(() => lb.close(1000));
  return lb;
}

function client(lb: Lb): EchoClient {
  const c = new EchoClient(lb.server.address);
  closers.push(() => c.close());
  return c;
}

async function backendOn(port: number, id: string) {
  const b = await startEchoBackend({ id, port, host: "127.0.0.1" });
  closers.push(() => b.close());
  return b;
}

type Outcome = { code: number; details: string; servedBy?: string };

function outcome(p: Promise<{ served_by: string }>): Promise<Outcome> {
  return p.then(
    (r) => ({ code: Status.OK, details: "", servedBy: r.served_by }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );
}

function stateOf(lb: Lb): string | undefined {
  return lb.channel.status()[0]?.state;
}

describe("readiness", () => {
  test("first start: calls made before the backend is up wait and succeed once it is, and none fails after", async () => {
    const port = await closedPort();
    const lb = await balancer(port);
    const c = client(lb);
    await waitFor(() => stateOf(lb) === "transient-failure", 5000, "the first connect to fail");
    const early = Array.from({ length: 5 }, () => outcome(c.echo({}, { deadlineMs: 15_000 })));
    // Several failed attempts while they wait (the port refuses).
    await new Promise((r) => setTimeout(r, 300));
    let settled = 0;
    for (const p of early) void p.then(() => settled++);
    await new Promise(setImmediate);
    assert.equal(settled, 0, "a call waiting for the backend ended before it was up");

    await backendOn(port, "late");
    const results = await Promise.all(early);
    for (const r of results) assert.equal(r.code, Status.OK, `${r.code}: ${r.details}`);
    assert.ok(results.every((r) => r.servedBy === "late"));
    for (let i = 0; i < 50; i++) {
      const r = await outcome(c.echo({}, { deadlineMs: 5000 }));
      assert.equal(r.code, Status.OK, `call ${i} after the backend was up: ${r.code}: ${r.details}`);
    }
  });

  test("a backend back after a long outage serves the next call without waiting out the reconnect backoff", async () => {
    const port = await closedPort();
    // Backoff steps of 300, 1200, 4800, 19 200 ms (no jitter): after ~2 s down the next attempt of
    // the link's own timer is ~4 s away.
    const backoff = { initialMs: 300, maxMs: 60_000, multiplier: 4, jitter: 0 };
    const lb = await balancer(port, { connection: { backoff } });
    const c = client(lb);
    const first = await backendOn(port, "before");
    assert.equal((await outcome(c.echo({}, { deadlineMs: 5000 }))).servedBy, "before");

    await first.close();
    await waitFor(() => stateOf(lb) === "transient-failure", 5000, "the balancer to see the backend gone");
    // Down for two failed attempts of its own backoff (at 300 ms and 1500 ms), then some.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(stateOf(lb), "transient-failure");
    await backendOn(port, "after");
    const t0 = performance.now();
    const r = await outcome(c.echo({}, { deadlineMs: 3000 }));
    const ms = performance.now() - t0;
    assert.equal(r.code, Status.OK, `${r.code}: ${r.details} (after ${Math.round(ms)} ms)`);
    assert.equal(r.servedBy, "after");
  });

  test("no connect storm: 1000 calls to a backend that accepts and drops every connection make a bounded number of attempts", {}, async (t) => {
    let accepted = 0;
    const sockets = new Set<net.Socket>();
    const dropper = net.createServer((s) => {
      accepted++;
      s.on("error", () => {});
      s.destroy();
    });
    dropper.on("connection", (s) => sockets.add(s));
    await new Promise<void>((resolve) => dropper.listen(0, "127.0.0.1", resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          dropper.close(() => resolve());
        }),
    );
    const port = (dropper.address() as net.AddressInfo).port;
    const lb = await balancer(port);
    const c = client(lb);
    await waitFor(
      () => accepted > 0 && stateOf(lb) === "transient-failure",
      5000,
      "the first attempt to fail",
    );
    // Warm the client's connection to the balancer, so the burst is not held up by it.
    await outcome(c.echo({}, { deadlineMs: 100 }));

    const before = accepted;
    const results = await Promise.all(
      Array.from({ length: 1000 }, () => outcome(c.echo({}, { deadlineMs: 1500 }))),
    );
    const attempts = accepted - before;
    assert.ok(
      results.every((r) => r.code === Status.DEADLINE_EXCEEDED || r.code === Status.UNAVAILABLE),
      "a call to a backend that drops every connection did not fail as expected",
    );
    // One attempt per wake-up (≥ 20 ms apart) while calls wait ~1.5 s: about 60; one per call would be 1000.
    t.diagnostic(`${attempts} connection attempts during the burst`);
    assert.ok(attempts >= 1, "no attempt at all while calls waited");
    assert.ok(attempts < 250, `${attempts} connection attempts for 1000 calls`);
  });
});
