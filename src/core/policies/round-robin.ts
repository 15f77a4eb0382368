import type { Balancer, BalancerDeps, BalancerFactory } from "../balancer.ts";
import { randomInt } from "../clock.ts";
import { asRecord, rejectUnknownKeys } from "../config.ts";
import type { Candidate, PickContext, Picker, PickResult } from "../picker.ts";

/**
 * round_robin: each call to the next ready backend in turn. As in grpc-js's load-balancer-round-robin.ts
 * the start position is random, so many clients/balancers restarted together don't all hit backend 0
 * first; unlike it, the position survives picker swaps (kept in the balancer) so an update does not
 * restart the rotation. Weights are ignored (that is weighted_round_robin's job).
 */
export type RoundRobinConfig = Record<string, never>;

class RoundRobinPicker implements Picker {
  readonly #candidates: readonly Candidate[];
  readonly #cursor: { next: number };
  constructor(candidates: readonly Candidate[], cursor: { next: number }) {
    this.#candidates = candidates;
    this.#cursor = cursor;
  }
  pick(ctx: PickContext): PickResult {
    const n = this.#candidates.length;
    const start = this.#cursor.next;
    // Bounded: at most n steps over excluded keys; when all are excluded, take the one at the cursor.
    let index = start;
    for (let step = 0; step < n; step++) {
      const i = (start + step) % n;
      if (!ctx.exclude?.has(this.#candidates[i]!.key)) {
        index = i;
        break;
      }
    }
    this.#cursor.next = (index + 1) % n;
    return { kind: "pick", candidate: this.#candidates[index]! };
  }
}

class RoundRobin implements Balancer {
  readonly #deps: BalancerDeps;
  #cursor: { next: number } | undefined;
  constructor(deps: BalancerDeps) {
    this.#deps = deps;
  }
  update(candidates: readonly Candidate[]): Picker {
    // A fresh cursor object per snapshot keeps an old picker from moving the new one's position;
    // the new cursor starts where the old one was.
    const start =
      this.#cursor === undefined ? randomInt(this.#deps.random, candidates.length) : this.#cursor.next;
    this.#cursor = { next: start % candidates.length };
    return new RoundRobinPicker(candidates, this.#cursor);
  }
}

export const roundRobin: BalancerFactory<RoundRobinConfig> = {
  name: "round_robin",
  parseConfig(raw) {
    rejectUnknownKeys(asRecord(raw, "policy"), [], "policy");
    return {};
  },
  create: (_config, deps) => new RoundRobin(deps),
};
