import { type Address, type Endpoint, formatAddress, parseAddress } from "../core/endpoint.ts";
import { ConfigError } from "../core/errors.ts";

/**
 * Where a membership lives in etcd: the servers and the key prefix. Each member is one key
 * `PREFIX/<address>` whose value is a {@link MemberRecord} as JSON, attached to its registrant's lease.
 */
export interface EtcdTarget {
  /** etcd client URLs ("http://127.0.0.1:2379"). */
  readonly hosts: readonly string[];
  /** Without a trailing "/"; never empty. */
  readonly prefix: string;
}

/** The value of a member's key. */
export interface MemberRecord {
  readonly address: string;
  readonly weight: number;
  readonly labels: Readonly<Record<string, string>>;
  /** Free text naming what the registrant runs (its release), shown in /status as a label. */
  readonly version: string;
}

/** "HOST:PORT" or "HOST:PORT,HOST:PORT" (or full http:// URLs) → client URLs; errors name `field`. */
export function parseEtcdHosts(text: string, field: string): string[] {
  const hosts = text
    .split(",")
    .map((h) => h.trim())
    .filter((h) => h !== "");
  if (hosts.length === 0) throw new ConfigError(field, "needs at least one etcd HOST:PORT");
  return hosts.map((h) => {
    if (h.startsWith("https://"))
      throw new ConfigError(field, `"${h}": TLS to etcd is not supported yet; use http://`);
    const bare = h.startsWith("http://") ? h.slice("http://".length) : h;
    const a = parseAddress(bare, field);
    if (a.kind !== "tcp") throw new ConfigError(field, `"${h}": etcd is reached over TCP (HOST:PORT)`);
    return `http://${formatAddress(a)}`;
  });
}

/** A prefix as given, checked; trailing slashes dropped. */
export function parsePrefix(text: string, field: string): string {
  const prefix = text.replace(/\/+$/, "");
  if (prefix === "") throw new ConfigError(field, "the etcd key prefix is empty");
  if (/\s/.test(prefix)) throw new ConfigError(field, `"${text}": the etcd key prefix contains whitespace`);
  return prefix;
}

/**
 * `etcd://HOST:PORT[,HOST:PORT…]/PREFIX` → target. The prefix is everything after the first "/"
 * following the hosts (so `etcd://h:2379//x` has the prefix "/x"). Errors are ConfigErrors naming `field`.
 */
export function parseEtcdUrl(text: string, field: string): EtcdTarget {
  const scheme = "etcd://";
  if (!text.startsWith(scheme)) throw new ConfigError(field, `"${text}" is not etcd://HOST:PORT/PREFIX`);
  const rest = text.slice(scheme.length);
  const slash = rest.indexOf("/");
  if (slash < 0) throw new ConfigError(field, `"${text}" has no key prefix: write etcd://HOST:PORT/PREFIX`);
  const hostsText = rest.slice(0, slash);
  if (hostsText === "") throw new ConfigError(field, `"${text}" names no etcd host`);
  return {
    hosts: parseEtcdHosts(hostsText, field),
    prefix: parsePrefix(rest.slice(slash + 1), field),
  };
}

/** The URL form of a target (logs, /status, comparing configs). */
export function formatEtcdTarget(t: EtcdTarget): string {
  return `etcd://${t.hosts.map((h) => h.replace(/^http:\/\//, "")).join(",")}/${t.prefix}`;
}

/** A member's key under `prefix`. */
export function memberKey(prefix: string, address: Address): string {
  return `${prefix}/${formatAddress(address)}`;
}

/** The JSON value a registrant writes. */
export function encodeMember(m: MemberRecord): string {
  return JSON.stringify({ address: m.address, weight: m.weight, labels: m.labels, version: m.version });
}

/**
 * A member's value → an endpoint (keyed by its formatted address), or an error message saying what is
 * wrong with it. Values are written by other programs, so everything is checked; `version` becomes the
 * label `version` unless the labels set one.
 */
export function decodeMember(value: string): Endpoint | string {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    return "the value is not JSON";
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return "the value is not a JSON object";
  const r = raw as Record<string, unknown>;
  if (typeof r.address !== "string") return "address: missing or not a string";
  let address: Address;
  try {
    address = parseAddress(r.address, "address");
  } catch (err) {
    return (err as Error).message;
  }
  const weight = r.weight ?? 1;
  if (typeof weight !== "number" || !Number.isFinite(weight) || weight <= 0)
    return "weight: must be a number > 0";
  const labels: Record<string, string> = {};
  if (r.labels !== undefined) {
    if (typeof r.labels !== "object" || r.labels === null || Array.isArray(r.labels))
      return "labels: must be an object of strings";
    for (const [k, v] of Object.entries(r.labels)) {
      if (typeof v !== "string") return `labels.${k}: must be a string`;
      labels[k] = v;
    }
  }
  if (r.version !== undefined && typeof r.version !== "string") return "version: must be a string";
  if (typeof r.version === "string" && r.version !== "" && labels.version === undefined)
    labels.version = r.version;
  return { key: formatAddress(address), address, weight, labels };
}
