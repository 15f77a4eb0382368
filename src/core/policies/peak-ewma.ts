import type { BalancerDeps, BalancerFactory } from "../balancer.ts";
import { randomInt } from "../clock.ts";
import { asRecord, readNumber, rejectUnknownKeys } from "../config.ts";
import { ConfigError } from "../errors.ts";
import { defaultPeakEwmaOptions, PeakEwma } from "../load/peak-ewma.ts";
import type { Candidate, PickContext, Picker, PickResult } from "../picker.ts";
import { withoutExcluded } from "../picker.ts";

/**
 * peak_ewma: power of `choiceCount` choices over each backend's Peak-EWMA cost (RTT estimate ×
 * (in flight + 1), see load/peak-ewma.ts) — tower's `balance::p2c` over `load::PeakEwma`, the pairing
 * linkerd2-proxy ships, and what Envoy's contrib `peak_ewma` policy implements.
 *
 * Unlike least_request (gRFC A48 samples with replacement), the samples here are distinct, as tower's
 * p2c does (`sample_floyd2`): with replacement, a slow backend drawn twice is picked anyway, which sends
 * it 1/n² of the calls however slow it is. Distinct sampling leaves it only the calls the others are
 * too loaded to take, plus the probes that the estimate's decay toward zero grants it now and then.
 * Ties go to the first sample, which is uniform over the candidates.
 *
 * The policy brings its own LoadTracker (`createLoadTracker`); over any other tracker it still works,
 * comparing whatever `cost` says.
 */
export interface PeakEwmaConfig {
  decayMs: number;
  defaultRttMs: number;
  choiceCount: number;
}

class PeakEwmaPicker implements Picker {
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
    const n = list.length;
    if (n === 1) return { kind: "pick", candidate: list[0]! };
    const k = Math.min(this.#choices, n);
    const now = this.#deps.clock.now();
    // Sample k distinct indexes: draw from the n − i not yet chosen and map the draw past the chosen
    // ones (kept sorted). Each draw is uniform over what is left, so the first sample is uniform.
    const chosen: number[] = [];
    let best: Candidate | undefined;
    let bestCost = Number.POSITIVE_INFINITY;
    for (let i = 0; i < k; i++) {
      let index = randomInt(this.#deps.random, n - i);
      let at = 0;
      while (at < chosen.length && chosen[at]! <= index) {
        index++;
        at++;
      }
      chosen.splice(at, 0, index);
      const c = list[index]!;
      const cost = c.load.cost(now);
      if (cost < bestCost) {
        best = c;
        bestCost = cost;
      }
    }
    return { kind: "pick", candidate: best ?? list[0]! };
  }
}

function readPositive(r: Record<string, unknown>, key: string, dflt: number): number {
  const v = readNumber(r, key, { default: dflt, min: 0 }, "policy");
  if (v <= 0) throw new ConfigError(`policy.${key}`, `must be greater than 0, got ${v}`);
  return v;
}

export const peakEwma: BalancerFactory<PeakEwmaConfig> = {
  name: "peak_ewma",
  parseConfig(raw) {
    const r = asRecord(raw, "policy");
    rejectUnknownKeys(r, ["decayMs", "defaultRttMs", "choiceCount"], "policy");
    return {
      decayMs: readPositive(r, "decayMs", defaultPeakEwmaOptions.decayMs),
      defaultRttMs: readPositive(r, "defaultRttMs", defaultPeakEwmaOptions.defaultRttMs),
      choiceCount: readNumber(r, "choiceCount", { default: 2, min: 2, max: 10, integer: true }, "policy"),
    };
  },
  create: (config, deps) => ({
    update: (candidates) => new PeakEwmaPicker(candidates, config.choiceCount, deps),
  }),
  createLoadTracker: (config, deps) =>
    new PeakEwma({ decayMs: config.decayMs, defaultRttMs: config.defaultRttMs }, deps.clock.now()),
};
