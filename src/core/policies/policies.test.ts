import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { ScriptedRandom, SeededRandom } from "../../../test/support/seeded-random.ts";
import type { BalancerDeps } from "../balancer.ts";
import type { Random } from "../clock.ts";
import { staticEndpoint } from "../endpoint.ts";
import { ConfigError } from "../errors.ts";
import { PendingRequests } from "../load/pending-requests.ts";
import type { Candidate, PickContext } from "../picker.ts";
import { createDefaultRegistry } from "./registry.ts";

function candidates(n: number): Candidate[] {
  return Array.from({ length: n }, (_, i) => {
    const endpoint = staticEndpoint({ kind: "tcp", host: "10.0.0.1", port: 1000 + i });
    return { key: `b${i}`, endpoint: { ...endpoint, key: `b${i}` }, load: new PendingRequests() };
  });
}

const ctx = (exclude?: string[]): PickContext => ({
  path: "/pkg.Svc/M",
  header: () => undefined,
  ...(exclude ? { exclude: new Set(exclude) } : {}),
});

function deps(random: Random): BalancerDeps {
  return { clock: new FakeClock(), random };
}

const registry = createDefaultRegistry();

function keyOf(result: ReturnType<import("../picker.ts").Picker["pick"]>): string {
  assert.equal(result.kind, "pick");
  return result.kind === "pick" ? result.candidate.key : "";
}

describe("round_robin", () => {
  it("starts at a random position and then visits every backend in turn", () => {
    // 0.5 * 4 = index 2
    const b = registry.resolve("round_robin", {}).create(deps(new ScriptedRandom([0.5])));
    const picker = b.update(candidates(4));
    const seq = Array.from({ length: 6 }, () => keyOf(picker.pick(ctx())));
    assert.deepEqual(seq, ["b2", "b3", "b0", "b1", "b2", "b3"]);
  });

  it("keeps its position when the candidate set is updated", () => {
    const b = registry.resolve("round_robin", {}).create(deps(new ScriptedRandom([0])));
    const c = candidates(3);
    const p1 = b.update(c);
    assert.deepEqual([keyOf(p1.pick(ctx())), keyOf(p1.pick(ctx()))], ["b0", "b1"]);
    const p2 = b.update(c);
    assert.equal(keyOf(p2.pick(ctx())), "b2");
  });

  it("steps over excluded backends, and picks anyway when all are excluded", () => {
    const b = registry.resolve("round_robin", {}).create(deps(new ScriptedRandom([0])));
    const p = b.update(candidates(3));
    assert.equal(keyOf(p.pick(ctx(["b0"]))), "b1");
    assert.equal(keyOf(p.pick(ctx(["b2", "b0"]))), "b1");
    assert.equal(keyOf(p.pick(ctx(["b0", "b1", "b2"]))), "b2");
  });

  it("rejects settings it does not know, naming the field", () => {
    assert.throws(
      () => registry.resolve("round_robin", { choiceCount: 2 }),
      /policy\.choiceCount: unknown setting/,
    );
  });
});

describe("pick_first", () => {
  it("sends every call to the first ready backend", () => {
    const p = registry
      .resolve("pick_first", {})
      .create(deps(new SeededRandom(1)))
      .update(candidates(3));
    assert.deepEqual(
      [0, 1, 2].map(() => keyOf(p.pick(ctx()))),
      ["b0", "b0", "b0"],
    );
  });

  it("moves to the next when the first is excluded or gone", () => {
    const b = registry.resolve("pick_first", {}).create(deps(new SeededRandom(1)));
    const c = candidates(3);
    assert.equal(keyOf(b.update(c).pick(ctx(["b0"]))), "b1");
    assert.equal(keyOf(b.update(c.slice(1)).pick(ctx())), "b1");
  });

  it("with shuffleAddressList keeps the same choice across updates", () => {
    const b = registry.resolve("pick_first", { shuffleAddressList: true }).create(deps(new SeededRandom(7)));
    const c = candidates(5);
    const first = keyOf(b.update(c).pick(ctx()));
    assert.equal(keyOf(b.update([...c].reverse()).pick(ctx())), first);
  });
});

