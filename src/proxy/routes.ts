import { ConfigError } from "../core/errors.ts";
import { Status, type StatusCode } from "../core/status.ts";
import type { HeaderLookup } from "./headers.ts";

/**
 * Routes of `roster lb` (docs/configuration.md, "Routes and clusters"): which named cluster a call
 * goes to, from its method (`:path`) and request headers (metadata). Routes are tried in order and the
 * first that matches wins; none → the default cluster, or a status (`noRoute`).
 *
 *   match: { service: pkg.Svc }                       :path starts with "/pkg.Svc/"
 *   match: { methodPrefix: /pkg.Svc/Get }             :path starts with it
 *   match: { header: x-upstream }                     the header is present
 *   match: { header: x-upstream, exact | prefix | regex: "…" }   its value equals / starts with / matches
 *   several conditions in one match                  all must hold; `match: {}` matches every call
 *   cluster: NAME                                     the cluster it goes to, or
 *   clusterFromHeader: true                           the cluster named by match.header's value (nginx's
 *                                                     `grpc_pass $http_x_upstream`), restricted to the
 *                                                     configured clusters: another value does not match
 *
 * Parsing (`parseRouting`) validates everything and names the field; `createRouter` compiles the
 * result once per configuration into a table whose `route()` allocates nothing for a routed call and
 * never throws.
 */

/** A request header condition. Names are lower-case, as HTTP/2 carries them; `:authority` works too. */
export type HeaderCondition =
  | { readonly name: string; readonly present: true }
  | { readonly name: string; readonly exact: string }
  | { readonly name: string; readonly prefix: string }
  | { readonly name: string; readonly regex: string };

export interface RouteMatch {
  /** Fully-qualified service, "pkg.Service". */
  readonly service?: string;
  /** Start of the `:path`, "/pkg.Service/Get". */
  readonly methodPrefix?: string;
  readonly header?: HeaderCondition;
}

export type RouteConfig =
  | { readonly match: RouteMatch; readonly cluster: string }
  | { readonly match: RouteMatch; readonly clusterFromHeader: true };

/** The answer to a call no route takes when there is no default cluster. */
export type NoRouteStatus = "unimplemented" | "unavailable";

/** A validated routing configuration (plain data: /status shows it as is). */
export interface RoutingConfig {
  readonly routes: readonly RouteConfig[];
  /** Where calls no route takes go; undefined: they get `noRoute`. */
  readonly defaultCluster: string | undefined;
  readonly noRoute: NoRouteStatus;
}

/** The YAML shape (config.ts checks types and unknown keys first). */
export interface RawRoute {
  match?: {
    service?: string | undefined;
    methodPrefix?: string | undefined;
    header?: string | undefined;
    exact?: string | undefined;
    prefix?: string | undefined;
    regex?: string | undefined;
  };
  cluster?: string | undefined;
  clusterFromHeader?: boolean | undefined;
}

export interface RawRouting {
  routes?: readonly RawRoute[] | undefined;
  defaultCluster?: string | undefined;
  noRoute?: NoRouteStatus | undefined;
}

/** The cluster a configuration has without `clusters:`, made of the top-level settings. */
export const DEFAULT_CLUSTER = "default";

const SERVICE = /^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$/;
const HEADER_NAME = /^:?[a-z0-9_.-]+$/;
/** Cluster names appear in metric labels, log lines and header values. */
export const CLUSTER_NAME = /^[A-Za-z0-9_.-]+$/;

function listOf(names: ReadonlySet<string>): string {
  return names.size === 0 ? "none" : [...names].join(", ");
}

/**
 * Validates `routes`, `defaultCluster` and `noRoute` against the configured cluster names. Throws
 * ConfigError naming `where` and the field (`routes[2].cluster`). `defaultCluster` defaults to
 * "default" when that cluster exists.
 */
