import { createHash } from "node:crypto";
import { existsSync, renameSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Piscina } from "piscina";
import { fail } from "./messages.ts";

/**
 * CPU offload: runs CPU-heavy work from a handler on a pool of worker threads (piscina), so the
 * process's event loop keeps answering other calls, health checks and keepalive pings while it runs.
 *
 *   // tasks.ts — runs in the worker threads; each export is a task
 *   export function resize({ image, width }) { … return bytes; }
 *
 *   // service.ts
 *   const pool = createOffloadPool({ filename: new URL("./tasks.ts", import.meta.url) });
 *   handlers: { async Resize(call) { return { image: await pool.run("resize", call.request, { call }) }; } }
 *
 * A task is cancelled with its call: a queued one leaves the queue, a running one has its thread
 * terminated (JavaScript cannot be interrupted any other way; piscina starts a new thread). The queue
 * is bounded: past `maxQueue` waiting tasks a run fails at once with RESOURCE_EXHAUSTED, so a burst
 * does not pile up work whose callers have given up.
 */

export interface OffloadOptions {
  /** The module whose exports are the tasks (a URL or a path). */
  readonly filename: string | URL;
  /** Threads (default: cores − 1, at least 1; roster serve already runs a process per core). */
  readonly threads?: number;
  /** Tasks waiting for a thread before runs are refused (default: 4 × threads). */
  readonly maxQueue?: number;
  /** A thread idle this long is stopped, ms (default 30 s); `threads` are started at once. */
  readonly idleTimeoutMs?: number;
}

export interface OffloadStats {
  readonly threads: number;
  /** Tasks running or waiting (at most threads + maxQueue). */
  readonly running: number;
  readonly queued: number;
  /** Tasks that returned a value. */
  readonly completed: number;
  readonly cancelled: number;
  readonly refused: number;
}

export interface RunOffloadOptions {
  /** Cancel the task when this grpc-js server call is cancelled. */
  readonly call?: { readonly cancelled: boolean } & NodeJS.EventEmitter;
  readonly signal?: AbortSignal;
}

export interface OffloadPool {
  /** Runs task `name` (an export of the tasks module) with `input` (structured-cloned to the thread). */
  run<T = unknown>(name: string, input: unknown, options?: RunOffloadOptions): Promise<T>;
  stats(): OffloadStats;
  /** Waits for running tasks, then stops the threads. */
  close(): Promise<void>;
}

export const defaultOffload = {
  threads: Math.max(1, availableParallelism() - 1),
  queuePerThread: 4,
  idleTimeoutMs: 30_000,
} as const;

function positiveInt(v: number, field: string, min: number): number {
  if (!Number.isInteger(v) || v < min)
    throw new RangeError(`${field}: must be an integer ≥ ${min}, got ${v}`);
  return v;
}

export function createOffloadPool(options: OffloadOptions): OffloadPool {
  const threads = positiveInt(options.threads ?? defaultOffload.threads, "threads", 1);
  const maxQueue = positiveInt(options.maxQueue ?? threads * defaultOffload.queuePerThread, "maxQueue", 0);
  const idleTimeout = positiveInt(options.idleTimeoutMs ?? defaultOffload.idleTimeoutMs, "idleTimeoutMs", 1);
  const url =
    options.filename instanceof URL
      ? options.filename.href
      : options.filename.startsWith("file:")
        ? options.filename
        : pathToFileURL(options.filename).href;
  const path = fileURLToPath(url);
  if (!existsSync(path)) throw new Error(`filename: ${path} does not exist`);
  // TypeScript tasks (run under tsx) go through a bootstrap: worker threads do not inherit tsx's loader.
  const viaBootstrap = /\.[cm]?ts$/.test(path);
  const pool = new Piscina({
    filename: viaBootstrap ? typescriptBootstrap(url) : path,
    minThreads: threads,
    maxThreads: threads,
    maxQueue,
    idleTimeout,
  });
  let running = 0;
  let completed = 0; // ours: piscina counts aborted tasks as completed too
  let cancelled = 0;
  let refused = 0;

  return {
    async run<T>(name: string, input: unknown, o: RunOffloadOptions = {}): Promise<T> {
      const abort = new AbortController();
      const onCancel = () => abort.abort(new Error("call cancelled"));
      const call = o.call;
      if (call?.cancelled || o.signal?.aborted) throw fail(grpc.status.CANCELLED, "cancelled before it ran");
      // The bound is ours: piscina's maxQueue is not applied while its threads are starting.
      if (running >= threads + maxQueue) {
        refused++;
        throw fail(
          grpc.status.RESOURCE_EXHAUSTED,
          `offload queue full (${maxQueue} waiting): task ${name} refused`,
        );
      }
      call?.once("cancelled", onCancel);
      o.signal?.addEventListener("abort", onCancel, { once: true });
      running++;
      try {
        const result = viaBootstrap
          ? pool.run({ task: name, input }, { name: "default", signal: abort.signal })
          : pool.run(input, { name, signal: abort.signal });
        const value = (await result) as T;
        completed++;
        return value;
      } catch (err) {
        const e = err as Error;
        if (abort.signal.aborted) {
          cancelled++;
          throw fail(grpc.status.CANCELLED, `task ${name} cancelled`);
        }
        if (/queue is at limit/i.test(e.message)) {
          refused++;
          throw fail(
            grpc.status.RESOURCE_EXHAUSTED,
            `offload queue full (${maxQueue} waiting): task ${name} refused`,
          );
        }
        throw err;
      } finally {
        running--;
        call?.off("cancelled", onCancel);
        o.signal?.removeEventListener("abort", onCancel);
      }
    },
    stats: () => ({
      threads: pool.threads.length,
      running,
      queued: pool.queueSize,
      completed,
      cancelled,
      refused,
    }),
    close: () => pool.close(),
  };
}

/**
 * A module for piscina's threads that registers tsx's loader and runs the named export of the
 * TypeScript tasks module: Node 20's worker threads start without the main thread's loaders (and
 * `--import tsx` in execArgv does not help for a .ts entry). Written once per tasks file into the
 * temp folder; `tsx` is resolved here, so the bootstrap needs no node_modules of its own.
 */
function typescriptBootstrap(tasksUrl: string): string {
  let tsxApi: string;
  try {
    tsxApi = import.meta.resolve("tsx/esm/api");
  } catch {
    throw new Error(
      `filename: ${tasksUrl} is TypeScript, which needs tsx installed (or compile the tasks to .js)`,
    );
  }
  const text = `// Written by roster/transfer's createOffloadPool: runs TypeScript tasks in a worker thread.
const { register } = await import(${JSON.stringify(tsxApi)});
register();
const tasks = await import(${JSON.stringify(tasksUrl)});
export default function run({ task, input }) {
  const fn = tasks[task];
  if (typeof fn !== "function") throw new Error("no task " + JSON.stringify(task) + " in " + ${JSON.stringify(tasksUrl)});
  return fn(input);
}
`;
  const file = join(
    tmpdir(),
    `roster-offload-${createHash("sha256").update(text).digest("hex").slice(0, 16)}.mjs`,
  );
  if (!existsSync(file)) {
    const partial = `${file}.${process.pid}.tmp`;
    writeFileSync(partial, text);
    renameSync(partial, file);
  }
  return file;
}
