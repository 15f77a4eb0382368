import type * as grpc from "@grpc/grpc-js";
import type { experimental } from "@grpc/grpc-js";
import type { Address } from "../../core/endpoint.ts";
import type { EtcdDiscovery } from "../../discovery/etcd.ts";
import { type EtcdTarget, parseEtcdUrl } from "../../discovery/etcd-target.ts";

/**
 * The `etcd:` resolver: a grpc-js channel whose endpoints are the members under an etcd prefix, as
 * `roster lb --discovery` follows them (discovery/etcd.ts):
 *
 *     etcd://10.0.0.5:2379/services/echo        (several etcd servers: etcd://h1:2379,h2:2379/PREFIX)
 *
 * Members registered by `roster serve --etcd` or `roster register` appear and leave as their keys do;
 * each change is pushed to the channel (no polling, no re-resolution needed). While etcd is unreachable
 * the channel keeps the last members; on etcd's return the prefix is read again. The etcd client is
 * loaded on first use (an application that never names an etcd: target does not load it). A bad target
 * fails the channel's calls with UNAVAILABLE naming the problem.
 */
export const ETCD_SCHEME = "etcd";

function subchannelAddress(a: Address): experimental.SubchannelAddress {
  return a.kind === "unix" ? { path: a.path } : { host: a.host, port: a.port };
}

/** The resolver class for `registerResolver(ETCD_SCHEME, …)`, bound to the caller's grpc-js. */
export function etcdResolverClass(g: typeof grpc) {
  return class RosterEtcdResolver implements experimental.Resolver {
    readonly #listener: experimental.ResolverListener;
    readonly #target: EtcdTarget | grpc.StatusObject;
    /** The running watch; undefined before the first updateResolution and after destroy. */
    #watch: { abort: AbortController; discovery: Promise<EtcdDiscovery> } | undefined;

    constructor(
      target: experimental.GrpcUri,
      listener: experimental.ResolverListener,
      _options: grpc.ChannelOptions,
    ) {
      this.#listener = listener;
      try {
        // The target as written: grpc-js splits "etcd://A/P" into authority A and path P.
        const text =
          target.authority === undefined
            ? `etcd:${target.path}`
            : `etcd://${target.authority}/${target.path}`;
        this.#target = parseEtcdUrl(text, "target");
      } catch (err) {
        this.#target = {
          code: g.status.UNAVAILABLE,
          details: `roster etcd resolver: ${(err as Error).message}`,
          metadata: new g.Metadata(),
        };
      }
    }

    updateResolution(): void {
      // One watch per resolver: it pushes every change, so grpc-js's re-resolution requests (made when a
      // connection drops) need no answer of their own.
      if (this.#watch !== undefined) return;
      const target = this.#target;
      if (!("hosts" in target)) {
        process.nextTick(() => this.#listener({ ok: false, error: target }, {}, null, ""));
        this.#watch = { abort: new AbortController(), discovery: Promise.reject(new Error("bad target")) };
        this.#watch.discovery.catch(() => {});
        return;
      }
      const abort = new AbortController();
      const discovery = import("../../discovery/etcd.ts").then(
        ({ EtcdDiscovery }) => new EtcdDiscovery({ target }),
      );
      this.#watch = { abort, discovery };
      void discovery.then(async (d) => {
        // Bounded by the abort signal (destroy()).
        for await (const update of d.watch("", abort.signal)) {
          if (abort.signal.aborted) break;
          if (update.kind !== "reset") continue;
          const endpoints = update.endpoints.map((e) => ({ addresses: [subchannelAddress(e.address)] }));
          this.#listener({ ok: true, value: endpoints }, {}, null, "");
        }
      });
    }

    destroy(): void {
      // grpc-js may call updateResolution again on a destroyed resolver (an idle channel waking up):
      // that starts a new watch, whose first answer is a full read.
      const w = this.#watch;
      this.#watch = undefined;
      if (w === undefined) return;
      w.abort.abort();
      void w.discovery.then(
        (d) => d.close(),
        () => {},
      );
    }

    static getDefaultAuthority(target: experimental.GrpcUri): string {
      // The last segment of the prefix names the service ("services/echo" → "echo").
      const segments = target.path.split("/").filter((s) => s !== "");
      return segments.at(-1) ?? "localhost";
    }
  };
}
