import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type FakeBackendLink, FakeConnector } from "../../test/support/fake-backend-link.ts";
import { FakeHealthChecker } from "../../test/support/fake-health-checker.ts";
import { FakeTimer } from "../../test/support/fake-timer.ts";
import { SeededRandom } from "../../test/support/seeded-random.ts";
import type { OutlierDetectionConfig } from "../core/health/outlier-detection.ts";
import type { PickResult } from "../core/picker.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { Status } from "../core/status.ts";
import { StaticDiscovery } from "../discovery/static.ts";
import { systemClock, systemRandom } from "../platform/system.ts";
import { Channel, type ChannelOptions, defaultReadiness } from "./channel.ts";

function channel(policy: string): Channel {
  return new Channel({
    name: "default",
    discovery: new StaticDiscovery([]),
    target: "static",
    policy: createDefaultRegistry().resolve(policy, {}),
    deps: { clock: systemClock, random: systemRandom },
    createConnection: new FakeConnector().create,
  });
}

it("changes resume's settings live, and says when another policy needs a restart", () => {
  const c = channel("resume");
  assert.equal(c.reconfigurePolicy("resume", { variance: 2, backlogHistory: 5 }), true);
  assert.throws(() => c.reconfigurePolicy("resume", { variance: -1 }), /policy\.variance/);
  assert.equal(c.reconfigurePolicy("resume", { minShare: 0.5, shareHistory: 10, moveClassShare: 0.5 }), true);
  assert.throws(() => c.reconfigurePolicy("resume", { minShare: 2 }), /policy\.minShare/);
  assert.equal(c.reconfigurePolicy("least_request", {}), false);
  assert.equal(channel("round_robin").reconfigurePolicy("round_robin", {}), false);
});

// --- readiness, on a fake clock and fake links ------------------------------------------------------

const A = "10.0.0.1:50051";
const B = "10.0.0.2:50051";
const WAKE = defaultReadiness.wakeDelayMs;

interface Rig {
  readonly channel: Channel;
  readonly timer: FakeTimer;
  readonly links: FakeConnector;
  link(address: string): FakeBackendLink;
  pick(): PickResult;
}

/** A started channel over `addresses` (static discovery), once discovery has answered. */
async function rig(addresses: string[], extra: Partial<ChannelOptions> = {}): Promise<Rig> {
  const timer = new FakeTimer();
  const links = new FakeConnector();
  const endpoints = addresses.map((a) => {
    const [host, port] = a.split(":");
    return {
      key: a,
      address: { kind: "tcp" as const, host: host!, port: Number(port) },
      weight: 1,
      labels: {},
    };
  });
  const c = new Channel({
    name: "default",
    discovery: new StaticDiscovery(endpoints),
    target: "static",
    policy: createDefaultRegistry().resolve("round_robin", {}),
    deps: { clock: timer.clock, random: new SeededRandom(7) },
    createConnection: links.create,
    timer,
    ...extra,
  });
  c.start();
  // Static discovery answers on the next turn of the event loop (an async iterator).
  for (let i = 0; i < 10 && links.links.size < addresses.length; i++) await new Promise(setImmediate);
  assert.equal(links.links.size, addresses.length, "every backend got a link");
  return {
    channel: c,
    timer,
    links,
    link: (a) => links.get(a),
    pick: () => c.pick({ path: "/svc/M", header: () => undefined }),
  };
}

/** A queued call: resolves with the first pick that is not `queue`, as frame-forward.ts re-picks. */
function queuedCall(r: Rig): { result: () => PickResult | undefined; cancel: () => void } {
  let result: PickResult | undefined;
  let cancel = () => {};
  const attempt = () => {
    const p = r.pick();
    if (p.kind === "queue") cancel = r.channel.onPickerChange(attempt);
    else result = p;
  };
  attempt();
  return { result: () => result, cancel: () => cancel() };
}

function pickedKey(p: PickResult | undefined): string | undefined {
  return p?.kind === "pick" ? p.candidate.key : undefined;
}

