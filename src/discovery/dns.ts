import { lookup } from "node:dns/promises";
import type { Discovery, DiscoveryUpdate } from "../core/discovery.ts";
import { type Address, type Endpoint, formatAddress, parseAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";
import { sleep } from "./etcd-client.ts";

/** A name whose addresses are the members, re-resolved every `refreshMs`. */
export interface DnsTarget {
  readonly host: string;
  readonly port: number;
  readonly refreshMs: number;
}

export const defaultDnsRefreshMs = 30_000;

/**
 * `dns://NAME:PORT` or gRPC's `dns:///NAME:PORT`, with an optional `?refreshMs=N` (≥ 100; default 30 s,
 * gRPC's minimum time between re-resolutions). Errors are ConfigErrors naming `field`.
 */
export function parseDnsUrl(text: string, field: string): DnsTarget {
  let rest = text.slice("dns://".length);
  if (rest.startsWith("/")) rest = rest.slice(1);
  let refreshMs = defaultDnsRefreshMs;
  const q = rest.indexOf("?");
  if (q >= 0) {
    const m = /^refreshMs=(\d+)$/.exec(rest.slice(q + 1));
    if (m === null) throw new ConfigError(field, `"${text}": the only option is ?refreshMs=MILLISECONDS`);
    refreshMs = Number(m[1]);
    if (refreshMs < 100) throw new ConfigError(field, `"${text}": refreshMs must be at least 100`);
    rest = rest.slice(0, q);
  }
  const address = parseAddress(rest, field);
  if (address.kind !== "tcp") throw new ConfigError(field, `"${text}" is not dns://NAME:PORT`);
  return { host: address.host, port: address.port, refreshMs };
}

export function formatDnsTarget(t: DnsTarget): string {
  const name = formatAddress({ kind: "tcp", host: t.host, port: t.port });
  return `dns://${name}${t.refreshMs === defaultDnsRefreshMs ? "" : `?refreshMs=${t.refreshMs}`}`;
}

/** Resolves a name to its addresses (IPv4 and IPv6); the default uses getaddrinfo, as /etc/hosts and nsswitch say. */
export type Resolve = (host: string) => Promise<string[]>;

const systemResolve: Resolve = async (host) => (await lookup(host, { all: true })).map((a) => a.address);

export type DnsDiscoveryEvent =
  | { kind: "resolved"; target: string; addresses: string[] }
  | { kind: "failed"; target: string; error: string; keeping: number };

export interface DnsDiscoveryOptions {
  readonly target: DnsTarget;
  readonly resolve?: Resolve;
  readonly onEvent?: (event: DnsDiscoveryEvent) => void;
}

/**
 * Membership from DNS, for platforms that publish endpoints as a name's A/AAAA records (Kubernetes
 * headless services, Consul's DNS, round-robin records). The name is resolved at once and then every
 * `refreshMs`; each change of the address set yields a `reset`. A failure keeps the last addresses
 * (reported as an event) — except a first answer of "no such name", which is `not-found`, so calls
 * fail saying so instead of waiting. The generator never throws; it ends when `signal` aborts.
 */
export class DnsDiscovery implements Discovery {
  readonly #o: DnsDiscoveryOptions;
  readonly #name: string;

  constructor(o: DnsDiscoveryOptions) {
    this.#o = o;
    this.#name = formatDnsTarget(o.target);
  }

  async *watch(_target: string, signal: AbortSignal): AsyncIterable<DiscoveryUpdate> {
    const resolve = this.#o.resolve ?? systemResolve;
    const { host, port, refreshMs } = this.#o.target;
    let last: string | undefined;
    let kept = 0;
    // Bounded by the abort signal; one resolution per refresh period.
    while (!signal.aborted) {
      try {
        const addresses = [...new Set(await resolve(host))].sort();
        if (signal.aborted) return;
        const key = addresses.join(",");
        if (key !== last) {
          last = key;
          kept = addresses.length;
          this.#o.onEvent?.({ kind: "resolved", target: this.#name, addresses });
          yield { kind: "reset", endpoints: addresses.map((a) => endpointOf(a, port)) };
        }
      } catch (err) {
        if (signal.aborted) return;
        const code = (err as NodeJS.ErrnoException).code;
        this.#o.onEvent?.({
          kind: "failed",
          target: this.#name,
          error: (err as Error).message,
          keeping: kept,
        });
        if (last === undefined && (code === "ENOTFOUND" || code === "ENODATA")) {
          last = "";
          yield { kind: "not-found" };
        }
      }
      await sleep(refreshMs, signal);
    }
  }
}

function endpointOf(ip: string, port: number): Endpoint {
  const address: Address = { kind: "tcp", host: ip, port };
  return { key: formatAddress(address), address, weight: 1, labels: {} };
}
