import type http2 from "node:http2";
import type { Balancer, BalancerDeps, PolicySpec } from "../core/balancer.ts";
import { applyUpdate, type Discovery } from "../core/discovery.ts";
import { type Endpoint, formatAddress } from "../core/endpoint.ts";
import type { LoadTracker } from "../core/load/load-tracker.ts";
import {
  type Candidate,
  constantPicker,
  type PickContext,
  type Picker,
  type PickResult,
} from "../core/picker.ts";
import { Status } from "../core/status.ts";
import {
  BackendConnection,
  type BackendConnectionOptions,
  type BackendState,
} from "../platform/backend-connection.ts";

/**
 * The single owner of a cluster's mutable state: Discovery → backends (connections + load) →
 * Balancer.update() → Picker. Used by the proxy and (later) the client.
 *
 * Contract: `pick` is synchronous; pickers change only on discovery updates and backend state changes.
 * Callers that get `queue` register with `onPickerChange` and pick again when it fires.
 */
export interface ChannelOptions {
  readonly name: string;
  readonly discovery: Discovery;
  readonly target: string;
  readonly policy: PolicySpec;
  readonly deps: BalancerDeps;
  readonly connection?: Omit<BackendConnectionOptions, "address" | "onStateChange">;
  readonly onEvent?: (event: ChannelEvent) => void;
}

export type ChannelEvent =
  | { kind: "backend-added"; key: string }
  | { kind: "backend-removed"; key: string }
  | { kind: "backend-state"; key: string; state: BackendState }
  | { kind: "discovery-error"; error: string };

/** Per-backend counters kept as plain numbers (cheap on the hot path); metrics read them on scrape. */
export interface BackendStats {
  calls: number;
  failures: number;
  retries: number;
}

/** A backend as the channel owns it. It is the Candidate handed to the balancer. */
export class Backend implements Candidate {
  readonly key: string;
  readonly endpoint: Endpoint;
  readonly load: LoadTracker;
  readonly connection: BackendConnection;
  readonly stats: BackendStats = { calls: 0, failures: 0, retries: 0 };
  /** Sticky failure (gRFC A61): once failed, counts as failed until it is ready again. */
  failedSinceReady = false;

  constructor(endpoint: Endpoint, connection: BackendConnection, load: LoadTracker) {
    this.key = endpoint.key;
    this.endpoint = endpoint;
    this.connection = connection;
    this.load = load;
  }

  request(headers: http2.OutgoingHttpHeaders): http2.ClientHttp2Stream {
    return this.connection.request(headers);
  }
}

export interface BackendStatus {
  key: string;
  address: string;
  state: BackendState["kind"];
  error?: string;
  sessions: number;
  inFlight: number;
  calls: number;
  failures: number;
  retries: number;
}

export class Channel {
  readonly name: string;
  readonly #o: ChannelOptions;
  readonly #balancer: Balancer;
  readonly #backends = new Map<string, Backend>();
  #endpoints = new Map<string, Endpoint>();
  #picker: Picker;
  #notFound = false;
  #discovered = false;
  readonly #waiters = new Set<() => void>();
  readonly #abort = new AbortController();

  constructor(options: ChannelOptions) {
    this.name = options.name;
    this.#o = options;
    this.#balancer = options.policy.create(options.deps);
    this.#picker = constantPicker({ kind: "queue" });
  }

  /** Starts watching discovery. Returns at once. */
  start(): void {
    void this.#watch();
  }

  pick(ctx: PickContext): PickResult {
    return this.#picker.pick(ctx);
  }

  /** Runs `fn` once at the next picker change. Returns a function that cancels the wait. */
  onPickerChange(fn: () => void): () => void {
    this.#waiters.add(fn);
    return () => this.#waiters.delete(fn);
  }

  /** The channel's backend behind a candidate its picker returned. */
  backendOf(candidate: Candidate): Backend {
    return candidate as Backend;
  }

