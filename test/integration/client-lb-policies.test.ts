// Roster's policies inside a plain grpc-js client (src/client/lb): registerRosterPolicies(), a `roster:`
// target listing four in-process echo backends on 127.0.0.1:0, and the policy chosen by service config.
// Every test counts which backend served each call (the reply's `served_by`); none measures time.
//
// Each run first warms up until every backend has served a call, so that the counted calls start with
// all four subchannels READY (before that, the first calls meet a picker with only the first backend).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { createClient, presets, type Unary } from "../../src/client/index.ts";
import { registerRosterPolicies, rosterLbConfig, rosterServiceConfig } from "../../src/client/lb/index.ts";
import { ConfigError } from "../../src/core/errors.ts";
import { type EchoBackend, EchoClient, startEchoBackend } from "../support/echo-backend.ts";

type Counts = Map<string, number>;

/** `total` Echo calls, `concurrency` at a time; backend id → calls. Each call's metadata from `md(i)`. */
async function run(
  client: EchoClient,
  total: number,
  concurrency: number,
  md: (i: number) => grpc.Metadata = () => new grpc.Metadata(),
): Promise<Counts> {
  const counts: Counts = new Map();
  let next = 0;
  const lane = async () => {
    // Bounded: each turn takes one of the `total` calls.
    while (next < total) {
      const i = next++;
      const reply = await client.echo({ message: "m" }, { deadlineMs: 10_000, metadata: md(i) });
      counts.set(reply.served_by, (counts.get(reply.served_by) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return counts;
}

/** Calls until every backend has served one (at most 2000 calls). */
async function warmUp(client: EchoClient, backends: readonly EchoBackend[]): Promise<void> {
  const seen = new Set<string>();
  for (let i = 0; i < 2000 && seen.size < backends.length; i++) {
    const batch = await run(client, 8, 8);
    for (const id of batch.keys()) seen.add(id);
  }
  assert.equal(seen.size, backends.length, `warm-up reached only ${[...seen].join(", ")}`);
}

function client(backends: readonly EchoBackend[], serviceConfig: string): EchoClient {
  return new EchoClient(`roster:///${backends.map((b) => b.address).join(",")}`, {
    "grpc.service_config": serviceConfig,
    // A channel of its own per test: grpc-js would otherwise share subchannels between the tests' clients.
    "grpc.use_local_subchannel_pool": 1,
  });
}

describe("Roster policies in a grpc-js client", () => {
  let backends: EchoBackend[] = [];
  const clients: EchoClient[] = [];

  before(async () => {
    registerRosterPolicies();
    registerRosterPolicies(); // idempotent
    backends = await Promise.all([0, 1, 2, 3].map((i) => startEchoBackend({ id: `b${i}` })));
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(backends.map((b) => b.close()));
  });

  it("spreads 4000 calls over four backends within 5% with roster_round_robin", async () => {
    const c = client(backends, rosterServiceConfig("round_robin"));
    clients.push(c);
    await warmUp(c, backends);
    const counts = await run(c, 4000, 50);
    const values = backends.map((b) => counts.get(b.id) ?? 0);
    assert.equal(
      values.reduce((a, b) => a + b, 0),
      4000,
    );
    const ratio = Math.max(...values) / Math.min(...values);
    assert.ok(ratio <= 1.05, `max/min ${ratio.toFixed(3)}: ${values.join(" / ")}`);
  });

  it("spreads 4000 calls within 5% from one createClient client: a pool of 2 channels and the limiter, roster_round_robin", async () => {
    const proto = fileURLToPath(new URL("../support/echo.proto", import.meta.url));
    // lowLatency: a pool of at least 2 channels (each with its own connections and its own policy) and
    // at most 50 calls in flight, the other calls waiting in the limiter's queue.
    const echo = createClient<{ Echo: Unary<{ message: string }, { served_by: string }> }>({
      proto,
      service: "roster.test.Echo",
      target: `roster:///${backends.map((b) => b.address).join(",")}`,
      policy: "roster_round_robin",
      preset: presets.lowLatency({ deadlineMs: 10_000, limiter: { maxQueue: 5000, maxQueueWaitMs: 10_000 } }),
    });
    try {
      const send = async (total: number): Promise<Counts> => {
        const counts: Counts = new Map();
        await Promise.all(
          Array.from({ length: total }, async () => {
            const r = await echo.Echo({ message: "m" });
            counts.set(r.served_by, (counts.get(r.served_by) ?? 0) + 1);
          }),
        );
        return counts;
      };
      // Warm-up: until both channels have every backend READY (each channel's first calls meet a picker
      // with only the first backend). Bounded: at most 50 rounds.
      for (let i = 0; i < 50; i++) {
        const counts = await send(100);
        if (
          counts.size === backends.length &&
          Math.max(...counts.values()) - Math.min(...counts.values()) <= 2
        )
          break;
      }
      const counts = await send(4000);
      const s = echo.stats();
      assert.equal(s.pool.size, 2);
      const values = backends.map((b) => counts.get(b.id) ?? 0);
      assert.equal(
        values.reduce((a, b) => a + b, 0),
        4000,
      );
      const ratio = Math.max(...values) / Math.min(...values);
      assert.ok(ratio <= 1.05, `max/min ${ratio.toFixed(3)}: ${values.join(" / ")}`);
    } finally {
      echo.close();
    }
  });

  it("spreads sequential calls evenly with roster_least_request scanning every backend (ties in turn)", async () => {
    const c = client(backends, rosterServiceConfig("least_request", { choiceCount: 4 }));
    clients.push(c);
    await warmUp(c, backends);
    const counts = await run(c, 1000, 1);
    const values = backends.map((b) => counts.get(b.id) ?? 0);
    const ratio = Math.max(...values) / Math.min(...values);
    assert.ok(ratio <= 1.05, `max/min ${ratio.toFixed(3)}: ${values.join(" / ")}`);
  });

  it("keeps new calls off a backend whose calls pile up with roster_least_request", async () => {
    const slow = await startEchoBackend({ id: "slow-lr", delayMs: 200 });
    const set = [...backends.slice(0, 3), slow];
    try {
      const c = client(set, rosterServiceConfig("least_request"));
      clients.push(c);
      await warmUp(c, set);
      const counts = await run(c, 1200, 20);
      const share = (counts.get("slow-lr") ?? 0) / 1200;
      // Round robin would give it 25%; in flight it holds ~all its calls for 200 ms, so P2C avoids it.
      assert.ok(
        share < 0.125,
        `slow backend share ${(share * 100).toFixed(1)}% of ${JSON.stringify([...counts])}`,
      );
    } finally {
      await slow.close();
    }
  });

  it("gives a backend 20 ms slower than the others a small share with roster_peak_ewma", async () => {
    const slow = await startEchoBackend({ id: "slow-ewma", delayMs: 20 });
    const set = [...backends.slice(0, 3), slow];
    try {
      const c = client(set, rosterServiceConfig("peak_ewma"));
      clients.push(c);
      await warmUp(c, set);
      const counts = await run(c, 1000, 5);
      const share = (counts.get("slow-ewma") ?? 0) / 1000;
      assert.ok(
        share < 0.125,
        `slow backend share ${(share * 100).toFixed(1)}% of ${JSON.stringify([...counts])}`,
      );
    } finally {
      await slow.close();
    }
  });

  it("sends every call with the same x-user to one backend, and different users to several, with roster_ring_hash", async () => {
    const c = client(backends, rosterServiceConfig("ring_hash", { hashKey: { header: "x-user" } }));
    clients.push(c);
    const user = (name: string) => () => {
      const md = new grpc.Metadata();
      md.set("x-user", name);
      return md;
    };
    await run(c, 20, 4, user("warm"));
    for (const name of ["alice", "bob", "carol"]) {
      const counts = await run(c, 200, 10, user(name));
      assert.equal(counts.size, 1, `${name} went to ${JSON.stringify([...counts])}`);
    }
    const spread = await run(c, 640, 16, (i) => user(`user-${i % 64}`)());
    assert.ok(spread.size >= 3, `64 users reached only ${JSON.stringify([...spread])}`);
    for (const n of spread.values()) assert.ok(n <= 640 * 0.6, `one backend took ${n} of 640`);
  });

  it("rejects a bad policy config with the field named, and leaves grpc-js on pick_first", async () => {
    assert.throws(
      () => rosterLbConfig("peak_ewma", { decayMs: -1 }),
      (err: unknown) => err instanceof ConfigError && err.field === "roster_peak_ewma.decayMs",
    );
    assert.throws(
      () => rosterLbConfig("ring_hash", {}),
      (err: unknown) => err instanceof ConfigError && err.field === "roster_ring_hash.hashKey",
    );
    assert.throws(
      () => rosterLbConfig("least_request", { choiceCount: 1 }),
      /roster_least_request\.choiceCount/,
    );
    assert.throws(() => rosterLbConfig("fastest"), /unknown policy "fastest"/);
    assert.deepEqual(rosterLbConfig("roster_least_request", { choiceCount: 3 }), {
      roster_least_request: { choiceCount: 3 },
    });

    // In a service config, grpc-js skips the entry it cannot parse: pick_first puts every call on one backend.
    const c = client(
      backends,
      JSON.stringify({ loadBalancingConfig: [{ roster_round_robin: { bogus: 1 } }] }),
    );
    clients.push(c);
    const counts = await run(c, 100, 10);
    assert.equal(counts.size, 1, JSON.stringify([...counts]));
  });
});
