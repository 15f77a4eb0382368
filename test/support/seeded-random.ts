import type { Random } from "../../src/core/clock.ts";

/** mulberry32: a small, fast, seeded generator — good enough for distribution tests, not crypto. */
export class SeededRandom implements Random {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** A Random that replays a fixed sequence (cycling), for exact-sequence tables. */
export class ScriptedRandom implements Random {
  readonly #values: readonly number[];
  #i = 0;
  constructor(values: readonly number[]) {
    if (values.length === 0) throw new Error("ScriptedRandom needs at least one value");
    this.#values = values;
  }
  next(): number {
    const v = this.#values[this.#i % this.#values.length]!;
    this.#i++;
    return v;
  }
}
