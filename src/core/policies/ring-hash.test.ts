import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { ScriptedRandom, SeededRandom } from "../../../test/support/seeded-random.ts";
import type { BalancerDeps } from "../balancer.ts";
import type { Random } from "../clock.ts";
import { staticEndpoint } from "../endpoint.ts";
import { PendingRequests } from "../load/pending-requests.ts";
import type { Candidate, Picker, PickResult } from "../picker.ts";
import { createDefaultRegistry } from "./registry.ts";
import { buildRing, entryCounts, ringIndex } from "./ring-hash.ts";

const registry = createDefaultRegistry();

/** Backends keyed by address, "10.0.0.<i>:50051", as static discovery keys them. */
function backends(n: number, weight: (i: number) => number = () => 1, from = 0): Candidate[] {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j;
    const endpoint = staticEndpoint({ kind: "tcp", host: `10.0.0.${i}`, port: 50051 }, weight(i));
    return { key: endpoint.key, endpoint, load: new PendingRequests() };
  });
}

function deps(random: Random = new SeededRandom(1)): BalancerDeps {
  return { clock: new FakeClock(), random };
}

function picker(candidates: Candidate[], config: Record<string, unknown> = {}, random?: Random): Picker {
  return registry
    .resolve("ring_hash", { hashKey: { header: "x-user" }, ...config })
    .create(deps(random))
    .update(candidates);
}

function keyOf(result: PickResult): string {
  assert.equal(result.kind, "pick");
  return result.kind === "pick" ? result.candidate.key : "";
}

function pickFor(p: Picker, user: string | undefined, exclude?: string[]): string {
  return keyOf(
    p.pick({
      path: "/pkg.Svc/M",
      header: (name) => (name === "x-user" ? user : undefined),
      ...(exclude ? { exclude: new Set(exclude) } : {}),
    }),
  );
}

function shares(p: Picker, keys: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < keys; i++) {
    const k = pickFor(p, `user-${i}`);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}

describe("ring_hash config", () => {
  it("defaults the ring sizes as gRPC does and requires a hash key", () => {
    assert.equal(registry.resolve("ring_hash", { hashKey: { authority: true } }).name, "ring_hash");
    const table: Array<[unknown, RegExp]> = [
      [{}, /policy\.hashKey: is required/],
      [{ hashKey: {} }, /policy\.hashKey: is required/],
      [{ hashKey: { header: "x-a", authority: true } }, /policy\.hashKey: set either header or authority/],
      [{ hashKey: { authority: false } }, /policy\.hashKey\.authority: must be true/],
      [{ hashKey: { header: 5 } }, /policy\.hashKey\.header: must be a header name/],
      [{ hashKey: { header: "bad name" } }, /policy\.hashKey\.header: "bad name" is not a valid header name/],
      [{ hashKey: { header: ":authority" } }, /policy\.hashKey\.header: .*use \{ authority: true \}/],
      [{ hashKey: { cookie: "a" } }, /policy\.hashKey\.cookie: unknown setting/],
      [{ hashKey: { header: "x" }, minRingSize: 0 }, /policy\.minRingSize: must be at least 1/],
      [{ hashKey: { header: "x" }, maxRingSize: 8_388_609 }, /policy\.maxRingSize: must be at most 8388608/],
      [
        { hashKey: { header: "x" }, minRingSize: 5000 },
        /policy\.minRingSize: must not exceed maxRingSize \(4096\)/,
      ],
      [{ hashKey: { header: "x" }, ringSize: 5 }, /policy\.ringSize: unknown setting/],
    ];
    for (const [raw, message] of table) {
      assert.throws(() => registry.resolve("ring_hash", raw), message, JSON.stringify(raw));
    }
  });
});