describe("least_request", () => {
  it("of two sampled backends takes the one with fewer calls in flight", () => {
    const c = candidates(4);
    c[1]!.load.begin(0);
    c[1]!.load.begin(0);
    c[3]!.load.begin(0);
    // Samples index floor(r * 4): 0.3→1, 0.8→3 ⇒ b3 (1 in flight) beats b1 (2).
    const p = registry
      .resolve("least_request", {})
      .create(deps(new ScriptedRandom([0.3, 0.8])))
      .update(c);
    assert.equal(keyOf(p.pick(ctx())), "b3");
  });

  it("gives a tie to the first sample", () => {
    const p = registry
      .resolve("least_request", {})
      .create(deps(new ScriptedRandom([0.9, 0.1])))
      .update(candidates(4));
    assert.equal(keyOf(p.pick(ctx())), "b3");
  });

  it("validates choiceCount as A48 does", () => {
    assert.equal(registry.resolve("least_request", { choiceCount: 3 }).name, "least_request");
    assert.throws(
      () => registry.resolve("least_request", { choiceCount: 1 }),
      /policy\.choiceCount: must be at least 2/,
    );
    assert.throws(() => registry.resolve("least_request", { choiceCount: 11 }), /at most 10/);
    assert.throws(() => registry.resolve("least_request", { choiceCount: 2.5 }), /whole number/);
    assert.throws(() => registry.resolve("least_request", { choiceCount: "2" }), /must be a number/);
  });

  it("never picks an excluded backend while another remains", () => {
    const p = registry
      .resolve("least_request", {})
      .create(deps(new SeededRandom(3)))
      .update(candidates(3));
    for (let i = 0; i < 200; i++) assert.notEqual(keyOf(p.pick(ctx(["b0", "b2"]))), "b0");
  });

  it("keeps in-flight calls more even than a random choice does (seeded stress)", () => {
    // Same seeded stream of starts and random completions, once picked by P2C and once uniformly at
    // random; P2C's mean spread (max − min in flight) must be clearly below random's (2.6 vs 4.4 here).
    function meanSpread(pickIndex: (c: Candidate[]) => Candidate): number {
      const c = candidates(4);
      const open: Array<() => void> = [];
      const completions = new SeededRandom(99);
      let total = 0;
      for (let i = 0; i < 5000; i++) {
        const done = pickIndex(c).load.begin(0);
        open.push(() => done(0, "success"));
        if (open.length > 20) open.splice(Math.floor(completions.next() * open.length), 1)[0]!();
        const loads = c.map((x) => x.load.inFlight);
        total += Math.max(...loads) - Math.min(...loads);
      }
      return total / 5000;
    }
    const uniform = new SeededRandom(42);
    const randomSpread = meanSpread((c) => c[Math.floor(uniform.next() * c.length)]!);
    const balancer = registry.resolve("least_request", {}).create(deps(new SeededRandom(7)));
    const p2cSpread = meanSpread((c) => {
      const r = balancer.update(c).pick(ctx());
      if (r.kind !== "pick") assert.fail("expected a pick");
      return r.candidate;
    });
    assert.ok(
      p2cSpread < randomSpread * 0.7,
      `P2C spread ${p2cSpread.toFixed(2)} vs random ${randomSpread.toFixed(2)}`,
    );
  });

  it("spreads calls evenly when calls complete at once (distribution test)", () => {
    const c = candidates(4);
    const p = registry
      .resolve("least_request", {})
      .create(deps(new SeededRandom(5)))
      .update(c);
    const counts = new Map<string, number>();
    for (let i = 0; i < 40000; i++) {
      const key = keyOf(p.pick(ctx()));
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    for (const [key, n] of counts) assert.ok(Math.abs(n / 40000 - 0.25) < 0.01, `${key} got ${n}`);
  });
});

describe("registry", () => {
  it("names the known policies when asked for an unknown one", () => {
    assert.throws(
      () => registry.resolve("fastest", {}),
      (e: unknown) =>
        e instanceof ConfigError &&
        /unknown policy "fastest"; known policies: least_request, peak_ewma, pick_first, resume, ring_hash, round_robin/.test(
          e.message,
        ),
    );
  });
});
