/**
 * Time and randomness enter the core only through these interfaces, so every algorithm can run on a
 * fake clock and a seeded random in tests (DESIGN.md, convention 1).
 */

/** Monotonic time in milliseconds (fractions allowed). Never goes backwards. */
export interface Clock {
  now(): number;
}

/** A source of uniform numbers in [0, 1). */
export interface Random {
  next(): number;
}

/** A whole number in [0, n) drawn from `random`. `n` must be >= 1. */
export function randomInt(random: Random, n: number): number {
  const i = Math.floor(random.next() * n);
  // Guard against a Random that returns exactly 1 (a contract breach we tolerate).
  return i >= n ? n - 1 : i;
}
