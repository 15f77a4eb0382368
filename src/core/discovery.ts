import type { Endpoint } from "./endpoint.ts";

/**
 * What a discovery source says about a target. `reset` replaces the whole set; `add` inserts or
 * replaces by key; `remove` drops keys; `not-found` means the target does not exist (the set is empty,
 * and calls should fail with a message saying so rather than wait).
 */
export type DiscoveryUpdate =
  | { kind: "reset"; endpoints: readonly Endpoint[] }
  | { kind: "add"; endpoints: readonly Endpoint[] }
  | { kind: "remove"; keys: readonly string[] }
  | { kind: "not-found" };

/**
 * A source of endpoints. `watch` yields updates until `signal` aborts; the first update is a `reset`
 * or `not-found`. An iterator that throws is re-watched by the caller with backoff.
 */
export interface Discovery {
  watch(target: string, signal: AbortSignal): AsyncIterable<DiscoveryUpdate>;
}

/** Applies one update to a map keyed by endpoint key. Returns the new map (the old one is untouched). */
export function applyUpdate(
  current: ReadonlyMap<string, Endpoint>,
  update: DiscoveryUpdate,
): Map<string, Endpoint> {
  switch (update.kind) {
    case "reset":
      return new Map(update.endpoints.map((e) => [e.key, e]));
    case "not-found":
      return new Map();
    case "add": {
      const next = new Map(current);
      for (const e of update.endpoints) next.set(e.key, e);
      return next;
    }
    case "remove": {
      const next = new Map(current);
      for (const k of update.keys) next.delete(k);
      return next;
    }
  }
}