export function parseRouting(raw: RawRouting, clusters: ReadonlySet<string>, where: string): RoutingConfig {
  const at = (field: string) => `${where}: ${field}`;
  const routes = (raw.routes ?? []).map((r, i): RouteConfig => {
    const field = `routes[${i}]`;
    const m = r.match ?? {};
    const values = (["exact", "prefix", "regex"] as const).filter((k) => m[k] !== undefined);
    if (values.length > 0 && m.header === undefined) {
      throw new ConfigError(at(`${field}.match.${values[0]}`), "needs match.header (the header to compare)");
    }
    if (values.length > 1) {
      throw new ConfigError(
        at(`${field}.match`),
        `takes one of exact, prefix, regex; got ${values.join(", ")}`,
      );
    }
    const match: { -readonly [K in keyof RouteMatch]: RouteMatch[K] } = {};
    if (m.service !== undefined) {
      if (!SERVICE.test(m.service))
        throw new ConfigError(
          at(`${field}.match.service`),
          `must be a fully-qualified service name like pkg.Service, got ${JSON.stringify(m.service)}`,
        );
      match.service = m.service;
    }
    if (m.methodPrefix !== undefined) {
      if (!m.methodPrefix.startsWith("/") || m.methodPrefix.length < 2)
        throw new ConfigError(
          at(`${field}.match.methodPrefix`),
          `must start with "/" like /pkg.Service/Get, got ${JSON.stringify(m.methodPrefix)}`,
        );
      match.methodPrefix = m.methodPrefix;
    }
    if (m.header !== undefined) {
      const name = m.header.toLowerCase();
      if (!HEADER_NAME.test(name))
        throw new ConfigError(
          at(`${field}.match.header`),
          `must be a header name (letters, digits, - _ .), got ${JSON.stringify(m.header)}`,
        );
      if (m.regex !== undefined) {
        try {
          new RegExp(m.regex);
        } catch (err) {
          throw new ConfigError(
            at(`${field}.match.regex`),
            `is not a valid regular expression: ${(err as Error).message}`,
          );
        }
        match.header = { name, regex: m.regex };
      } else if (m.exact !== undefined) match.header = { name, exact: m.exact };
      else if (m.prefix !== undefined) match.header = { name, prefix: m.prefix };
      else match.header = { name, present: true };
    }
    if (r.cluster !== undefined && r.clusterFromHeader !== undefined) {
      throw new ConfigError(at(field), "has both cluster and clusterFromHeader; a route takes one");
    }
    if (r.clusterFromHeader !== undefined) {
      if (r.clusterFromHeader !== true)
        throw new ConfigError(at(`${field}.clusterFromHeader`), "must be true");
      if (match.header === undefined)
        throw new ConfigError(
          at(`${field}.clusterFromHeader`),
          "needs match.header: the header whose value names the cluster",
        );
      return { match, clusterFromHeader: true };
    }
    if (r.cluster === undefined) {
      throw new ConfigError(at(field), "needs cluster: NAME or clusterFromHeader: true");
    }
    if (!clusters.has(r.cluster)) {
      throw new ConfigError(
        at(`${field}.cluster`),
        `unknown cluster ${JSON.stringify(r.cluster)}; clusters: ${listOf(clusters)}`,
      );
    }
    return { match, cluster: r.cluster };
  });
  if (raw.defaultCluster !== undefined && !clusters.has(raw.defaultCluster)) {
    throw new ConfigError(
      at("defaultCluster"),
      `unknown cluster ${JSON.stringify(raw.defaultCluster)}; clusters: ${listOf(clusters)}`,
    );
  }
  return {
    routes,
    defaultCluster: raw.defaultCluster ?? (clusters.has(DEFAULT_CLUSTER) ? DEFAULT_CLUSTER : undefined),
    noRoute: raw.noRoute ?? "unimplemented",
  };
}

export type RouteResult<T> =
  | {
      readonly kind: "cluster";
      readonly cluster: string;
      readonly target: T;
      /** The index of the route taken, or -1 for the default cluster. */
      readonly route: number;
    }
  | { readonly kind: "none"; readonly code: StatusCode; readonly message: string };

export type RequestHeaders = Readonly<Record<string, string | string[] | undefined>>;

/** A compiled route table. Immutable: a new configuration makes a new router. */
export interface Router<T> {
  /** The cluster of a call. Synchronous, total, never throws; no allocation unless nothing matches. */
  route(path: string, header: HeaderLookup): RouteResult<T>;
}

type Result<T> = Extract<RouteResult<T>, { kind: "cluster" }>;

interface CompiledRoute<T> {
  readonly pathPrefix: string | undefined;
  readonly methodPrefix: string | undefined;
  readonly header: string | undefined;
  readonly test: ((value: string) => boolean) | undefined;
  /** Fixed cluster; undefined for clusterFromHeader routes, which look the value up in `byName`. */
  readonly result: Result<T> | undefined;
  readonly byName: ReadonlyMap<string, Result<T>> | undefined;
}

