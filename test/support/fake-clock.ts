import type { Clock } from "../../src/core/clock.ts";

/** A Clock that moves only when told. Time in milliseconds, starting at `start`. */
export class FakeClock implements Clock {
  #now: number;
  constructor(start = 0) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  advance(ms: number): void {
    if (ms < 0) throw new Error("FakeClock cannot go backwards");
    this.#now += ms;
  }
}
