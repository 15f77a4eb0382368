import type {
  BackendLink,
  BackendLinkOptions,
  BackendState,
  CreateBackendLink,
} from "../../src/channel/backend-link.ts";
import { type Address, formatAddress } from "../../src/core/endpoint.ts";

/**
 * A BackendLink whose state the test drives (`ready()`, `fail()`), counting what the channel asked
 * of it. Transitions follow the BackendLink contract: start() and connectNow() act only in idle and
 * transient-failure respectively, and report synchronously.
 */
export class FakeBackendLink implements BackendLink {
  readonly address: Address;
  readonly #onStateChange: (state: BackendState) => void;
  #state: BackendState = { kind: "idle" };
  sessionCount = 0;
  /** Every connectNow() call, including those that changed nothing. */
  connectNowCalls = 0;
  /** connectNow() calls that started an attempt (from transient-failure). */
  wakeUps = 0;
  startCalls = 0;
  /** afterRoundTrip() callbacks not yet answered (`ackRoundTrips`, or the connection's end). */
  roundTrips: (() => void)[] = [];
  /** Every afterRoundTrip() call. */
  roundTripCalls = 0;

  constructor(o: BackendLinkOptions) {
    this.address = o.address;
    this.#onStateChange = o.onStateChange;
  }

  get state(): BackendState {
    return this.#state;
  }

  start(): void {
    this.startCalls++;
    if (this.#state.kind === "idle") this.#set({ kind: "connecting" });
  }

  connectNow(): void {
    this.connectNowCalls++;
    if (this.#state.kind !== "transient-failure") return;
    this.wakeUps++;
    this.#set({ kind: "connecting" });
  }

  afterRoundTrip(fn: () => void): void {
    this.roundTripCalls++;
    this.roundTrips.push(fn);
  }

  /** The backend acknowledged every round trip asked so far. */
  ackRoundTrips(): void {
    const fns = this.roundTrips.splice(0);
    for (const fn of fns) fn();
  }

  close(): void {
    if (this.#state.kind !== "shutdown") this.#set({ kind: "shutdown" });
    this.ackRoundTrips();
  }

  destroy(): void {
    this.close();
  }

  /** The attempt in progress succeeded. */
  ready(): void {
    this.sessionCount = 1;
    this.#set({ kind: "ready" });
  }

  /** The attempt failed (or the connection was lost): a backoff step begins. */
  fail(error = "connect ECONNREFUSED"): void {
    this.sessionCount = 0;
    this.#set({ kind: "transient-failure", error });
    // A connection that closed answers its round trips (as FrameBackend's do).
    this.ackRoundTrips();
  }

  #set(state: BackendState): void {
    if (this.#state.kind === "shutdown") return;
    this.#state = state;
    this.#onStateChange(state);
  }
}

/** A Channel `createConnection` that keeps every link it made, by "host:port" (or socket path). */
export class FakeConnector {
  readonly links = new Map<string, FakeBackendLink>();
  readonly create: CreateBackendLink = (o) => {
    const link = new FakeBackendLink(o);
    this.links.set(formatAddress(o.address), link);
    return link;
  };

  /** The link made for `address`; throws when there is none. */
  get(address: string): FakeBackendLink {
    const link = this.links.get(address);
    if (link === undefined)
      throw new Error(`no link to ${address} (have: ${[...this.links.keys()].join(", ")})`);
    return link;
  }
}
