import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  defaultFrontKeepalive,
  type FrontKeepalive,
  IDLE_PING_INTERVAL_MS,
  PingStrikes,
} from "./front-keepalive.ts";

const policy = (p: Partial<FrontKeepalive>): FrontKeepalive => ({ ...defaultFrontKeepalive, ...p });

/** Feeds pings at the given times (ms) with `openCalls` open; returns which ones closed the connection. */
function verdicts(s: PingStrikes, times: number[], openCalls = 1): boolean[] {
  return times.map((t) => s.onPing(t, openCalls));
}

describe("front ping strikes", () => {
  it("allows pings at the minimum interval, however many", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000, maxPingStrikes: 2 }));
    assert.deepEqual(verdicts(s, [0, 1000, 2000, 3000, 4500, 10_000]), [
      false,
      false,
      false,
      false,
      false,
      false,
    ]);
    assert.equal(s.strikes, 0);
  });

  it("closes on the third ping too soon with two strikes allowed (after gRPC's default of 2)", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000, maxPingStrikes: 2 }));
    // 0: first ping, fine; 10, 20: strikes 1 and 2, tolerated; 30: strike 3 > 2 → close.
    assert.deepEqual(verdicts(s, [0, 10, 20, 30]), [false, false, false, true]);
    assert.equal(s.strikes, 3);
  });

  it("measures each interval from the previous ping, not from the first", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000, maxPingStrikes: 1 }));
    // 900 after 0: strike 1; 1800 is 900 after 900: strike 2 > 1 → close.
    assert.deepEqual(verdicts(s, [0, 900, 1800]), [false, false, true]);
  });

  it("forgives earlier strikes when a call starts", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000, maxPingStrikes: 2 }));
    assert.deepEqual(verdicts(s, [0, 10, 20]), [false, false, false]);
    s.onCall();
    assert.equal(s.strikes, 0);
    // The next ping is not counted against the one before the call either.
    assert.deepEqual(verdicts(s, [25, 30, 40]), [false, false, false]);
    assert.equal(s.strikes, 2);
  });

  it("counts idle pings against 2 h when pings without calls are not permitted", () => {
    const s = new PingStrikes(
      policy({ minPingIntervalMs: 1000, maxPingStrikes: 2, permitWithoutCalls: false }),
    );
    const h = 60 * 60 * 1000;
    // Each ping 1 h after the previous one, under 2 h: strikes 1, 2, then 3 > 2 → close.
    assert.deepEqual(verdicts(s, [0, h, 2 * h, 3 * h], 0), [false, false, false, true]);
    assert.equal(s.strikes, 3);
    const t = new PingStrikes(policy({ minPingIntervalMs: 1000, permitWithoutCalls: false }));
    assert.deepEqual(verdicts(t, [0, IDLE_PING_INTERVAL_MS, 2 * IDLE_PING_INTERVAL_MS], 0), [
      false,
      false,
      false,
    ]);
    // With a call open the ordinary interval applies.
    assert.deepEqual(verdicts(t, [2 * IDLE_PING_INTERVAL_MS + 1000], 1), [false]);
  });

  it("allows idle pings at the minimum interval when they are permitted (the default)", () => {
    assert.equal(defaultFrontKeepalive.permitWithoutCalls, true);
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000 }));
    assert.deepEqual(verdicts(s, [0, 1000, 2000], 0), [false, false, false]);
  });

  it("enforces nothing when minPingIntervalMs is 0", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 0, maxPingStrikes: 0 }));
    assert.deepEqual(verdicts(s, [0, 0, 0, 0, 0]), [false, false, false, false, false]);
  });

  it("treats maxPingStrikes 0 as no limit, as grpc-core does", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000, maxPingStrikes: 0 }));
    assert.deepEqual(verdicts(s, [0, 1, 2, 3, 4]), [false, false, false, false, false]);
    assert.equal(s.strikes, 4);
  });

  it("closes on the second ping too soon with maxPingStrikes 1", () => {
    const s = new PingStrikes(policy({ minPingIntervalMs: 1000, maxPingStrikes: 1 }));
    assert.deepEqual(verdicts(s, [0, 1, 2]), [false, false, true]);
  });
});