describe("ring_hash ring", () => {
  it("gives each backend a power-of-two number of entries per unit of weight, filling up to 4 × minRingSize", () => {
    const count = (c: Candidate[], min: number, max: number) => {
      const ring = buildRing(c, min, max);
      const per = c.map((_, i) => ring.owner.filter((o) => o === i).length);
      return { size: ring.owner.length, per };
    };
    assert.deepEqual(count(backends(4), 1024, 4096), { size: 4096, per: [1024, 1024, 1024, 1024] });
    assert.deepEqual(count(backends(5), 1024, 4096), { size: 2560, per: [512, 512, 512, 512, 512] });
    assert.deepEqual(
      count(
        backends(4, (i) => i + 1),
        1024,
        4096,
      ),
      { size: 2560, per: [256, 512, 768, 1024] },
    );
    assert.deepEqual(count(backends(3), 256, 4096), { size: 768, per: [256, 256, 256] }, "bound 4 × 256");
    assert.deepEqual(count(backends(3), 1024, 1500), { size: 768, per: [256, 256, 256] }, "maxRingSize wins");
    // 1 : 9999 — every backend keeps at least one entry.
    assert.deepEqual(
      count(
        backends(2, (i) => (i === 0 ? 1 : 9999)),
        1024,
        4096,
      ).per,
      [1, 2500],
    );
    assert.deepEqual(entryCounts([1, 1, 1], 1, 1), [1, 1, 1], "more backends than the bound: one each");
  });

  it("keeps the ring sorted and finds the first entry at or after a hash, wrapping at the end", () => {
    const ring = buildRing(backends(3), 16, 16);
    for (let i = 1; i < ring.hi.length; i++) {
      const before = ring.hi[i - 1]! * 2 ** 32 + ring.lo[i - 1]!;
      assert.ok(before <= ring.hi[i]! * 2 ** 32 + ring.lo[i]!);
    }
    assert.equal(ringIndex(ring, 0, 0), 0);
    assert.equal(ringIndex(ring, ring.hi[5]!, ring.lo[5]!), 5, "an exact hit");
    assert.equal(ringIndex(ring, ring.hi[5]!, ring.lo[5]! + 1), 6, "just past an entry");
    assert.equal(ringIndex(ring, 0xffffffff, 0xffffffff), 0, "past the last entry wraps");
  });
});

