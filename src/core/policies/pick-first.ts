import type { Balancer, BalancerFactory } from "../balancer.ts";
import { randomInt } from "../clock.ts";
import { asRecord, readBoolean, rejectUnknownKeys } from "../config.ts";
import type { Candidate, Picker } from "../picker.ts";
import { withoutExcluded } from "../picker.ts";

/**
 * pick_first: every call to one backend, the first ready one in discovery order, until it stops being
 * ready (gRFC A62 semantics, simplified: the channel keeps all endpoints connected, so "first ready"
 * is enough). `shuffleAddressList` (A62) shuffles the order once per balancer so a fleet of balancers
 * does not pile onto the first address.
 */
export interface PickFirstConfig {
  shuffleAddressList: boolean;
}

export const pickFirst: BalancerFactory<PickFirstConfig> = {
  name: "pick_first",
  parseConfig(raw) {
    const r = asRecord(raw, "policy");
    rejectUnknownKeys(r, ["shuffleAddressList"], "policy");
    return { shuffleAddressList: readBoolean(r, "shuffleAddressList", false, "policy") };
  },
  create(config, deps): Balancer {
    // Rank per key, fixed at creation when shuffling so the chosen backend stays put across updates.
    const rank = new Map<string, number>();
    return {
      update(candidates: readonly Candidate[]): Picker {
        let ordered = candidates;
        if (config.shuffleAddressList) {
          for (const c of candidates) if (!rank.has(c.key)) rank.set(c.key, randomInt(deps.random, 1 << 30));
          ordered = [...candidates].sort((a, b) => rank.get(a.key)! - rank.get(b.key)!);
        }
        return {
          pick(ctx) {
            return { kind: "pick", candidate: withoutExcluded(ordered, ctx.exclude)[0]! };
          },
        };
      },
    };
  },
};
