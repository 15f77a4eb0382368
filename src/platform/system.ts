import { performance } from "node:perf_hooks";
import type { Clock, Random } from "../core/clock.ts";

/** The real monotonic clock (ms). */
export const systemClock: Clock = { now: () => performance.now() };

/** Math.random as a Random. */
export const systemRandom: Random = { next: () => Math.random() };
