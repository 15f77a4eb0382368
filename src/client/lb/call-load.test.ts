import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PendingRequests } from "../../core/load/pending-requests.ts";
import { outcomeOf, ReservationSweeper, TrackedCall } from "./call-load.ts";

const clock = { now: () => 0 };

describe("TrackedCall and ReservationSweeper", () => {
  it("counts a call from its pick, so the next pick of a burst already sees it", () => {
    const load = new PendingRequests();
    const sweeper = new ReservationSweeper(() => {});
    for (let i = 0; i < 3; i++) sweeper.add(new TrackedCall(load, clock));
    assert.equal(load.inFlight, 3);
  });

  it("releases picks that grpc-js dropped without starting them, once, on the sweep", () => {
    const load = new PendingRequests();
    let sweep: (() => void) | undefined;
    let scheduled = 0;
    const sweeper = new ReservationSweeper((fn) => {
      scheduled++;
      sweep = fn;
    });
    const started = new TrackedCall(load, clock);
    const dropped = new TrackedCall(load, clock);
    sweeper.add(started);
    sweeper.add(dropped);
    assert.equal(scheduled, 1, "one sweep per burst");
    started.started();
    sweep!();
    assert.equal(load.inFlight, 1);
    assert.equal(sweeper.released, 1);
    started.ended("success");
    assert.equal(load.inFlight, 0);
    dropped.ended("success"); // never started: ignored
    started.ended("success"); // twice: ignored
    assert.equal(load.inFlight, 0);
  });

  it("counts a call again when it starts after its reservation was released (slow call credentials)", () => {
    const load = new PendingRequests();
    const call = new TrackedCall(load, clock);
    assert.equal(call.release(), true);
    assert.equal(load.inFlight, 0);
    call.started();
    assert.equal(load.inFlight, 1);
    assert.equal(call.release(), false, "a started call is never released");
    call.ended("failure");
    assert.equal(load.inFlight, 0);
  });

  it("maps OK to success, CANCELLED to cancelled and any other status to failure", () => {
    assert.deepEqual([0, 1, 4, 14].map(outcomeOf), ["success", "cancelled", "failure", "failure"]);
  });
});