describe("channel readiness", () => {
  it("queues calls at first start and releases them when the first backend is ready", async () => {
    const r = await rig([A, B]);
    assert.equal(r.link(A).state.kind, "connecting");
    const calls = Array.from({ length: 3 }, () => queuedCall(r));
    assert.ok(
      calls.every((c) => c.result() === undefined),
      "a call got an answer before any backend was ready",
    );
    r.link(B).ready();
    // Paced: the newest at once, the other two once B has read it (its round trip).
    assert.deepEqual(
      calls.map((c) => pickedKey(c.result())),
      [undefined, undefined, B],
    );
    r.link(B).ackRoundTrips();
    assert.deepEqual(
      calls.map((c) => pickedKey(c.result())),
      [B, B, B],
    );
    r.channel.close();
  });

  it("queues, not fails, when every backend failed and sleeps in backoff, and a pick wakes each once", async () => {
    const r = await rig([A, B]);
    r.link(A).fail("connect ECONNREFUSED 10.0.0.1:50051");
    r.link(B).fail("connect ECONNREFUSED 10.0.0.2:50051");
    r.timer.advance(5000); // long asleep: the backends' own backoff timers are theirs, not the channel's
    assert.equal(r.link(A).wakeUps, 0, "woken with no call waiting");

    const call = queuedCall(r);
    assert.equal(call.result(), undefined);
    assert.equal(r.link(A).wakeUps, 1);
    assert.equal(r.link(B).wakeUps, 1);
    assert.equal(r.link(A).state.kind, "connecting");

    r.link(A).ready();
    assert.equal(pickedKey(call.result()), A);
    assert.equal(r.link(B).wakeUps, 1);
    r.channel.close();
  });

  it("wakes a backend once for 1000 picks during one backoff step, after the wake delay", async () => {
    const r = await rig([A]);
    r.link(A).fail();
    const calls = [];
    for (let i = 0; i < 1000; i++) {
      calls.push(queuedCall(r));
      if (i % 100 === 99) r.timer.advance(1); // spread over 10 ms, inside the wake delay
    }
    assert.equal(r.link(A).wakeUps, 0, "woken before the wake delay had passed");
    r.timer.advance(WAKE);
    assert.equal(r.link(A).wakeUps, 1);
    assert.equal(r.link(A).connectNowCalls, 1, "connectNow was called more than once");
    // More calls while the woken attempt runs: nothing more.
    for (let i = 0; i < 1000; i++) calls.push(queuedCall(r));
    assert.equal(r.link(A).connectNowCalls, 1);
    r.link(A).ready();
    // Paced: the newest at once, then twice as many per round trip (1, 2, 4… 1024: 2000 calls after 10).
    assert.equal(calls.filter((c) => c.result() !== undefined).length, 1);
    assert.equal(pickedKey(calls.at(-1)!.result()), A, "the newest call was not first");
    let roundTrips = 0;
    for (; roundTrips < 20 && r.link(A).roundTrips.length > 0; roundTrips++) r.link(A).ackRoundTrips();
    assert.equal(roundTrips, 10);
    assert.ok(
      calls.every((c) => pickedKey(c.result()) === A),
      "a queued call was not released",
    );
    r.channel.close();
  });

  it("paces the release by round trips: a batch waits for the backend to read the last one, or the step time", async () => {
    const r = await rig([A], { releaseStepMs: 100 });
    const calls = Array.from({ length: 10 }, () => queuedCall(r));
    const released = () => calls.filter((c) => c.result() !== undefined).length;
    r.link(A).ready();
    assert.equal(released(), 1, "not only the newest call went at once");
    assert.equal(r.link(A).roundTripCalls, 1, "no round trip was asked after the first batch");
    // A new call meanwhile picks at once: it does not queue behind the paced ones.
    assert.equal(pickedKey(r.pick()), A);
    r.link(A).ackRoundTrips();
    assert.equal(released(), 3);
    assert.ok(
      calls.slice(-3).every((c) => pickedKey(c.result()) === A),
      "not the newest first",
    );
    // No answer: the next batch goes after releaseStepMs anyway.
    r.timer.advance(99);
    assert.equal(released(), 3);
    r.timer.advance(1);
    assert.equal(released(), 7);
    // A late ack of a round trip already given up on releases nothing more.
    const stale = r.link(A).roundTrips.splice(0, 1);
    r.link(A).ackRoundTrips();
    assert.equal(released(), 10);
    for (const fn of stale) fn();
    assert.equal(released(), 10);
    assert.equal(r.timer.pending, 0, "a release timer outlived the queue");
    r.channel.close();
  });

  it("skips calls that ended while they waited: each batch is of calls still waiting, newest first", async () => {
    const r = await rig([A]);
    const calls = Array.from({ length: 6 }, () => queuedCall(r));
    // The newest and two of the oldest end (deadline, client gone) before A is ready.
    for (const i of [5, 0, 1]) calls[i]!.cancel();
    r.link(A).ready();
    assert.deepEqual(
      calls.map((c) => pickedKey(c.result())),
      [undefined, undefined, undefined, undefined, A, undefined],
    );
    r.link(A).ackRoundTrips();
    assert.deepEqual(
      calls.map((c) => pickedKey(c.result())),
      [undefined, undefined, A, A, A, undefined],
    );
    assert.equal(r.link(A).roundTrips.length, 0, "a round trip was asked with no call left waiting");
    assert.equal(r.timer.pending, 0);
    r.channel.close();
  });

  it("asks every ready backend for the round trip, and waits for all of them", async () => {
    const r = await rig([A, B]);
    const calls = Array.from({ length: 4 }, () => queuedCall(r));
    const released = () => calls.filter((c) => c.result() !== undefined).length;
    r.link(A).ready();
    assert.equal(released(), 1);
    // B becomes ready during the paced release: it goes on (no extra batch for the picker change).
    r.link(B).ready();
    assert.equal(released(), 1);
    r.link(A).ackRoundTrips();
    assert.equal(released(), 3);
    assert.equal(r.link(A).roundTripCalls, 2);
    assert.equal(r.link(B).roundTripCalls, 1);
    r.link(A).ackRoundTrips();
    assert.equal(released(), 3, "released before B had answered");
    r.link(B).ackRoundTrips();
    assert.equal(released(), 4);
    r.channel.close();
  });

  it("stops a paced release when no backend is ready, starts over with one call, and fails the rest at once on close", async () => {
    const r = await rig([A]);
    const calls = Array.from({ length: 8 }, () => queuedCall(r));
    const released = () => calls.filter((c) => c.result() !== undefined).length;
    r.link(A).ready();
    r.link(A).ackRoundTrips();
    assert.equal(released(), 3);
    r.link(A).fail(); // acks the pending round trip (a closed connection answers)
    assert.equal(released(), 3, "released while no backend was ready");
    r.timer.advance(1000);
    assert.equal(released(), 3);
    r.link(A).connectNow();
    r.link(A).ready();
    assert.equal(released(), 4, "not one call when the backend came back");
    r.channel.close();
    assert.equal(released(), 8);
    assert.ok(calls.slice(0, 4).every((c) => c.result()?.kind === "fail"));
    assert.equal(r.timer.pending, 0);
  });

  it("keeps waking each new backoff step while calls wait, at most once per wake delay", async () => {
    const r = await rig([A]);
    r.link(A).fail();
    r.timer.advance(WAKE);
    const call = queuedCall(r);
    assert.equal(r.link(A).wakeUps, 1);
    // Ten more failed attempts, each answered at once: one wake-up per step, each WAKE ms apart.
    for (let step = 2; step <= 11; step++) {
      r.link(A).fail();
      r.timer.advance(WAKE - 1);
      assert.equal(r.link(A).wakeUps, step - 1, `step ${step}: woken before the delay`);
      r.timer.advance(1);
      assert.equal(r.link(A).wakeUps, step, `step ${step}: not woken with a call waiting`);
    }
    r.link(A).ready();
    assert.equal(pickedKey(call.result()), A);
    // No call waits now: a failure is left to the link's own backoff.
    r.link(A).fail();
    r.timer.advance(10_000);
    assert.equal(r.link(A).wakeUps, 11);
    r.channel.close();
  });

  it("names each backend's reason while calls wait, and fails at once only when none could become ready", async () => {
    const health = new FakeHealthChecker();
    const r = await rig([A, B], { healthChecker: health });
    r.link(A).ready();
    r.link(B).ready();
    health.set(A, "not-serving", "NOT_SERVING");
    r.link(B).fail("connect ECONNREFUSED 10.0.0.2:50051");
    const call = queuedCall(r);
    assert.equal(call.result(), undefined, "failed although B could become ready");
    assert.equal(r.link(B).wakeUps, 0, "B woken within the wake delay");
    assert.equal(
      r.channel.unavailableMessage(),
      `cluster default: no backend is ready (${A}: not serving (NOT_SERVING); ${B}: connect ECONNREFUSED 10.0.0.2:50051)`,
    );
    r.timer.advance(WAKE);
    assert.equal(r.link(B).wakeUps, 1);
    assert.match(
      r.channel.unavailableMessage(),
      /10\.0\.0\.2:50051: connect ECONNREFUSED 10\.0\.0\.2:50051 \(reconnecting\)/,
    );
    // B's health checker finds it unreachable too: nothing can become ready; the waiting call fails.
    health.set(B, "not-serving", "unreachable: connect ECONNREFUSED");
    const failed = call.result();
    assert.equal(failed?.kind, "fail");
    assert.equal(failed.kind === "fail" && failed.status.code, Status.UNAVAILABLE);
    assert.match(
      failed.kind === "fail" ? failed.status.message : "",
      /not serving \(NOT_SERVING\).*not serving \(unreachable/,
    );
    r.channel.close();
  });

  it("does not wake an ejected or not-serving backend, and wakes the others", async () => {
    const outlierDetection: OutlierDetectionConfig = {
      intervalMs: 1000,
      baseEjectionTimeMs: 30_000,
      maxEjectionTimeMs: 300_000,
      maxEjectionPercent: 100,
      successRateEjection: null,
      failurePercentageEjection: {
        threshold: 50,
        enforcementPercentage: 100,
        minimumHosts: 1,
        requestVolume: 10,
      },
    };
    const C = "10.0.0.3:50051";
    const health = new FakeHealthChecker();
    const r = await rig([A, B, C], { outlierDetection, healthChecker: health });
    for (const a of [A, B, C]) {
      r.link(a).ready();
      health.set(a, "serving");
    }
    // A fails every call: ejected at the next interval.
    const a = [...r.channel.backends()].find((b) => b.key === A)!;
    for (let i = 0; i < 20; i++) r.channel.recordCallEnd(a, Status.UNAVAILABLE);
    r.timer.advance(1000);
    assert.equal(r.channel.status().find((s) => s.key === A)?.ejected, true);
    health.set(B, "not-serving", "NOT_SERVING");
    for (const x of [A, B, C]) r.link(x).fail();
    r.timer.advance(WAKE);

    const call = queuedCall(r);
    assert.equal(call.result(), undefined);
    assert.equal(r.link(C).wakeUps, 1);
    assert.equal(r.link(A).connectNowCalls, 0, "the ejected backend was woken");
    assert.equal(r.link(B).connectNowCalls, 0, "the not-serving backend was woken");

    // C fails again, and its health checker says so too: only blocked backends remain → fail at once.
    r.link(C).fail();
    health.set(C, "not-serving", "unreachable: connect ECONNREFUSED");
    const result = call.result();
    assert.equal(result?.kind, "fail");
    const message = result?.kind === "fail" ? result.status.message : "";
    assert.match(message, /10\.0\.0\.1:50051: ejected by outlier detection/);
    assert.match(message, /10\.0\.0\.2:50051: not serving \(NOT_SERVING\)/);
    assert.equal(r.pick().kind, "fail", "a new call queued although nothing could become ready");
    r.timer.advance(10_000);
    assert.equal(r.link(A).connectNowCalls + r.link(B).connectNowCalls, 0);
    r.channel.close();
  });

  it("stops waking and its timers once closed", async () => {
    const r = await rig([A]);
    r.link(A).fail();
    queuedCall(r);
    assert.ok(r.timer.pending > 0, "no wake-up was scheduled");
    r.channel.close();
    assert.equal(r.timer.pending, 0, "a timer outlived close()");
    assert.equal(r.pick().kind, "fail");
  });
});
