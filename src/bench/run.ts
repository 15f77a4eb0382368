/**
 * Runs a whole benchmark: in this process, or over `--workers N` child processes whose records are merged.
 * Every user-fixable failure (flags, proto, method, unreachable target) is a ConfigError.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../core/errors.ts";
import { Engine, type EngineProgress, type EngineResult, epochNow } from "./engine.ts";
import type { BenchSettings } from "./options.ts";
import { chooseIntervalMs, workerPlan } from "./plan.ts";
import { type CallKind, loadBenchMethod } from "./proto.ts";
import { mergeTargetRecords, type TargetRecord } from "./stats.ts";
import type { FromWorker, ToWorker } from "./worker.ts";

export interface RunProgress {
  readonly measured: number;
  readonly errors: number;
  readonly inFlight: number;
  readonly elapsedMs: number;
  readonly phase: EngineProgress["phase"];
  readonly target: string;
}

/** The generator's own cost in one process. */
export interface ProcessCost {
  readonly cpuMs: number;
  readonly wallMs: number;
  /** cpuMs / wallMs: the share of one core the generator kept busy. */
  readonly cpuShare: number;
}

export interface BenchRun {
  readonly settings: BenchSettings;
  readonly method: {
    readonly path: string;
    readonly kind: CallKind;
    readonly requestType: string;
    readonly responseType: string;
    readonly requestBytes: number;
  };
  readonly startedAt: string;
  readonly intervalMs: number;
  readonly targets: readonly TargetRecord[];
  readonly processes: readonly ProcessCost[];
  /** True when the run was stopped early (Ctrl-C). */
  readonly interrupted: boolean;
}

export interface RunHooks {
  onProgress?(p: RunProgress): void;
  /** Aborting stops starting calls; what was measured is still reported. */
  readonly signal?: AbortSignal;
}

const WORKER_FILE = fileURLToPath(
  new URL(import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js", import.meta.url),
);

function cost(r: EngineResult): ProcessCost {
  return {
    cpuMs: r.cpuMs,
    wallMs: r.wallMs,
    cpuShare: r.wallMs > 0 ? r.cpuMs / r.wallMs : 0,
  };
}

export async function runBenchmark(settings: BenchSettings, hooks: RunHooks = {}): Promise<BenchRun> {
  const method = loadBenchMethod(settings);
  const startedAt = new Date().toISOString();
  const base = {
    settings,
    method: {
      path: method.path,
      kind: method.kind,
      requestType: method.requestType,
      responseType: method.responseType,
      requestBytes: method.request.length,
    },
    startedAt,
    intervalMs: chooseIntervalMs(settings),
  };
  if (hooks.signal?.aborted) throw new ConfigError("", "interrupted before the run started");

  if (settings.workers === 1) {
    const engine = new Engine(workerPlan(settings, 1, 0), method);
    try {
      await engine.connect(settings.connectTimeoutMs);
      const ticker =
        hooks.onProgress === undefined
          ? undefined
          : setInterval(() => hooks.onProgress?.(engine.progress()), 200);
      let cancelTimer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        engine.abort();
        cancelTimer = setTimeout(() => engine.cancelAll(), settings.timeoutMs > 0 ? 1000 : 3000);
      };
      hooks.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        const result = await engine.run(epochNow());
        hooks.onProgress?.(engine.progress());
        return {
          ...base,
          targets: result.targets,
          processes: [cost(result)],
          interrupted: hooks.signal?.aborted ?? false,
        };
      } finally {
        if (ticker !== undefined) clearInterval(ticker);
        if (cancelTimer !== undefined) clearTimeout(cancelTimer);
        hooks.signal?.removeEventListener("abort", onAbort);
      }
    } finally {
      engine.close();
    }
  }

  // Fail fast, with one clear message, before forking anything.
  const probe = new Engine({ ...workerPlan(settings, 1, 0), connections: 1 }, method);
  try {
    await probe.connect(settings.connectTimeoutMs);
  } finally {
    probe.close();
  }
  const results = await runWorkers(settings, hooks);
  return {
    ...base,
    targets: settings.targets.map((_, t) => mergeTargetRecords(results.map((r) => r.targets[t]!))),
    processes: results.map(cost),
    interrupted: hooks.signal?.aborted ?? false,
  };
}

async function runWorkers(settings: BenchSettings, hooks: RunHooks): Promise<EngineResult[]> {
  const n = settings.workers;
  const children: ChildProcess[] = [];
  const progress: (EngineProgress | undefined)[] = new Array(n).fill(undefined);
  const results: (EngineResult | undefined)[] = new Array(n).fill(undefined);
  let ready = 0;
  let started = false;
  let ticker: NodeJS.Timeout | undefined;
  const tell = (msg: ToWorker) => {
    for (const c of children) if (c.connected) c.send(msg);
  };

  try {
    return await new Promise<EngineResult[]>((resolve, reject) => {
      let failed = false;
      const failWith = (err: Error) => {
        if (failed) return;
        failed = true;
        reject(err);
      };
      const onAbort = () => {
        tell({ type: "stop" });
        setTimeout(() => tell({ type: "cancel" }), settings.timeoutMs > 0 ? 1000 : 3000).unref();
      };
      hooks.signal?.addEventListener("abort", onAbort, { once: true });
      for (let i = 0; i < n; i++) {
        const child = fork(WORKER_FILE, ["--roster-bench-worker"], {
          execArgv: process.execArgv,
          stdio: ["ignore", "ignore", "inherit", "ipc"],
        });
        children.push(child);
        const plan: ToWorker = { type: "plan", settings, plan: workerPlan(settings, n, i) };
        child.send(plan);
        child.on("message", (msg: FromWorker) => {
          switch (msg.type) {
            case "ready":
              if (++ready === n && !started) {
                started = true;
                // A common start a little ahead, so every worker begins on the same schedule.
                tell({ type: "start", startAt: epochNow() + 100 });
                if (hooks.onProgress !== undefined) {
                  ticker = setInterval(() => hooks.onProgress?.(combine(progress)), 200);
                }
              }
              break;
            case "progress":
              progress[i] = msg.progress;
              break;
            case "result":
              results[i] = msg.result;
              if (results.every((r) => r !== undefined)) {
                hooks.signal?.removeEventListener("abort", onAbort);
                resolve(results as EngineResult[]);
              }
              break;
            case "error":
              failWith(
                msg.field === undefined ? new Error(msg.message) : new ConfigError(msg.field, msg.message),
              );
              break;
          }
        });
        child.on("exit", (code, signal) => {
          if (results[i] === undefined) {
            failWith(new Error(`bench worker ${i + 1} of ${n} exited (${signal ?? `code ${code}`}) early`));
          }
        });
      }
    });
  } finally {
    if (ticker !== undefined) clearInterval(ticker);
    const last = combine(progress);
    hooks.onProgress?.(last);
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }
  }
}

function combine(list: readonly (EngineProgress | undefined)[]): RunProgress {
  const known = list.filter((p): p is EngineProgress => p !== undefined);
  return {
    measured: known.reduce((s, p) => s + p.measured, 0),
    errors: known.reduce((s, p) => s + p.errors, 0),
    inFlight: known.reduce((s, p) => s + p.inFlight, 0),
    elapsedMs: Math.max(0, ...known.map((p) => p.elapsedMs)),
    phase: known[0]?.phase ?? "connecting",
    target: known[0]?.target ?? "",
  };
}
