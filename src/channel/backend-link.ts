import type { Address } from "../core/endpoint.ts";
import type { BackendState } from "../platform/backend-connection.ts";

export type { BackendState };

/**
 * What the channel needs of its connection to one backend. Implemented by platform's
 * BackendConnection (node:http2) and by any other transport; tests use a typed fake
 * (test/support/fake-backend-link.ts). How calls travel over the link is not part of it: the proxy
 * reaches streams through `Backend.request`, which needs the node:http2 implementation.
 *
 * Contract:
 * - `state` follows the machine documented in platform/backend-connection.ts: idle → connecting →
 *   ready; ready/connecting → transient-failure (waiting out a reconnect backoff step) → connecting;
 *   any → shutdown. Every change is reported through the `onStateChange` given to the factory,
 *   synchronously, from inside the method that caused it (so `start()` and `connectNow()` may call
 *   back before they return).
 * - `start()`: idle → connecting; otherwise nothing.
 * - `connectNow()`: in transient-failure, ends the backoff step early and connects at once (the
 *   backoff is not reset: a failure starts the next, longer step). In any other state, nothing. Cheap:
 *   the channel calls it at most once per backoff step.
 * - `close()`: graceful, no new calls, open ones finish; `destroy()`: at once. Both end in shutdown.
 * - `afterRoundTrip(fn)`: calls `fn` once the backend has read everything sent to it so far (an
 *   HTTP/2 PING sent now on each of its connections has been acknowledged; a connection that closes
 *   first counts as answered), never synchronously, at most once. It may answer on the next turn
 *   without asking — no connection to ask, or asking would cost the connection (gRPC servers close
 *   one that PINGs too often) — and the channel then paces by turns. The channel paces the release of
 *   queued calls with it (channel.ts, Readiness).
 * - `sessionCount`: transport sessions open or opening, for /status.
 */
export interface BackendLink {
  readonly state: BackendState;
  readonly sessionCount: number;
  start(): void;
  connectNow(): void;
  afterRoundTrip(fn: () => void): void;
  close(): void;
  destroy(): void;
}

/** What the channel gives a connection factory for one backend. */
export interface BackendLinkOptions {
  readonly address: Address;
  /** Called synchronously on every state change. */
  readonly onStateChange: (state: BackendState) => void;
}

export type CreateBackendLink<L extends BackendLink = BackendLink> = (options: BackendLinkOptions) => L;
