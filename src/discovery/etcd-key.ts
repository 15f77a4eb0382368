import type { Etcd3 } from "etcd3";
import { Backoff, type BackoffOptions } from "../core/backoff.ts";
import { ConfigError } from "../core/errors.ts";
import { createEtcdClient, sleep, watchResponses } from "./etcd-client.ts";
import { parseEtcdHosts } from "./etcd-target.ts";

/** One etcd key to follow (live settings). */
export interface EtcdKeyTarget {
  readonly hosts: readonly string[];
  readonly key: string;
}

/** `etcd://HOST:PORT[,HOST:PORT…]/KEY` → target; errors are ConfigErrors naming `field`. */
export function parseEtcdKeyUrl(text: string, field: string): EtcdKeyTarget {
  if (!text.startsWith("etcd://")) throw new ConfigError(field, `"${text}" is not etcd://HOST:PORT/KEY`);
  const rest = text.slice("etcd://".length);
  const slash = rest.indexOf("/");
  if (slash <= 0) throw new ConfigError(field, `"${text}" is not etcd://HOST:PORT/KEY`);
  const key = rest.slice(slash + 1);
  if (key === "") throw new ConfigError(field, `"${text}" names no key`);
  return { hosts: parseEtcdHosts(rest.slice(0, slash), field), key };
}

export function formatEtcdKeyTarget(t: EtcdKeyTarget): string {
  return `etcd://${t.hosts.map((h) => h.replace(/^http:\/\//, "")).join(",")}/${t.key}`;
}

/** A value of the key: its text, or undefined when the key does not exist. */
export interface KeyValue {
  readonly value: string | undefined;
  /** etcd's modification revision of this value ("0" when absent). */
  readonly revision: string;
}

export type EtcdKeyEvent =
  | { kind: "unavailable"; target: string; error: string; retryInMs: number }
  | { kind: "synced"; target: string; reconnected: boolean };

/**
 * Follows one etcd key: reads it, then watches it from that read's revision + 1, yielding each value
 * (the first read too, and again after every reconnection — the owner compares). When etcd is
 * unreachable nothing is yielded (the owner keeps what it has) and the read is retried with backoff,
 * as EtcdDiscovery does for a prefix. The generator never throws; it ends when `signal` aborts.
 */
export class EtcdKeyWatcher {
  readonly #target: EtcdKeyTarget;
  readonly #client: Etcd3;
  readonly #onEvent: ((e: EtcdKeyEvent) => void) | undefined;
  readonly #backoff: BackoffOptions;

  constructor(
    target: EtcdKeyTarget,
    o: { onEvent?: (e: EtcdKeyEvent) => void; backoff?: BackoffOptions; callTimeoutMs?: number } = {},
  ) {
    this.#target = target;
    this.#client = createEtcdClient(target.hosts, o.callTimeoutMs ?? 3000);
    this.#onEvent = o.onEvent;
    this.#backoff = o.backoff ?? { initialMs: 200, maxMs: 5_000, multiplier: 1.6, jitter: 0.2 };
  }

  close(): void {
    this.#client.close();
  }

  async *watch(signal: AbortSignal): AsyncIterable<KeyValue> {
    const name = formatEtcdKeyTarget(this.#target);
    const key = this.#target.key;
    const backoff = new Backoff({ next: () => Math.random() }, this.#backoff);
    let reconnected = false;
    while (!signal.aborted) {
      try {
        const read = await this.#client.get(key).exec();
        if (signal.aborted) return;
        const kv = read.kvs[0];
        this.#onEvent?.({ kind: "synced", target: name, reconnected });
        yield { value: kv?.value.toString(), revision: kv?.mod_revision ?? "0" };
        backoff.reset();
        const watcher = this.#client
          .watch()
          .key(key)
          .startRevision(String(BigInt(read.header.revision) + 1n))
          .watcher();
        for await (const res of watchResponses(watcher, signal)) {
          const last = res.events.at(-1);
          if (last === undefined) continue;
          yield last.type === "Put"
            ? { value: last.kv.value.toString(), revision: last.kv.mod_revision }
            : { value: undefined, revision: last.kv.mod_revision };
        }
      } catch (err) {
        if (signal.aborted) return;
        const retryInMs = Math.round(backoff.next());
        this.#onEvent?.({ kind: "unavailable", target: name, error: (err as Error).message, retryInMs });
        reconnected = true;
        await sleep(retryInMs, signal);
      }
    }
  }
}
