import type { Timer } from "../../src/channel/timer.ts";
import { FakeClock } from "./fake-clock.ts";

interface Entry {
  at: number;
  seq: number;
  readonly fn: () => void;
  /** Period of an interval; undefined for a timeout. */
  readonly every: number | undefined;
  done: boolean;
}

/**
 * A Timer on a FakeClock: timers fire only inside `advance`, each at its own time (the clock is moved
 * to it first), in time order, ties in the order they were set. A timer set by a firing timer fires in
 * the same `advance` if it falls due within it.
 */
export class FakeTimer implements Timer {
  readonly clock: FakeClock;
  #entries: Entry[] = [];
  #seq = 0;

  constructor(clock: FakeClock = new FakeClock()) {
    this.clock = clock;
  }

  setTimeout(fn: () => void, ms: number): () => void {
    return this.#add(fn, ms, undefined);
  }

  setInterval(fn: () => void, ms: number): () => void {
    if (!(ms > 0)) throw new Error(`FakeTimer: an interval needs a positive period, got ${ms}`);
    return this.#add(fn, ms, ms);
  }

  /** Timers set and not yet fired or cancelled (an interval counts once). */
  get pending(): number {
    return this.#entries.filter((e) => !e.done).length;
  }

  /** Moves the clock `ms` forward, firing every timer that falls due on the way. */
  advance(ms: number): void {
    if (ms < 0) throw new Error("FakeTimer cannot go backwards");
    const until = this.clock.now() + ms;
    // Bounded: each turn fires one due timer, and an interval re-arms strictly later.
    for (;;) {
      this.#entries = this.#entries.filter((e) => !e.done);
      let next: Entry | undefined;
      for (const e of this.#entries) {
        if (e.at > until) continue;
        if (next === undefined || e.at < next.at || (e.at === next.at && e.seq < next.seq)) next = e;
      }
      if (next === undefined) break;
      this.clock.advance(next.at - this.clock.now());
      if (next.every === undefined) next.done = true;
      else {
        next.at += next.every;
        next.seq = this.#seq++;
      }
      next.fn();
    }
    this.clock.advance(until - this.clock.now());
  }

  #add(fn: () => void, ms: number, every: number | undefined): () => void {
    const entry: Entry = { at: this.clock.now() + Math.max(ms, 0), seq: this.#seq++, fn, every, done: false };
    this.#entries.push(entry);
    return () => {
      entry.done = true;
    };
  }
}
