/**
 * How a bench run is cut into per-process shares (`--workers N`) and how fine its timeline is. Pure.
 */
import type { EnginePlan } from "./engine.ts";
import type { BenchSettings } from "./options.ts";

/** `total` split over `parts` as evenly as whole numbers allow; the first ones get the remainder. */
export function share(total: number, parts: number, index: number): number {
  const base = Math.floor(total / parts);
  return base + (index < total % parts ? 1 : 0);
}

/**
 * Width of one timeline interval: about 100 points over the measured time per target, between 100 ms
 * and 1 s, rounded to 50 ms; 250 ms in calls mode (the run's length is not known in advance).
 */
export function chooseIntervalMs(settings: Pick<BenchSettings, "stop">): number {
  if (settings.stop.kind === "calls") return 250;
  const raw = settings.stop.ms / 100;
  return Math.min(1000, Math.max(100, Math.round(raw / 50) * 50));
}

/**
 * The plan of worker `index` of `workers`: its share of the lanes (closed loop) or of the rate (open loop,
 * with phase index/workers so that the merged schedule stays evenly spaced), of --calls and of the
 * connections (at least one each).
 */
export function workerPlan(settings: BenchSettings, workers: number, index: number): EnginePlan {
  const load = settings.load;
  return {
    targets: settings.targets,
    targetFlag: settings.compare ? "--compare" : "--target",
    metadata: settings.metadata,
    connections: Math.max(1, share(settings.connections, workers, index)),
    load:
      load.kind === "closed"
        ? { kind: "closed", concurrency: share(load.concurrency, workers, index) }
        : {
            kind: "open",
            rate: load.rate / workers,
            maxInFlight: Math.max(1, Math.ceil(load.maxInFlight / workers)),
          },
    phase: index / workers,
    stop:
      settings.stop.kind === "calls"
        ? { kind: "calls", count: share(settings.stop.count, workers, index) }
        : settings.stop,
    warmupMs: settings.warmupMs,
    timeoutMs: settings.timeoutMs,
    sliceMs: settings.sliceMs,
    intervalMs: chooseIntervalMs(settings),
    streamMessages: settings.streamMessages,
    backendHeader: settings.backendHeader,
    backendField: settings.backendField,
    workerIndex: index,
  };
}

/** Total connections a run opens per target (each worker opens at least one). */
export function totalConnections(settings: Pick<BenchSettings, "connections" | "workers">): number {
  return Math.max(settings.connections, settings.workers);
}
