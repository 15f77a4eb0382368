import type { Etcd3, IKeyValue } from "etcd3";
import { Backoff, type BackoffOptions } from "../core/backoff.ts";
import type { Random } from "../core/clock.ts";
import type { Discovery, DiscoveryUpdate } from "../core/discovery.ts";
import type { Endpoint } from "../core/endpoint.ts";
import { createEtcdClient, sleep, watchResponses } from "./etcd-client.ts";
import { decodeMember, type EtcdTarget, formatEtcdTarget } from "./etcd-target.ts";

/** What the discovery tells its owner (for logs). */
export type EtcdDiscoveryEvent =
  /** A full read of the prefix succeeded; the watch follows from its revision. */
  | { kind: "synced"; target: string; revision: string; members: number; reconnected: boolean }
  /** etcd could not be read or the watch broke; routing keeps the last-known members meanwhile. */
  | { kind: "unavailable"; target: string; error: string; retryInMs: number }
  /** A key under the prefix whose value is not a member record; it is left out. */
  | { kind: "bad-member"; target: string; key: string; error: string };

export interface EtcdDiscoveryOptions {
  readonly target: EtcdTarget;
  /** Deadline of each unary etcd call (the read of the prefix). Default 3000 ms. */
  readonly callTimeoutMs?: number;
  /** Pause between attempts while etcd is unreachable. Default 200 ms growing ×1.6 to 5 s, ±20 %. */
  readonly backoff?: BackoffOptions;
  readonly random?: Random;
  readonly onEvent?: (event: EtcdDiscoveryEvent) => void;
}

const defaultEtcdBackoff: BackoffOptions = { initialMs: 200, maxMs: 5_000, multiplier: 1.6, jitter: 0.2 };

/** One item of the queue between the watcher's events and the generator. */

/**
 * Membership from an etcd prefix (see etcd-target.ts for the key layout).
 *
 * Each `watch` reads the whole prefix (yielding a `reset`), then watches the prefix from the read's
 * revision + 1, so no change between the read and the watch is missed, and yields a `reset` of the
 * whole membership after each batch of changes (a watch response). Members are keyed by address: two
 * keys naming one address are one endpoint, present while either key is.
 *
 * Outages: when the read fails or the watch stream breaks (etcd down, compacted revision, a
 * cancelled watch), nothing is yielded — the channel keeps routing to the last-known members — and
 * after a backoff step (core/backoff.ts) the prefix is read again in full (reconciling whatever changed
 * meanwhile: a member that left during the outage is dropped then) and watched from that revision.
 * The generator itself never throws; it ends when `signal` aborts.
 */
export class EtcdDiscovery implements Discovery {
  readonly #o: EtcdDiscoveryOptions;
  readonly #client: Etcd3;
  readonly #name: string;

  constructor(o: EtcdDiscoveryOptions) {
    this.#o = o;
    this.#name = formatEtcdTarget(o.target);
    this.#client = createEtcdClient(o.target.hosts, o.callTimeoutMs ?? 3000);
  }

  /** Closes the etcd connection; watches end at their next step. */
  close(): void {
    this.#client.close();
  }

  async *watch(_target: string, signal: AbortSignal): AsyncIterable<DiscoveryUpdate> {
    const prefix = `${this.#o.target.prefix}/`;
    const random = this.#o.random ?? { next: () => Math.random() };
    const backoff = new Backoff(random, this.#o.backoff ?? defaultEtcdBackoff);
    /** etcd key → endpoint, the membership as last read. */
    let members = new Map<string, Endpoint>();
    let reconnected = false;
    while (!signal.aborted) {
      try {
        const read = await this.#client.getAll().prefix(prefix).exec();
        if (signal.aborted) return;
        members = new Map();
        for (const kv of read.kvs) this.#put(members, kv);
        const revision = BigInt(read.header.revision);
        this.#o.onEvent?.({
          kind: "synced",
          target: this.#name,
          revision: String(revision),
          members: members.size,
          reconnected,
        });
        yield { kind: "reset", endpoints: byAddress(members) };
        backoff.reset();
        const watcher = this.#client
          .watch()
          .prefix(prefix)
          .startRevision(String(revision + 1n))
          .watcher();
        for await (const response of watchResponses(watcher, signal)) {
          const next = new Map(members);
          for (const event of response.events) {
            if (event.type === "Put") this.#put(next, event.kv);
            else next.delete(event.kv.key.toString());
          }
          members = next;
          yield { kind: "reset", endpoints: byAddress(members) };
        }
      } catch (err) {
        if (signal.aborted) return;
        const retryInMs = Math.round(backoff.next());
        this.#o.onEvent?.({
          kind: "unavailable",
          target: this.#name,
          error: (err as Error).message,
          retryInMs,
        });
        reconnected = true;
        await sleep(retryInMs, signal);
      }
    }
  }

  #put(members: Map<string, Endpoint>, kv: IKeyValue): void {
    const key = kv.key.toString();
    const decoded = decodeMember(kv.value.toString());
    if (typeof decoded === "string") {
      members.delete(key);
      this.#o.onEvent?.({ kind: "bad-member", target: this.#name, key, error: decoded });
      return;
    }
    members.set(key, decoded);
  }
}

/** One endpoint per address (the key read last wins), in key order so resets are stable. */
function byAddress(members: ReadonlyMap<string, Endpoint>): Endpoint[] {
  const out = new Map<string, Endpoint>();
  for (const key of [...members.keys()].sort()) {
    const e = members.get(key)!;
    out.set(e.key, e);
  }
  return [...out.values()];
}
