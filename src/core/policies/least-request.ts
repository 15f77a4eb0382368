import type { BalancerDeps, BalancerFactory } from "../balancer.ts";
import { randomInt } from "../clock.ts";
import { asRecord, readNumber, rejectUnknownKeys } from "../config.ts";
import type { Candidate, PickContext, Picker, PickResult } from "../picker.ts";
import { withoutExcluded } from "../picker.ts";

/**
 * least_request: power of `choiceCount` random choices over in-flight calls (gRFC A48, Envoy's
 * LEAST_REQUEST; Mitzenmacher's "power of two choices"). Sample `choiceCount` candidates uniformly with
 * replacement, take the one with the lowest load cost; ties go to the earlier sample. A48 bounds
 * choiceCount to [2, 10] (values above 10 are clamped there; we reject them so a typo is seen).
 *
 * Cost comes from the candidate's LoadTracker, so the same policy works over pending-requests or any
 * other tracker.
 *
 * Deviation: when there are no more candidates than choices (a handful of local workers), sampling with
 * replacement is only a noisier full scan, so we scan them all and break ties by rotating the starting
 * point — "join the shortest queue", round-robin among equals. With identical workers that keeps the
 * shares within a few calls of each other, which P2C's random ties do not (~±3% over 1000 calls each).
 */
export interface LeastRequestConfig {
  choiceCount: number;
}

class LeastRequestPicker implements Picker {
  readonly #candidates: readonly Candidate[];
  readonly #choices: number;
  readonly #deps: BalancerDeps;
  /** Start of the next full scan (rotates so that ties are shared in turn). */
  #rotation = 0;
  constructor(candidates: readonly Candidate[], choices: number, deps: BalancerDeps) {
    this.#candidates = candidates;
    this.#choices = choices;
    this.#deps = deps;
  }
  pick(ctx: PickContext): PickResult {
    const list = withoutExcluded(this.#candidates, ctx.exclude);
    if (list.length === 1) return { kind: "pick", candidate: list[0]! };
    const now = this.#deps.clock.now();
    let best: Candidate | undefined;
    let bestCost = Number.POSITIVE_INFINITY;
    if (list.length <= this.#choices) {
      const n = list.length;
      const start = this.#rotation++ % n;
      for (let i = 0; i < n; i++) {
        const c = list[(start + i) % n]!;
        const cost = c.load.cost(now);
        if (cost < bestCost) {
          best = c;
          bestCost = cost;
        }
      }
      return { kind: "pick", candidate: best! };
    }
    for (let i = 0; i < this.#choices; i++) {
      const c = list[randomInt(this.#deps.random, list.length)]!;
      const cost = c.load.cost(now);
      if (cost < bestCost) {
        best = c;
        bestCost = cost;
      }
    }
    return { kind: "pick", candidate: best ?? list[0]! };
  }
}

export const leastRequest: BalancerFactory<LeastRequestConfig> = {
  name: "least_request",
  parseConfig(raw) {
    const r = asRecord(raw, "policy");
    rejectUnknownKeys(r, ["choiceCount"], "policy");
    return {
      choiceCount: readNumber(r, "choiceCount", { default: 2, min: 2, max: 10, integer: true }, "policy"),
    };
  },
  create: (config, deps) => ({
    update: (candidates) => new LeastRequestPicker(candidates, config.choiceCount, deps),
  }),
};
