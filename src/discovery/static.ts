import type { Discovery, DiscoveryUpdate } from "../core/discovery.ts";
import type { Endpoint } from "../core/endpoint.ts";

/**
 * A fixed list of endpoints that the owner may replace (config reload, SIGHUP): every watcher gets a
 * `reset` with the current list first and again after each `set`.
 */
export class StaticDiscovery implements Discovery {
  #endpoints: readonly Endpoint[];
  readonly #listeners = new Set<() => void>();

  constructor(endpoints: readonly Endpoint[]) {
    this.#endpoints = endpoints;
  }

  set(endpoints: readonly Endpoint[]): void {
    this.#endpoints = endpoints;
    for (const l of this.#listeners) l();
  }

  async *watch(_target: string, signal: AbortSignal): AsyncIterable<DiscoveryUpdate> {
    let changed = true;
    let wake: (() => void) | undefined;
    const listener = () => {
      changed = true;
      wake?.();
    };
    const onAbort = () => wake?.();
    this.#listeners.add(listener);
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        if (changed) {
          changed = false;
          yield { kind: "reset", endpoints: this.#endpoints };
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      this.#listeners.delete(listener);
      signal.removeEventListener("abort", onAbort);
    }
  }
}
