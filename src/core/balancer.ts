import type { Clock, Random } from "./clock.ts";
import { ConfigError } from "./errors.ts";
import type { Candidate, Picker } from "./picker.ts";

/**
 * A load-balancing policy instance for one cluster. `update` is called by the channel (the single
 * owner of mutable state) whenever the ready set changes and returns the picker to use from now on.
 * Never called concurrently; may keep state across updates (e.g. a round-robin position).
 * `candidates` is never empty: the channel answers queue/fail itself when nothing is ready.
 */
export interface Balancer {
  update(candidates: readonly Candidate[]): Picker;
}

export interface BalancerDeps {
  readonly clock: Clock;
  readonly random: Random;
}

/**
 * One policy: its gRPC service-config name, a config parser that validates and fills defaults
 * (throwing ConfigError naming the field under `policy.`), and a constructor.
 */
export interface BalancerFactory<C = unknown> {
  readonly name: string;
  parseConfig(raw: unknown): C;
  create(config: C, deps: BalancerDeps): Balancer;
}

/** A parsed policy choice, ready to create balancers from. */
export interface PolicySpec {
  readonly name: string;
  create(deps: BalancerDeps): Balancer;
}

export class BalancerRegistry {
  readonly #factories = new Map<string, BalancerFactory<unknown>>();

  register<C>(factory: BalancerFactory<C>): this {
    if (this.#factories.has(factory.name)) throw new Error(`policy ${factory.name} is registered twice`);
    this.#factories.set(factory.name, factory as BalancerFactory<unknown>);
    return this;
  }

  names(): string[] {
    return [...this.#factories.keys()].sort();
  }

  /** Validates `name` and its config; throws ConfigError naming `field`. */
  resolve(name: string, rawConfig: unknown, field = "policy"): PolicySpec {
    const factory = this.#factories.get(name);
    if (factory === undefined) {
      throw new ConfigError(field, `unknown policy "${name}"; known policies: ${this.names().join(", ")}`);
    }
    let config: unknown;
    try {
      config = factory.parseConfig(rawConfig ?? {});
    } catch (err) {
      // Policies name their fields under "policy"; re-root them where this policy was configured.
      if (err instanceof ConfigError && field !== "policy" && err.field.startsWith("policy")) {
        throw new ConfigError(field + err.field.slice("policy".length), err.detail);
      }
      throw err;
    }
    return { name, create: (deps) => factory.create(config, deps) };
  }
}
