import { ConfigError } from "../core/errors.ts";
import { type DnsTarget, formatDnsTarget, parseDnsUrl } from "./dns.ts";
import { type EtcdTarget, formatEtcdTarget, parseEtcdUrl } from "./etcd-target.ts";

/** Where a cluster's members come from, when not a static list: an etcd prefix or a DNS name. */
export type DiscoveryTarget = ({ kind: "etcd" } & EtcdTarget) | ({ kind: "dns" } & DnsTarget);

/** `etcd://HOST:PORT/PREFIX` or `dns://NAME:PORT`; errors are ConfigErrors naming `field`. */
export function parseDiscoveryUrl(text: string, field: string): DiscoveryTarget {
  if (text.startsWith("etcd://")) return { kind: "etcd", ...parseEtcdUrl(text, field) };
  if (text.startsWith("dns://")) return { kind: "dns", ...parseDnsUrl(text, field) };
  throw new ConfigError(field, `"${text}" is not etcd://HOST:PORT/PREFIX or dns://NAME:PORT`);
}

/** The URL form (logs, /status, comparing configs). */
export function formatDiscoveryTarget(t: DiscoveryTarget): string {
  return t.kind === "etcd" ? formatEtcdTarget(t) : formatDnsTarget(t);
}
