import { ConfigError } from "../core/errors.ts";
import type { HeaderLookup } from "./headers.ts";

/**
 * The request classifier of the `resume` policy (DESIGN.md, "Résumé-based affinity"): what makes two
 * calls "the same kind of work" for worker skills. Configured on the cluster (`classifier:`):
 *
 *   { header: "x-tenant" }                           the value of a request header (metadata key)
 *   { authority: true }                              :authority, lower-cased, without a port and a leading "www."
 *   { method: true }                                 the full method, "/pkg.Service/Method"
 *   { regex: "^/pkg\\.(?<class>\\w+)/", from: "method" | "authority" | "header:NAME" }
 *                                                    the named group `class` of a match (no match: no class)
 *
 * A call without a class (header absent, no match) gets the class "" — one class for all of them.
 * Classes are cut to MAX_CLASS_LENGTH characters so a client cannot grow the workers' skill tables
 * with huge names, and must be valid header values (anything else becomes "").
 */
export type ClassifierConfig =
  | { readonly header: string }
  | { readonly authority: true }
  | { readonly method: true }
  | { readonly regex: string; readonly from: string };

/** Computes a call's class from its request headers. */
export type Classifier = (header: HeaderLookup) => string;

export const MAX_CLASS_LENGTH = 128;

type Source = (header: HeaderLookup) => string | undefined;

function headerSource(name: string): Source {
  const key = name.toLowerCase();
  return (header) => header(key);
}

const authoritySource: Source = (header) => {
  const raw = header(":authority") ?? header("host");
  if (raw === undefined) return undefined;
  // Strip a port (not inside an IPv6 literal's brackets) and a leading "www.".
  const host = raw.toLowerCase().replace(/:\d+$/, "");
  return host.startsWith("www.") ? host.slice(4) : host;
};

const methodSource: Source = (header) => header(":path");

/** Printable ASCII without control characters: always a valid HTTP/2 header value. */
const SAFE = /^[\x20-\x7e]*$/;

function finish(value: string | undefined): string {
  if (value === undefined) return "";
  const cut = value.length > MAX_CLASS_LENGTH ? value.slice(0, MAX_CLASS_LENGTH) : value;
  return SAFE.test(cut) ? cut.trim() : "";
}

function sourceOf(from: string, where: string): Source {
  if (from === "method") return methodSource;
  if (from === "authority") return authoritySource;
  if (from.startsWith("header:") && from.length > "header:".length) return headerSource(from.slice(7));
  throw new ConfigError(
    `${where}.from`,
    `must be "method", "authority" or "header:NAME", got ${JSON.stringify(from)}`,
  );
}

/** Validates a raw `classifier:` setting. Throws ConfigError naming `where` and the field. */
export function parseClassifierConfig(raw: unknown, where: string): ClassifierConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(
      where,
      "must be { header }, { authority: true }, { method: true } or { regex, from }",
    );
  }
  const r = raw as Record<string, unknown>;
  const keys = Object.keys(r).sort().join(",");
  if (keys === "header") {
    if (typeof r.header !== "string" || !/^[a-z0-9_.-]+$/i.test(r.header)) {
      throw new ConfigError(`${where}.header`, "must be a header name (letters, digits, - _ .)");
    }
    return { header: r.header.toLowerCase() };
  }
  if (keys === "authority") {
    if (r.authority !== true) throw new ConfigError(`${where}.authority`, "must be true");
    return { authority: true };
  }
  if (keys === "method") {
    if (r.method !== true) throw new ConfigError(`${where}.method`, "must be true");
    return { method: true };
  }
  if (keys === "from,regex") {
    if (typeof r.regex !== "string") throw new ConfigError(`${where}.regex`, "must be a string");
    if (typeof r.from !== "string") throw new ConfigError(`${where}.from`, "must be a string");
    sourceOf(r.from, where);
    let re: RegExp;
    try {
      re = new RegExp(r.regex);
    } catch (err) {
      throw new ConfigError(`${where}.regex`, `is not a valid regular expression: ${(err as Error).message}`);
    }
    if (!/\(\?<class>/.test(re.source)) {
      throw new ConfigError(`${where}.regex`, "needs a named group (?<class>...)");
    }
    return { regex: r.regex, from: r.from };
  }
  throw new ConfigError(
    where,
    `must have exactly one of header, authority, method, or both regex and from; got ${keys || "nothing"}`,
  );
}

/** The classifier for a validated config. */
export function createClassifier(config: ClassifierConfig): Classifier {
  if ("header" in config) {
    const source = headerSource(config.header);
    return (headers) => finish(source(headers));
  }
  if ("authority" in config) return (headers) => finish(authoritySource(headers));
  if ("method" in config) return (headers) => finish(methodSource(headers));
  const source = sourceOf(config.from, "classifier");
  const re = new RegExp(config.regex);
  return (headers) => {
    const text = source(headers);
    if (text === undefined) return "";
    return finish(re.exec(text)?.groups?.class);
  };
}
