/**
 * A load-generating child process of `roster bench --workers N` (forked by ./run.ts with an IPC channel).
 *
 * Protocol (parent → child):  { type: "plan", settings, plan }  →  { type: "start", startAt }  →  [{ type: "stop" }]
 *           (child → parent): { type: "ready" } | { type: "progress", progress } | { type: "result", result }
 *                             | { type: "error", field, message }
 * The child ignores SIGINT (Ctrl-C reaches the whole process group; the parent decides) and exits when the
 * parent's IPC channel closes, so it never outlives the run.
 */
import { ConfigError } from "../core/errors.ts";
import { Engine, type EnginePlan, type EngineProgress, type EngineResult } from "./engine.ts";
import type { BenchSettings } from "./options.ts";
import { loadBenchMethod } from "./proto.ts";

export type ToWorker =
  | { type: "plan"; settings: BenchSettings; plan: EnginePlan }
  | { type: "start"; startAt: number }
  | { type: "stop" }
  | { type: "cancel" };

export type FromWorker =
  | { type: "ready" }
  | { type: "progress"; progress: EngineProgress }
  | { type: "result"; result: EngineResult }
  | { type: "error"; field: string | undefined; message: string };

function send(msg: FromWorker): Promise<void> {
  return new Promise((resolve) => {
    if (process.send === undefined) resolve();
    else process.send(msg, undefined, {}, () => resolve());
  });
}

function workerMain(): void {
  let engine: Engine | undefined;
  let ticker: NodeJS.Timeout | undefined;
  const fail = async (err: unknown) => {
    if (ticker !== undefined) clearInterval(ticker);
    const field = err instanceof ConfigError ? err.field : undefined;
    const message = err instanceof ConfigError ? err.detail : ((err as Error).message ?? String(err));
    await send({ type: "error", field, message });
    engine?.close();
    process.exit(1);
  };
  process.on("SIGINT", () => {});
  process.on("disconnect", () => {
    engine?.close();
    process.exit(1);
  });
  process.on("message", (msg: ToWorker) => {
    switch (msg.type) {
      case "plan":
        try {
          const method = loadBenchMethod(msg.settings);
          engine = new Engine(msg.plan, method);
          engine
            .connect(msg.settings.connectTimeoutMs)
            .then(() => send({ type: "ready" }))
            .catch(fail);
        } catch (err) {
          void fail(err);
        }
        break;
      case "start": {
        const e = engine;
        if (e === undefined) return;
        ticker = setInterval(() => void send({ type: "progress", progress: e.progress() }), 200);
        e.run(msg.startAt)
          .then(async (result) => {
            clearInterval(ticker);
            await send({ type: "result", result });
            e.close();
            process.exit(0);
          })
          .catch(fail);
        break;
      }
      case "stop":
        engine?.abort();
        break;
      case "cancel":
        engine?.cancelAll();
        break;
    }
  });
}

if (process.send !== undefined && process.argv.includes("--roster-bench-worker")) workerMain();
