import type { Etcd3, Lease } from "etcd3";
import { Backoff, type BackoffOptions } from "../core/backoff.ts";
import { type Address, formatAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { createEtcdClient, sleep } from "./etcd-client.ts";
import { type EtcdTarget, encodeMember, formatEtcdTarget, memberKey } from "./etcd-target.ts";

/** What a registration tells its owner (for logs). */
export type EtcdRegistrationEvent =
  | { kind: "registered"; key: string; lease: string; ttlSeconds: number; again: boolean }
  /** Granting the lease or writing the key failed, or the lease was lost; retried after `retryInMs`. */
  | { kind: "unavailable"; key: string; error: string; retryInMs: number }
  | { kind: "deregistered"; key: string }
  | { kind: "deregister-failed"; key: string; error: string };

export interface EtcdRegistrationOptions {
  readonly target: EtcdTarget;
  /** The address balancers connect to. */
  readonly address: Address;
  readonly weight?: number;
  readonly labels?: Readonly<Record<string, string>>;
  /** Free text naming what runs there (a release); default "". */
  readonly version?: string;
  /** Lease TTL in whole seconds (etcd's minimum is about 2). Default 10. */
  readonly ttlSeconds?: number;
  /** Deadline of each unary etcd call. Default 3000 ms. */
  readonly callTimeoutMs?: number;
  /** Pause between attempts while etcd is unreachable. Default 200 ms growing ×1.6 to 5 s. */
  readonly backoff?: BackoffOptions;
  readonly onEvent?: (event: EtcdRegistrationEvent) => void;
}

export const defaultLeaseTtlSeconds = 10;

/** Checks registration settings; errors name the field (flag names, since the CLI is the usual caller). */
export function checkRegistration(o: { weight?: number; ttlSeconds?: number }, field = ""): void {
  const f = (name: string) => (field === "" ? name : `${field}.${name}`);
  if (o.weight !== undefined && !(Number.isFinite(o.weight) && o.weight > 0))
    throw new ConfigError(f("weight"), `must be a number > 0, got ${o.weight}`);
  if (o.ttlSeconds !== undefined && !(Number.isInteger(o.ttlSeconds) && o.ttlSeconds >= 2))
    throw new ConfigError(
      f("ttl"),
      `must be a whole number of seconds >= 2 (etcd's minimum), got ${o.ttlSeconds}`,
    );
}

/**
 * Keeps one member key (`PREFIX/<address>`, etcd-target.ts) in etcd, attached to a lease that the
 * etcd3 client keeps alive (a keepalive every TTL/3). If the process dies the lease expires after its
 * TTL and etcd deletes the key: that is how a dead machine leaves every balancer's membership.
 *
 * Life cycle: `start()` grants a lease and writes the key, retrying with backoff while etcd is
 * unreachable; when the lease is lost (etcd said it expired, e.g. after an outage longer than the TTL,
 * or someone revoked it) a new lease is granted and the key written again, also with backoff.
 * `close()` revokes the lease — the key goes at once — and closes the connection.
 */
export class EtcdRegistration {
  readonly #o: EtcdRegistrationOptions;
  readonly #client: Etcd3;
  readonly #key: string;
  readonly #value: string;
  readonly #abort = new AbortController();
  #lease: Lease | undefined;
  #loop: Promise<void> | undefined;
  #registered = false;
  #firstRegistered: (() => void) | undefined;
  /** Set when the current lease is lost: wakes the loop. */
  #lost: (() => void) | undefined;

  constructor(o: EtcdRegistrationOptions) {
    checkRegistration(o);
    this.#o = o;
    this.#client = createEtcdClient(o.target.hosts, o.callTimeoutMs ?? 3000);
    this.#key = memberKey(o.target.prefix, o.address);
    this.#value = encodeMember({
      address: formatAddress(o.address),
      weight: o.weight ?? 1,
      labels: o.labels ?? {},
      version: o.version ?? "",
    });
  }

  /** The member key this registration keeps. */
  get key(): string {
    return this.#key;
  }

  /** Where it registers, as an etcd:// URL. */
  get target(): string {
    return formatEtcdTarget(this.#o.target);
  }

  /** Starts registering; resolves once the key is first written (keeps trying until then, or close()). */
  start(): Promise<void> {
    const first = new Promise<void>((resolve) => {
      this.#firstRegistered = resolve;
    });
    this.#loop ??= this.#run();
    return first;
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    const backoff = new Backoff(
      { next: () => Math.random() },
      this.#o.backoff ?? {
        initialMs: 200,
        maxMs: 5_000,
        multiplier: 1.6,
        jitter: 0.2,
      },
    );
    const ttl = this.#o.ttlSeconds ?? defaultLeaseTtlSeconds;
    let again = false;
    // Bounded by close(): each turn either waits for the lease to be lost or for a backoff step.
    while (!signal.aborted) {
      const lease = this.#client.lease(ttl);
      this.#lease = lease;
      const lost = new Promise<string>((resolve) => {
        this.#lost = () => resolve("closed");
        lease.on("lost", (err) => resolve(err.message));
      });
      try {
        await lease.put(this.#key).value(this.#value);
        if (signal.aborted) break;
        this.#registered = true;
        backoff.reset();
        this.#o.onEvent?.({
          kind: "registered",
          key: this.#key,
          lease: await lease.grant(),
          ttlSeconds: ttl,
          again,
        });
        this.#firstRegistered?.();
        this.#firstRegistered = undefined;
        const why = await lost;
        if (signal.aborted) break;
        this.#registered = false;
        throw new Error(`lease lost: ${why}`);
      } catch (err) {
        if (signal.aborted) break;
        again = true;
        // A lease granted but not usable (the put failed): let it expire on etcd's side.
        lease.release();
        const retryInMs = Math.round(backoff.next());
        this.#o.onEvent?.({
          kind: "unavailable",
          key: this.#key,
          error: (err as Error).message,
          retryInMs,
        });
        await sleep(retryInMs, signal);
      }
    }
  }

  /** True while the key is believed written (between a successful write and a lost lease or close). */
  registered(): boolean {
    return this.#registered;
  }

  /**
   * Deregisters: revokes the lease (etcd deletes the key at once; balancers see it within their
   * watch's latency) and closes the client. Waits at most `timeoutMs` for etcd; if etcd cannot be
   * reached the key goes when the lease expires. Idempotent.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.#abort.signal.aborted) return;
    this.#abort.abort();
    this.#lost?.();
    this.#firstRegistered?.();
    const lease = this.#lease;
    try {
      if (lease !== undefined && this.#registered) await lease.revoke({ deadline: Date.now() + timeoutMs });
      this.#o.onEvent?.({ kind: "deregistered", key: this.#key });
    } catch (err) {
      lease?.release();
      this.#o.onEvent?.({ kind: "deregister-failed", key: this.#key, error: (err as Error).message });
    } finally {
      this.#registered = false;
      await this.#loop?.catch(() => {});
      this.#client.close();
    }
  }
}
