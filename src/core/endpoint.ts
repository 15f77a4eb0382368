import { ConfigError } from "./errors.ts";

/** Where a backend listens: a TCP host and port, or a unix socket path. */
export type Address = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** One backend as discovery reports it. `key` is unique within a target and stable across updates. */
export interface Endpoint {
  readonly key: string;
  readonly address: Address;
  /** Relative weight, > 0. Policies that ignore weights say so. */
  readonly weight: number;
  readonly labels: Readonly<Record<string, string>>;
}

/** "127.0.0.1:50051", "[::1]:50051" or "unix:/run/x.sock". */
export function formatAddress(a: Address): string {
  if (a.kind === "unix") return `unix:${a.path}`;
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Parses "HOST:PORT", "[V6]:PORT", "unix:PATH" or "unix://PATH". Throws ConfigError naming `field`.
 */
export function parseAddress(text: string, field: string): Address {
  const s = text.trim();
  if (s.startsWith("unix:")) {
    const path = s.startsWith("unix://") ? s.slice("unix://".length) : s.slice("unix:".length);
    if (path === "") throw new ConfigError(field, `"${text}" has an empty unix socket path`);
    return { kind: "unix", path };
  }
  let host: string;
  let portText: string;
  if (s.startsWith("[")) {
    const end = s.indexOf("]");
    if (end < 0 || s[end + 1] !== ":") throw new ConfigError(field, `"${text}" is not [IPV6]:PORT`);
    host = s.slice(1, end);
    portText = s.slice(end + 2);
  } else {
    const colon = s.lastIndexOf(":");
    if (colon <= 0) throw new ConfigError(field, `"${text}" is not HOST:PORT or unix:PATH`);
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(":")) throw new ConfigError(field, `"${text}": write IPv6 hosts as [HOST]:PORT`);
  }
  if (!/^\d{1,5}$/.test(portText)) throw new ConfigError(field, `"${text}" has no valid port`);
  const port = Number(portText);
  if (port > 65535) throw new ConfigError(field, `"${text}": port ${port} is above 65535`);
  if (host === "") throw new ConfigError(field, `"${text}" has an empty host`);
  return { kind: "tcp", host, port };
}

/** An endpoint for a static address; its key is the formatted address. */
export function staticEndpoint(address: Address, weight = 1): Endpoint {
  return { key: formatAddress(address), address, weight, labels: {} };
}
