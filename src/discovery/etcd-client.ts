import { noop } from "cockatiel";
import { Etcd3, type IWatchResponse, type Watcher } from "etcd3";

/**
 * An etcd3 client set up for Roster's own reconnection: the library's retry and circuit-breaker
 * policies are off (a breaker that opens for 5 s would delay noticing etcd's return; our loops retry
 * with core/backoff.ts), every unary call has a deadline, and gRPC keepalive notices a silent peer.
 */
export function createEtcdClient(hosts: readonly string[], callTimeoutMs: number): Etcd3 {
  return new Etcd3({
    hosts: [...hosts],
    dialTimeout: callTimeoutMs,
    faultHandling: { host: () => noop, global: noop },
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    grpcOptions: {
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      // Our loops own reconnection pacing; grpc-js's own backoff would stack on top of it.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1_000,
    },
  });
}

/** Resolves after `ms`, or at once when `signal` aborts. The timer does not keep the process alive. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener("abort", done);
  });
}

/**
 * A watcher's responses in order, until `signal` aborts; throws when the stream breaks ("watch broke:
 * …"). Owns the watcher: on the way out its listeners are removed and it is cancelled.
 */
export async function* watchResponses(watcher: Watcher, signal: AbortSignal): AsyncGenerator<IWatchResponse> {
  const queue: Array<IWatchResponse | Error> = [];
  let wake: (() => void) | undefined;
  const push = (item: IWatchResponse | Error) => {
    queue.push(item);
    wake?.();
  };
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  watcher.on("data", push);
  watcher.on("disconnected", push);
  watcher.on("error", push);
  try {
    // Bounded by the abort signal and by the stream breaking.
    while (!signal.aborted) {
      const item = queue.shift();
      if (item === undefined) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
        continue;
      }
      if (item instanceof Error) throw new Error(`watch broke: ${item.message}`);
      yield item;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    watcher.removeAllListeners();
    // Keeps an error of a cancel on a broken stream from surfacing as unhandled.
    watcher.on("error", () => {});
    watcher.cancel().catch(() => {});
  }
}
