import type { Endpoint } from "../core/endpoint.ts";

/**
 * What an active health checker says about one backend.
 *
 * - `unknown`: no answer yet (the start of a watch). Not a candidate, as gRPC's client-side health
 *   checking (gRFC A17) keeps a subchannel CONNECTING until the first answer.
 * - `serving`: the backend said SERVING (or has no health service at all — see grpc-health.ts).
 * - `not-serving`: it said anything else, did not answer in time, or could not be reached.
 */
export type Health = "unknown" | "serving" | "not-serving";

/**
 * An active health checker (DESIGN.md "Central interfaces").
 *
 * Contract:
 * - `watch` returns at once; checking runs until `signal` aborts. After the abort `onChange` is never
 *   called again and every socket and timer of that watch is released (promptly, without waiting for
 *   the peer).
 * - `onChange` is called asynchronously (never from inside `watch`), only when the health or its
 *   `detail` changes. The state before the first call is `unknown`.
 * - `detail` is a short human explanation for status pages and logs ("NOT_SERVING", "Check timed out
 *   after 1000 ms", "no health service; treated as serving"…).
 * - One checker may watch many endpoints; each watch owns its own connection.
 */
export interface HealthChecker {
  watch(endpoint: Endpoint, signal: AbortSignal, onChange: (health: Health, detail: string) => void): void;
}