const MAX_ECHOED = 100;

/** A client-supplied text cut for a status message. */
function echo(text: string): string {
  return JSON.stringify(text.length > MAX_ECHOED ? `${text.slice(0, MAX_ECHOED)}…` : text);
}

/** "service=pkg.A header x-upstream=\"b\" → b", for messages and /status. */
export function describeRoute(r: RouteConfig): string {
  const parts: string[] = [];
  if (r.match.service !== undefined) parts.push(`service ${r.match.service}`);
  if (r.match.methodPrefix !== undefined) parts.push(`method ${r.match.methodPrefix}*`);
  const h = r.match.header;
  if (h !== undefined) {
    if ("exact" in h) parts.push(`${h.name}=${JSON.stringify(h.exact)}`);
    else if ("prefix" in h) parts.push(`${h.name}=${JSON.stringify(h.prefix)}*`);
    else if ("regex" in h) parts.push(`${h.name}~/${h.regex}/`);
    else parts.push(`${h.name} present`);
  }
  const what = parts.length === 0 ? "every call" : parts.join(" and ");
  return "cluster" in r ? `${what} → ${r.cluster}` : `${what} → the cluster named by ${h?.name}`;
}

/**
 * Compiles `config` against the running clusters (`targets`, by name; every cluster the config names
 * must be there). Regular expressions are compiled here, once.
 */
export function createRouter<T>(config: RoutingConfig, targets: ReadonlyMap<string, T>): Router<T> {
  const resultOf = (cluster: string, route: number): Result<T> => {
    const target = targets.get(cluster);
    if (target === undefined) throw new Error(`route table: cluster ${cluster} is not running`);
    return { kind: "cluster", cluster, target, route };
  };
  const routes = config.routes.map((r, i): CompiledRoute<T> => {
    const h = r.match.header;
    let test: ((value: string) => boolean) | undefined;
    if (h !== undefined) {
      if ("exact" in h) {
        const v = h.exact;
        test = (value) => value === v;
      } else if ("prefix" in h) {
        const v = h.prefix;
        test = (value) => value.startsWith(v);
      } else if ("regex" in h) {
        const re = new RegExp(h.regex);
        test = (value) => re.test(value);
      }
    }
    return {
      pathPrefix: r.match.service === undefined ? undefined : `/${r.match.service}/`,
      methodPrefix: r.match.methodPrefix,
      header: h?.name,
      test,
      result: "cluster" in r ? resultOf(r.cluster, i) : undefined,
      byName:
        "cluster" in r ? undefined : new Map([...targets.keys()].map((name) => [name, resultOf(name, i)])),
    };
  });
  const fallback = config.defaultCluster === undefined ? undefined : resultOf(config.defaultCluster, -1);
  const code = config.noRoute === "unavailable" ? Status.UNAVAILABLE : Status.UNIMPLEMENTED;
  const tried =
    config.routes.length === 0
      ? "no routes are configured"
      : `tried ${config.routes
          .map((r, i) => `routes[${i}] (${describeRoute(r)})`)
          .join(", ")
          .slice(0, 1000)}`;
  const clusterNames = [...targets.keys()].join(", ");

  return {
    route(path, header) {
      // Bounded by the number of routes.
      let unknown: string | undefined;
      for (const r of routes) {
        if (r.pathPrefix !== undefined && !path.startsWith(r.pathPrefix)) continue;
        if (r.methodPrefix !== undefined && !path.startsWith(r.methodPrefix)) continue;
        let value: string | undefined;
        if (r.header !== undefined) {
          value = header(r.header);
          if (value === undefined) continue;
          if (r.test !== undefined && !r.test(value)) continue;
        }
        if (r.result !== undefined) return r.result;
        const named = r.byName!.get(value!);
        if (named !== undefined) return named;
        unknown ??= `${r.header} ${echo(value!)} is not a cluster (clusters: ${clusterNames})`;
      }
      if (fallback !== undefined) return fallback;
      return {
        kind: "none",
        code,
        message: `roster: no route for ${echo(path)}: ${tried}${unknown !== undefined ? `; ${unknown}` : ""}; no default cluster`,
      };
    },
  };
}
