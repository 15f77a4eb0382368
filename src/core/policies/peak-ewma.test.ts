import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { ScriptedRandom, SeededRandom } from "../../../test/support/seeded-random.ts";
import type { BalancerDeps } from "../balancer.ts";
import type { Random } from "../clock.ts";
import { staticEndpoint } from "../endpoint.ts";
import type { CallDone, LoadTracker } from "../load/load-tracker.ts";
import { PeakEwma } from "../load/peak-ewma.ts";
import { PendingRequests } from "../load/pending-requests.ts";
import type { Candidate, PickContext, PickResult } from "../picker.ts";
import { createDefaultRegistry } from "./registry.ts";

const registry = createDefaultRegistry();

function candidate(i: number, load: LoadTracker): Candidate {
  const endpoint = staticEndpoint({ kind: "tcp", host: "10.0.0.1", port: 1000 + i });
  return { key: `b${i}`, endpoint: { ...endpoint, key: `b${i}` }, load };
}

const ctx = (exclude?: string[]): PickContext => ({
  path: "/pkg.Svc/M",
  header: () => undefined,
  ...(exclude ? { exclude: new Set(exclude) } : {}),
});

function keyOf(result: PickResult): string {
  assert.equal(result.kind, "pick");
  return result.kind === "pick" ? result.candidate.key : "";
}

/** Trackers whose estimate is `rtt` ms, measured at time 0 with one call. */
function measured(rtts: number[]): Candidate[] {
  return rtts.map((rtt, i) => {
    const load = new PeakEwma({ decayMs: 10_000, defaultRttMs: 30 }, 0);
    load.begin(0)(rtt, "success");
    return candidate(i, load);
  });
}

function deps(random: Random, clock = new FakeClock()): BalancerDeps {
  return { clock, random };
}

describe("peak_ewma", () => {
  it("fills defaults from tower/linkerd and validates each field by name", () => {
    const spec = registry.resolve("peak_ewma", {});
    const tracker = spec.createLoadTracker(deps(new SeededRandom(1), new FakeClock(500)));
    assert.ok(tracker instanceof PeakEwma);
    assert.equal((tracker as PeakEwma).rttEstimate(500), 30);
    assert.equal((tracker as PeakEwma).rttEstimate(10_500), 30 * Math.exp(-1), "10 s decay, from creation");
    const custom = registry.resolve("peak_ewma", { decayMs: 1000, defaultRttMs: 5, choiceCount: 3 });
    const t2 = custom.createLoadTracker(deps(new SeededRandom(1))) as PeakEwma;
    assert.equal(t2.rttEstimate(1000), 5 * Math.exp(-1));

    const table: Array<[unknown, RegExp]> = [
      [{ decayMs: 0 }, /: policy\.decayMs: must be greater than 0/],
      [{ decayMs: -5 }, /: policy\.decayMs: must be at least 0/],
      [{ defaultRttMs: 0 }, /: policy\.defaultRttMs: must be greater than 0/],
      [{ defaultRttMs: "30ms" }, /: policy\.defaultRttMs: must be a number/],
      [{ choiceCount: 1 }, /: policy\.choiceCount: must be at least 2/],
      [{ choiceCount: 11 }, /: policy\.choiceCount: must be at most 10/],
      [{ decay: 10 }, /: policy\.decay: unknown setting/],
    ];
    for (const [raw, message] of table) {
      assert.throws(() => registry.resolve("peak_ewma", raw), message, JSON.stringify(raw));
    }
  });

  it("gives other policies calls-in-flight trackers", () => {
    for (const name of ["round_robin", "least_request", "pick_first"]) {
      assert.ok(
        registry.resolve(name, {}).createLoadTracker(deps(new SeededRandom(1))) instanceof PendingRequests,
      );
    }
  });

  it("of two distinct sampled backends takes the one with the lower RTT × (in flight + 1)", () => {
    // Draws: floor(0.3·4) = 1; then floor(0.8·3) = 2, mapped past the chosen 1 → 3. Compares b1 and b3.
    const c = measured([10, 50, 10, 20]);
    const p = registry
      .resolve("peak_ewma", {})
      .create(deps(new ScriptedRandom([0.3, 0.8])))
      .update(c);
    assert.equal(keyOf(p.pick(ctx())), "b3", "20 ms beats 50 ms");
    // Now b3 has 2 calls in flight: 20 × 3 = 60 > 50 × 1.
    c[3]!.load.begin(0);
    c[3]!.load.begin(0);
    assert.equal(keyOf(p.pick(ctx())), "b1");
  });

  it("never compares a backend with itself, so the slower of two is never picked while idle", () => {
    const p = registry
      .resolve("peak_ewma", {})
      .create(deps(new SeededRandom(3)))
      .update(measured([10, 100]));
    for (let i = 0; i < 1000; i++) assert.equal(keyOf(p.pick(ctx())), "b0");
  });

  it("gives ties to a uniformly drawn first sample", () => {
    const p = registry
      .resolve("peak_ewma", { choiceCount: 3 })
      .create(deps(new SeededRandom(8)))
      .update(measured([10, 10, 10, 10]));
    const counts = new Map<string, number>();
    for (let i = 0; i < 40_000; i++) {
      const k = keyOf(p.pick(ctx()));
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const [k, n] of counts) assert.ok(Math.abs(n / 40_000 - 0.25) < 0.01, `${k}: ${n}`);
  });

  it("never picks an excluded backend while another remains", () => {
    const p = registry
      .resolve("peak_ewma", {})
      .create(deps(new SeededRandom(4)))
      .update(measured([1, 50, 50]));
    for (let i = 0; i < 200; i++) assert.notEqual(keyOf(p.pick(ctx(["b0"]))), "b0");
    assert.equal(keyOf(p.pick(ctx(["b0", "b1", "b2"]))), "b0", "all excluded: pick anyway");
  });
});

