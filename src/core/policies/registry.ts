import { BalancerRegistry } from "../balancer.ts";
import { leastRequest } from "./least-request.ts";
import { peakEwma } from "./peak-ewma.ts";
import { pickFirst } from "./pick-first.ts";
import { resume } from "./resume.ts";
import { ringHash } from "./ring-hash.ts";
import { roundRobin } from "./round-robin.ts";
import { weightedRoundRobin } from "./weighted-round-robin.ts";

/** Every built-in policy, registered explicitly (no import-time side effects). */
export function createDefaultRegistry(): BalancerRegistry {
  return new BalancerRegistry()
    .register(pickFirst)
    .register(roundRobin)
    .register(leastRequest)
    .register(peakEwma)
    .register(ringHash)
    .register(resume)
    .register(weightedRoundRobin);
}
