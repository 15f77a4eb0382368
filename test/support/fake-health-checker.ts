import type { Endpoint } from "../../src/core/endpoint.ts";
import type { Health, HealthChecker } from "../../src/health/health-checker.ts";

/** A HealthChecker whose answers the test gives with `set(key, health, detail)`. */
export class FakeHealthChecker implements HealthChecker {
  readonly #watches = new Map<string, (health: Health, detail: string) => void>();

  watch(endpoint: Endpoint, signal: AbortSignal, onChange: (health: Health, detail: string) => void): void {
    if (signal.aborted) return;
    this.#watches.set(endpoint.key, onChange);
    signal.addEventListener("abort", () => {
      if (this.#watches.get(endpoint.key) === onChange) this.#watches.delete(endpoint.key);
    });
  }

  /** Reports `health` for the backend `key`; throws when nothing watches it. */
  set(key: string, health: Health, detail = health === "serving" ? "SERVING" : "NOT_SERVING"): void {
    const onChange = this.#watches.get(key);
    if (onChange === undefined) throw new Error(`nothing watches ${key}`);
    onChange(health, detail);
  }
}
