import * as defaultGrpc from "@grpc/grpc-js";
import type { BalancerDeps } from "../../core/balancer.ts";
import { ConfigError } from "../../core/errors.ts";
import { createDefaultRegistry } from "../../core/policies/registry.ts";
import { systemClock, systemRandom } from "../../platform/system.ts";
import { ETCD_SCHEME, etcdResolverClass } from "./etcd-resolver.ts";
import {
  type AdapterContext,
  configClass,
  loadBalancerClass,
  parsePolicyConfig,
  ROSTER_POLICIES,
  type RosterLbConfig,
} from "./policy.ts";
import { ROSTER_SCHEME, staticResolverClass } from "./resolver.ts";

/**
 * Roster's policies and resolver for any grpc-js client. After `registerRosterPolicies()`:
 *
 *     new grpc.Client("roster:///10.0.0.1:50051,10.0.0.2:50051", creds, {
 *       "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ roster_peak_ewma: {} }] }),
 *     });
 *
 * Policies: roster_round_robin, roster_least_request, roster_peak_ewma, roster_ring_hash (hash key from a
 * metadata header: `{ "hashKey": { "header": "x-user" } }`), roster_weighted_round_robin, roster_resume —
 * the `src/core` policies of `roster lb`, with the same config fields (docs/configuration.md).
 */
export { ETCD_SCHEME } from "./etcd-resolver.ts";
export { ROSTER_POLICIES, type RosterPolicyName } from "./policy.ts";
export { parseStaticTarget, ROSTER_SCHEME } from "./resolver.ts";

export interface RegisterOptions {
  /**
   * The grpc-js module the application's clients come from, when it is not the one Roster resolves
   * (two copies of grpc-js keep two registries; policies registered in one are unknown to the other).
   */
  readonly grpc?: typeof defaultGrpc;
}

const registered = new WeakSet<object>();
const contexts = new WeakMap<object, AdapterContext>();
/** Config errors already logged, so a channel re-reading its service config does not repeat them. */
const logged = new Set<string>();

function contextFor(g: typeof defaultGrpc): AdapterContext {
  let ctx = contexts.get(g.experimental);
  if (ctx === undefined) {
    const deps: BalancerDeps = { clock: systemClock, random: systemRandom };
    ctx = { grpc: g, registry: createDefaultRegistry(), deps };
    contexts.set(g.experimental, ctx);
  }
  return ctx;
}

/**
 * Registers the `roster_*` load-balancing policies and the `roster:` and `etcd:` resolvers in grpc-js
 * (`etcd://HOST:PORT/PREFIX`: the members under an etcd prefix, followed live; etcd-resolver.ts). Idempotent
 * (per grpc-js module). Registration is global to that grpc-js: every channel made after it may name them.
 *
 * grpc-js quietly skips a loadBalancingConfig entry it cannot parse (falling back to the next one, or
 * pick_first); a roster_* entry that fails is logged at ERROR with the field at fault (once per
 * message). Use `rosterLbConfig()` to get the error thrown instead.
 */
export function registerRosterPolicies(options: RegisterOptions = {}): void {
  const g = options.grpc ?? defaultGrpc;
  if (registered.has(g.experimental)) return;
  const ctx = contextFor(g);
  const onError = (err: Error) => {
    const message = `roster policy config rejected (grpc-js falls back to the next loadBalancingConfig entry or pick_first): ${err.message}`;
    if (logged.has(message)) return;
    if (logged.size < 100) logged.add(message);
    g.experimental.log(g.logVerbosity.ERROR, message);
  };
  for (const policy of ROSTER_POLICIES) {
    g.experimental.registerLoadBalancerType(
      policy.grpcName,
      loadBalancerClass(ctx, policy),
      configClass(ctx, policy, onError),
    );
  }
  g.experimental.registerResolver(ROSTER_SCHEME, staticResolverClass(g));
  g.experimental.registerResolver(ETCD_SCHEME, etcdResolverClass(g));
  registered.add(g.experimental);
}

/**
 * A validated `loadBalancingConfig` entry, e.g. `rosterLbConfig("peak_ewma", { decayMs: 5000 })` →
 * `{ roster_peak_ewma: { decayMs: 5000 } }`. Takes the core name ("peak_ewma") or the grpc-js one
 * ("roster_peak_ewma"). Throws ConfigError naming the field (`roster_peak_ewma.decayMs: …`).
 */
export function rosterLbConfig(policy: string, config: object = {}): Record<string, object> {
  const p = ROSTER_POLICIES.find((x) => x.coreName === policy || x.grpcName === policy);
  if (p === undefined) {
    throw new ConfigError(
      "policy",
      `unknown policy "${policy}"; known: ${ROSTER_POLICIES.map((x) => x.coreName).join(", ")}`,
    );
  }
  const parsed: RosterLbConfig = parsePolicyConfig(contextFor(defaultGrpc), p, config);
  return parsed.toJsonObject() as Record<string, object>;
}

/** A `grpc.service_config` value choosing one Roster policy (validated as `rosterLbConfig`). */
export function rosterServiceConfig(policy: string, config: object = {}): string {
  return JSON.stringify({ loadBalancingConfig: [rosterLbConfig(policy, config)] });
}