interface SimResult {
  /** Share of calls sent to each backend. */
  shares: number[];
  p50: number;
  p99: number;
}

/**
 * A discrete-event simulation on the fake clock: Poisson arrivals (1 per ms on average, a fixed seeded
 * sequence), four backends that each serve one call at a time in FIFO order with a fixed service time
 * — three take 1 ms, one takes 10 ms — and completions reported to the backend's LoadTracker when the
 * call finishes. Capacity is 3 × 1000 + 100 calls/s; the offered 1000/s is a third of it, but a
 * quarter of it (250/s) is more than the slow backend can serve.
 */
function simulate(policy: string, calls = 20_000): SimResult {
  const clock = new FakeClock();
  const d = deps(new SeededRandom(77), clock);
  const spec = registry.resolve(policy, {});
  const serviceMs = [1, 1, 1, 10];
  const backends = serviceMs.map((service, i) => ({
    candidate: candidate(i, spec.createLoadTracker(d)),
    service,
    freeAt: 0,
    calls: 0,
    // FIFO: completions of one backend come in order.
    pending: [] as Array<{ finish: number; arrival: number; done: CallDone }>,
  }));
  const picker = spec.create(d).update(backends.map((b) => b.candidate));
  const arrivals = new SeededRandom(2024);
  const latencies: number[] = [];
  let nextArrival = 0;
  let sent = 0;
  const earliest = () => {
    let best: (typeof backends)[number] | undefined;
    for (const b of backends) {
      const head = b.pending[0];
      if (head !== undefined && (best === undefined || head.finish < best.pending[0]!.finish)) best = b;
    }
    return best;
  };
  while (sent < calls || earliest() !== undefined) {
    const b = earliest();
    if (b !== undefined && (sent >= calls || b.pending[0]!.finish <= nextArrival)) {
      const call = b.pending.shift()!;
      clock.advance(call.finish - clock.now());
      call.done(clock.now(), "success");
      latencies.push(call.finish - call.arrival);
      continue;
    }
    clock.advance(nextArrival - clock.now());
    const now = clock.now();
    const pick = picker.pick(ctx());
    assert.equal(pick.kind, "pick");
    const chosen = backends.find((x) => pick.kind === "pick" && x.candidate === pick.candidate)!;
    const start = Math.max(now, chosen.freeAt);
    chosen.freeAt = start + chosen.service;
    chosen.calls++;
    chosen.pending.push({ finish: chosen.freeAt, arrival: now, done: chosen.candidate.load.begin(now) });
    sent++;
    nextArrival = now - Math.log(1 - arrivals.next()); // exponential, mean 1 ms
  }
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  return { shares: backends.map((b) => b.calls / calls), p50: q(0.5), p99: q(0.99) };
}

describe("peak_ewma against a backend ten times slower (simulation)", () => {
  it("sends far fewer calls to the slow backend than round_robin and least_request, and has a lower p99", (t) => {
    const rr = simulate("round_robin");
    const lr = simulate("least_request");
    const pe = simulate("peak_ewma");
    const show = (r: SimResult) =>
      `slow share ${(r.shares[3]! * 100).toFixed(2)}%, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`;
    const report = `round_robin: ${show(rr)}; least_request: ${show(lr)}; peak_ewma: ${show(pe)}`;
    t.diagnostic(report);
    assert.ok(Math.abs(rr.shares[3]! - 0.25) < 0.001, report);
    assert.ok(pe.shares[3]! < 0.01, report);
    assert.ok(pe.shares[3]! < lr.shares[3]! / 3, report);
    assert.ok(pe.p99 < rr.p99 / 10, report);
    assert.ok(pe.p99 < lr.p99, report);
    assert.ok(pe.p99 < 10, `no call waits behind the slow backend at p99; ${report}`);
  });
});
