import type * as grpc from "@grpc/grpc-js";
import type { experimental } from "@grpc/grpc-js";
import { type Address, parseAddress } from "../../core/endpoint.ts";
import { ConfigError } from "../../core/errors.ts";

/**
 * The `roster:` resolver: a static list of backends in the target itself,
 *
 *     roster:///10.0.0.1:50051,10.0.0.2:50051,[::1]:50051,unix:/run/w1.sock
 *
 * each entry as `roster lb`'s static backends are written (core `parseAddress`: HOST:PORT, [V6]:PORT,
 * unix:PATH). One endpoint per entry, duplicates dropped. The list is answered once (until grpc-js
 * destroys the resolver of an idle channel and asks again); re-resolution requests are ignored. A host name is
 * looked up by the socket connect of each connection, not here; for DNS-driven lists use grpc-js's
 * `dns:` resolver. A bad list fails the channel's calls with UNAVAILABLE naming the entry.
 */
export const ROSTER_SCHEME = "roster";

/** Most entries in one target (a typo should not make a million subchannels). */
export const MAX_TARGET_ENTRIES = 1000;

/** The addresses of a `roster:` target's path ("a:1,b:2"); throws ConfigError naming the entry. */
export function parseStaticTarget(path: string): Address[] {
  const entries = path.split(",").map((s) => s.trim());
  if (entries.length === 1 && entries[0] === "") {
    throw new ConfigError("target", "lists no backends: write roster:///HOST:PORT,HOST:PORT or unix:PATH");
  }
  if (entries.length > MAX_TARGET_ENTRIES) {
    throw new ConfigError("target", `lists ${entries.length} backends; at most ${MAX_TARGET_ENTRIES}`);
  }
  return entries.map((entry, i) => {
    if (entry === "") throw new ConfigError(`target[${i}]`, "is empty (two commas in a row?)");
    return parseAddress(entry, `target[${i}]`);
  });
}

function subchannelAddress(a: Address): experimental.SubchannelAddress {
  return a.kind === "unix" ? { path: a.path } : { host: a.host, port: a.port };
}

function addressKey(a: Address): string {
  return a.kind === "unix" ? `unix:${a.path}` : `${a.host}\u0000${a.port}`;
}

/** The resolver class for `registerResolver(ROSTER_SCHEME, …)`, bound to the caller's grpc-js. */
export function staticResolverClass(g: typeof grpc) {
  return class RosterStaticResolver implements experimental.Resolver {
    readonly #listener: experimental.ResolverListener;
    readonly #result: { ok: true; value: experimental.Endpoint[] } | { ok: false; error: grpc.StatusObject };
    #answered = false;
    /** Bumped by destroy(): an answer scheduled before it is dropped. grpc-js reuses a destroyed
     * resolver when an idle channel wakes up (resolving-load-balancer.ts), so destroy is not final. */
    #generation = 0;

    constructor(
      target: experimental.GrpcUri,
      listener: experimental.ResolverListener,
      _options: grpc.ChannelOptions,
    ) {
      this.#listener = listener;
      try {
        const seen = new Set<string>();
        const endpoints: experimental.Endpoint[] = [];
        for (const address of parseStaticTarget(target.path)) {
          const key = addressKey(address);
          if (seen.has(key)) continue;
          seen.add(key);
          endpoints.push({ addresses: [subchannelAddress(address)] });
        }
        this.#result = { ok: true, value: endpoints };
      } catch (err) {
        this.#result = {
          ok: false,
          error: {
            code: g.status.UNAVAILABLE,
            details: `roster resolver: ${(err as Error).message}`,
            metadata: new g.Metadata(),
          },
        };
      }
    }

    updateResolution(): void {
      // Answered once, asynchronously, as grpc-js's ipv4/ipv6 resolvers do: the list cannot change, and
      // answering every re-resolution request (grpc-js asks whenever a connection drops) would make a
      // nextTick loop of resolve → update → reconnect → re-resolve that starves the timers.
      if (this.#answered) return;
      this.#answered = true;
      const generation = this.#generation;
      process.nextTick(() => {
        if (generation === this.#generation) this.#listener(this.#result, {}, null, "");
      });
    }

    destroy(): void {
      this.#generation++;
      this.#answered = false;
    }

    static getDefaultAuthority(target: experimental.GrpcUri): string {
      const first = target.path.split(",")[0]?.trim() ?? "";
      return first === "" || first.startsWith("unix:") ? "localhost" : first;
    }
  };
}
