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
 * other tracker. With fewer candidates than choices this is still correct: sampling with replacement.
 */
export interface LeastRequestConfig {
  choiceCount: number;
}

class LeastRequestPicker implements Picker {
  readonly #candidates: readonly Candidate[];
  readonly #choices: number;
  readonly #deps: BalancerDeps;
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