  status(): BackendStatus[] {
    return [...this.#backends.values()].map((b) => {
      const state = b.connection.state;
      return {
        key: b.key,
        address: formatAddress(b.endpoint.address),
        state: state.kind,
        ...(state.kind === "transient-failure" ? { error: state.error } : {}),
        sessions: b.connection.sessionCount,
        inFlight: b.load.inFlight,
        ...b.stats,
      };
    });
  }

  backends(): Iterable<Backend> {
    return this.#backends.values();
  }

  /** Stops discovery and closes backend sessions gracefully (open streams finish). */
  close(): void {
    this.#abort.abort();
    for (const b of this.#backends.values()) b.connection.close();
    this.#backends.clear();
    this.#setPicker(
      constantPicker({
        kind: "fail",
        status: { code: Status.UNAVAILABLE, message: `cluster ${this.name} is shut down` },
      }),
    );
  }

  async #watch(): Promise<void> {
    const signal = this.#abort.signal;
    // Bounded by the abort signal; a failing discovery is retried after a pause.
    while (!signal.aborted) {
      try {
        for await (const update of this.#o.discovery.watch(this.#o.target, signal)) {
          this.#notFound = update.kind === "not-found";
          this.#discovered = true;
          this.#setEndpoints(applyUpdate(this.#endpoints, update));
        }
        return;
      } catch (err) {
        this.#o.onEvent?.({ kind: "discovery-error", error: (err as Error).message });
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
    }
  }

  #setEndpoints(next: Map<string, Endpoint>): void {
    this.#endpoints = next;
    for (const [key, backend] of this.#backends) {
      const e = next.get(key);
      if (e === undefined || formatAddress(e.address) !== formatAddress(backend.endpoint.address)) {
        backend.connection.close();
        this.#backends.delete(key);
        this.#o.onEvent?.({ kind: "backend-removed", key });
      }
    }
    for (const [key, endpoint] of next) {
      if (this.#backends.has(key)) continue;
      const connection = new BackendConnection({
        ...this.#o.connection,
        address: endpoint.address,
        onStateChange: (state) => this.#onBackendState(key, state),
      });
      // The policy chooses how load is measured (in-flight calls, peak-EWMA latency…).
      const backend = new Backend(endpoint, connection, this.#o.policy.createLoadTracker(this.#o.deps));
      this.#backends.set(key, backend);
      this.#o.onEvent?.({ kind: "backend-added", key });
      connection.start();
    }
    this.#rebuild();
  }

  #onBackendState(key: string, state: BackendState): void {
    const backend = this.#backends.get(key);
    if (backend === undefined) return;
    if (state.kind === "ready") backend.failedSinceReady = false;
    if (state.kind === "transient-failure") backend.failedSinceReady = true;
    this.#o.onEvent?.({ kind: "backend-state", key, state });
    this.#rebuild();
  }

  #rebuild(): void {
    const ready: Backend[] = [];
    let connecting = 0;
    const errors: string[] = [];
    for (const b of this.#backends.values()) {
      const s = b.connection.state;
      if (s.kind === "ready") ready.push(b);
      else if (b.failedSinceReady) {
        errors.push(`${b.key}: ${s.kind === "transient-failure" ? s.error : "reconnecting"}`);
      } else if (s.kind === "connecting" || s.kind === "idle") connecting++;
    }
    if (ready.length > 0) {
      this.#setPicker(this.#balancer.update(ready));
      return;
    }
    if (!this.#discovered || connecting > 0) {
      this.#setPicker(constantPicker({ kind: "queue" }));
      return;
    }
    const message =
      this.#backends.size === 0
        ? this.#notFound
          ? `cluster ${this.name}: target ${this.#o.target} was not found by discovery`
          : `cluster ${this.name} has no backends`
        : `cluster ${this.name}: no backend is ready (${errors.slice(0, 5).join("; ")})`;
    this.#setPicker(constantPicker({ kind: "fail", status: { code: Status.UNAVAILABLE, message } }));
  }

  #setPicker(picker: Picker): void {
    this.#picker = picker;
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}