describe("ring_hash picks", () => {
  it("sends the same key to the same backend from every picker, whatever the candidate order", () => {
    const c = backends(5);
    const a = picker(c, {}, new SeededRandom(1));
    const b = picker([...c].reverse(), {}, new SeededRandom(99));
    const balancer = registry.resolve("ring_hash", { hashKey: { header: "x-user" } }).create(deps());
    balancer.update(c);
    const again = balancer.update(backends(5).reverse()); // same keys and weights, new objects
    for (let i = 0; i < 1000; i++) {
      const user = `user-${i}`;
      const want = pickFor(a, user);
      assert.equal(pickFor(b, user), want, user);
      assert.equal(pickFor(again, user), want, user);
    }
  });

  it("moves only about 1/(N+1) of keys, all to the new backend, when one is added", () => {
    const n = 5;
    const before = picker(backends(n));
    const after = picker(backends(n + 1));
    let moved = 0;
    for (let i = 0; i < 10_000; i++) {
      const was = pickFor(before, `user-${i}`);
      const is = pickFor(after, `user-${i}`);
      if (was !== is) {
        moved++;
        assert.equal(is, "10.0.0.5:50051", "a key that moves goes to the new backend");
      }
    }
    assert.ok(moved / 10_000 <= 1 / (n + 1) + 0.05, `moved ${moved} of 10000`);
    assert.ok(moved > 0);
  });

  it("moves only the removed backend's keys when one is removed", () => {
    const all = backends(6);
    const before = picker(all);
    const after = picker(all.filter((c) => c.key !== "10.0.0.2:50051"));
    let orphans = 0;
    for (let i = 0; i < 10_000; i++) {
      const was = pickFor(before, `user-${i}`);
      const is = pickFor(after, `user-${i}`);
      if (was === "10.0.0.2:50051") orphans++;
      else assert.equal(is, was, `user-${i} stays on ${was}`);
    }
    assert.ok(orphans > 0);
  });

  it("spreads 100k keys within ±10% of fair over 2 to 8 backends with the default ring sizes", () => {
    for (const n of [2, 3, 4, 5, 6, 7, 8]) {
      const counts = shares(picker(backends(n)), 100_000);
      assert.equal(counts.size, n);
      for (const [k, got] of counts) {
        assert.ok(Math.abs(got / (100_000 / n) - 1) <= 0.1, `${n} backends: ${k} got ${got}`);
      }
    }
  });

  it("spreads 100k keys within ±10% of fair over 10 backends with a larger ring", () => {
    const counts = shares(picker(backends(10), { minRingSize: 4096, maxRingSize: 16_384 }), 100_000);
    for (const [k, got] of counts) assert.ok(Math.abs(got / 10_000 - 1) <= 0.1, `${k} got ${got}`);
  });

  it("moves only the reweighted backend's keys when one weight changes", () => {
    const before = picker(backends(5, (i) => (i === 1 ? 2 : 1)));
    const after = picker(backends(5));
    for (let i = 0; i < 10_000; i++) {
      const was = pickFor(before, `user-${i}`);
      const is = pickFor(after, `user-${i}`);
      if (was !== "10.0.0.1:50051") assert.equal(is, was, `user-${i}`);
    }
  });

  it("respects weights: 100k keys split 1:2:3:4 within ±10% of each share", () => {
    const c = backends(4, (i) => i + 1);
    const counts = shares(picker(c, { minRingSize: 4096, maxRingSize: 16_384 }), 100_000);
    c.forEach((b, i) => {
      const want = ((i + 1) / 10) * 100_000;
      const got = counts.get(b.key) ?? 0;
      assert.ok(Math.abs(got / want - 1) <= 0.1, `${b.key}: ${got} vs ${want}`);
    });
  });

  it("steps over excluded backends to the next one on the ring, and picks anyway when all are excluded", () => {
    const c = backends(4);
    const p = picker(c);
    for (let i = 0; i < 200; i++) {
      const user = `user-${i}`;
      const first = pickFor(p, user);
      const second = pickFor(p, user, [first]);
      assert.notEqual(second, first);
      assert.equal(pickFor(p, user, [first]), second, "the fallback is stable too");
      const third = pickFor(p, user, [first, second]);
      assert.ok(third !== first && third !== second);
      assert.equal(
        pickFor(
          p,
          user,
          c.map((x) => x.key),
        ),
        first,
      );
    }
  });

  it("picks a random ring entry when the request has no hash key", () => {
    const c = backends(4);
    const ring = buildRing(c, 1024, 4096);
    // ScriptedRandom 0.5 → entry 2048 of 4096.
    const p = picker(c, {}, new ScriptedRandom([0.5]));
    assert.equal(pickFor(p, undefined), c[ring.owner[2048]!]!.key);
    const spread = picker(c, {}, new SeededRandom(5));
    const counts = new Map<string, number>();
    for (let i = 0; i < 40_000; i++) {
      const k = pickFor(spread, undefined);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const [k, n] of counts) assert.ok(Math.abs(n / 40_000 - 0.25) < 0.015, `${k}: ${n}`);
  });

  it("hashes :authority with { authority: true } and a header case-insensitively by name", () => {
    const c = backends(5);
    const byAuthority = registry
      .resolve("ring_hash", { hashKey: { authority: true } })
      .create(deps())
      .update(c);
    const byHeader = registry
      .resolve("ring_hash", { hashKey: { header: "X-Tenant" } })
      .create(deps())
      .update(c);
    for (let i = 0; i < 100; i++) {
      const value = `svc-${i}.example.com`;
      const a = keyOf(
        byAuthority.pick({ path: "/", header: (h) => (h === ":authority" ? value : undefined) }),
      );
      const b = keyOf(byHeader.pick({ path: "/", header: (h) => (h === "x-tenant" ? value : undefined) }));
      assert.equal(a, b, value);
    }
  });
});
