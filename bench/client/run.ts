// bench/client: Roster's thick client (roster/client createClient) against plain grpc-js, to the same
// backends in the same run, and the channel pool's automatic size against fixed channel counts.
//
//   node --import tsx bench/client/run.ts [--runs 3] [--duration 8] [--warmup 3] [--out FILE.json]
//   node --import tsx bench/client/run.ts --quick          # every configuration once, 1 s: a correctness check
//
// Part "plain": at 5 and 50 calls in flight (closed loop), a plain grpc-js client (round_robin in its
// service config) and createClient with a preset and each policy, over the same N grpc-js backends
// (child processes on loopback): calls/s and p99.9, ratios to plain grpc-js, Momento's p99.9 targets.
// Part "pool": 5,000 calls in flight, backends allowing 100 streams per connection: createClient's
// automatic pool against fixed pools of 1..8 channels (min = max = N).
// Each measured run is a fresh client process (runner.ts); the order of the clients rotates each
// round; medians over the quiet runs. Reading: bench/client/README.md.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";
import { presets } from "../../src/client/presets.ts";
import { startForeignCpuMeter } from "../../test/support/cpu-noise.ts";
import { clockTicksPerSecond, readProcStat, Tracked } from "../serve-scaling/proc.ts";
import type { BackendMessage } from "./backend.ts";
import type { ClientSpec, RunnerMessage, RunResult, RunSpec } from "./protocol.ts";
import {
  compareWithPlain,
  fixedLabel,
  fmt,
  plainTable,
  poolTable,
  poolVerdict,
  type RunRecord,
  type Summary,
  summarize,
} from "./report.ts";

const TASKSET = "/usr/bin/taskset";
const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "../..");
const BACKEND_START_TIMEOUT_MS = 30_000;
/** A runner's start-up (tsx, grpc-js, the check calls), on top of its warm-up, window and last deadline. */
const RUNNER_SLACK_MS = 60_000;
/** Re-runs of noisy runs over the whole benchmark, so a busy machine cannot stretch it much. */
const MAX_RERUNS = 6;
const PLAIN = "plain grpc-js";

type Part = "plain" | "pool";
const PARTS: readonly Part[] = ["plain", "pool"];

interface Options {
  runs: number;
  duration: number;
  warmup: number;
  backends: number;
  maxStreams: number;
  concurrencyList: number[];
  policies: string[];
  preset: string;
  deadlineMs: number;
  poolConcurrency: number;
  fixed: number[];
  poolPlain: boolean;
  parts: Part[];
  maxOther: number;
  retries: number;
  waitQuiet: number;
  quick: boolean;
  pin: boolean;
  out: string | undefined;
}

function intOption(name: string, min: number, max: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got "${raw}"`);
    }
    return value;
  };
}

function numberOption(name: string, min: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!(value >= min)) throw new InvalidArgumentError(`${name} must be a number ≥ ${min}, got "${raw}"`);
    return value;
  };
}

function listOption<T>(name: string, parse: (item: string) => T) {
  return (raw: string): T[] => {
    const items = raw
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
    if (items.length === 0) throw new InvalidArgumentError(`${name}: give at least one value`);
    return [...new Set(items.map(parse))];
  };
}

function parseOptions(argv: readonly string[]): Options {
  const program = new Command()
    .name("client-bench")
    .description(
      "roster/client against plain grpc-js, and the channel pool's automatic size against fixed sizes.",
    )
    .option("--runs <n>", "measured runs per configuration (medians)", intOption("--runs", 1, 50), 3)
    .option("--duration <s>", "seconds per measured window", numberOption("--duration", 0.5), 8)
    .option("--warmup <s>", "seconds of load before every window", numberOption("--warmup", 0), 3)
    .option("--backends <n>", "grpc-js echo backends (child processes)", intOption("--backends", 1, 16), 4)
    .option(
      "--max-streams <n>",
      "backends' grpc.max_concurrent_streams (0: grpc-js's default, no limit)",
      intOption("--max-streams", 0, 1_000_000),
      100,
    )
    .option(
      "--concurrency-list <list>",
      "part plain: calls in flight",
      listOption("--concurrency-list", intOption("--concurrency-list", 1, 100_000)),
      [5, 50],
    )
    .option(
      "--policies <list>",
      "part plain: roster client policies (each a configuration)",
      listOption("--policies", (p) => p),
      ["round_robin", "roster_least_request", "roster_peak_ewma"],
    )
    .option("--preset <name>", "roster client preset: inRegion, lowLatency, laptop", "inRegion")
    .option(
      "--deadline-ms <ms>",
      "part plain: per-call deadline of both clients (0: the preset's)",
      intOption("--deadline-ms", 0, 3_600_000),
      0,
    )
    .option(
      "--pool-concurrency <n>",
      "part pool: calls in flight",
      intOption("--pool-concurrency", 1, 100_000),
      5000,
    )
    .option(
      "--fixed <list>",
      "part pool: fixed channel counts",
      listOption("--fixed", intOption("--fixed", 1, 64)),
      [1, 2, 3, 4, 5, 6, 7, 8],
    )
    .option("--no-pool-plain", "part pool: leave out the plain grpc-js client (one channel) as a reference")
    .option(
      "--parts <list>",
      "plain,pool",
      listOption("--parts", (p) => {
        if (!(PARTS as readonly string[]).includes(p))
          throw new InvalidArgumentError(`--parts: unknown "${p}" (known: ${PARTS.join(", ")})`);
        return p as Part;
      }),
      [...PARTS],
    )
    .option(
      "--max-other <cores>",
      "a run is noisy when processes not ours used more CPU",
      numberOption("--max-other", 0),
      0.25,
    )
    .option(
      "--retries <n>",
      `re-runs of a noisy run (at most ${MAX_RERUNS} in all)`,
      intOption("--retries", 0, 5),
      1,
    )
    .option(
      "--wait-quiet <s>",
      "before each run, wait up to this long for the machine to be quiet",
      intOption("--wait-quiet", 0, 3600),
      0,
    )
    .option(
      "--no-pin",
      `do not pin (default: the client process on core 1, the backends on core 0, with ${TASKSET})`,
    )
    .option(
      "--quick",
      "correctness check: 1 run, 1 s windows, 0.5 s warm-up, fixed 1,4,8, no noise re-runs",
      false,
    )
    .option("--out <file>", "also write every run, the medians, verdicts and tables as JSON")
    .parse(argv, { from: "user" });
  const o = program.opts<Omit<Options, "out"> & { out?: string }>();
  if (o.pin && (os.availableParallelism() < 2 || !existsSync(TASKSET))) {
    console.error(`client-bench: not pinning (needs 2 cores and ${TASKSET})`);
    o.pin = false;
  }
  if (o.quick) {
    o.runs = 1;
    o.duration = 1;
    o.warmup = 0.5;
    o.retries = 0;
    o.fixed = [1, 4, 8];
  }
  return { ...o, out: o.out };
}

// ---------------------------------------------------------------------------------------------------------
// Processes: every child is remembered by pid and start time and killed by pid at the end.

const tracked = new Tracked();
const children = new Set<ChildProcess>();

function spawnNode(
  script: string,
  args: string[],
  cpu: string | undefined,
): { child: ChildProcess; pid: number; output: () => string } {
  const node = [process.execPath, "--import", "tsx", path.join(HERE, script), ...args];
  // taskset execs node: the pid is node's.
  const [command, ...argv] = cpu === undefined ? node : [TASKSET, "-c", cpu, ...node];
  const child = spawn(command!, argv, {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    // Own process group: a ctrl-c on the terminal reaches only this script, which stops them by pid.
    detached: true,
  });
  if (child.pid === undefined) throw new Error(`cannot spawn node for ${script}`);
  const pid = child.pid;
  tracked.add(pid);
  children.add(child);
  child.once("exit", () => children.delete(child));
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-4096);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return { child, pid, output: () => output };
}

function lastLines(text: string, count = 3): string {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .slice(-count)
    .join(" | ");
}

/** SIGTERM, then SIGKILL after a grace period if it is still there. */
async function stop(child: ChildProcess, pid: number, graceMs = 3000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    tracked.signal(pid, "SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs).unref())]);
  }
  tracked.signal(pid, "SIGKILL");
}

interface Backend {
  id: string;
  pid: number;
  port: number;
  child: ChildProcess;
}

function startBackend(id: string, maxStreams: number, cpu: string | undefined): Promise<Backend> {
  const { child, pid, output } = spawnNode("backend.ts", [id, String(maxStreams)], cpu);
  return new Promise((resolve, reject) => {
    const fail = (message: string) => {
      clearTimeout(timer);
      void stop(child, pid);
      reject(new Error(`backend ${id}: ${message}${output() ? ` — ${lastLines(output())}` : ""}`));
    };
    const timer = setTimeout(
      () => fail(`not ready within ${BACKEND_START_TIMEOUT_MS} ms`),
      BACKEND_START_TIMEOUT_MS,
    );
    child.once("exit", (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before it was ready`));
    child.on("message", (m: BackendMessage) => {
      if (m.type === "failed") fail(m.message);
      else if (m.type === "ready") {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve({ id, pid, port: m.port, child });
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// One measured run

interface Task {
  scenario: string;
  concurrency: number;
  client: ClientSpec;
  deadlineMs: number;
  limiterMax: number;
}

function backendTicks(backends: readonly Backend[]): number {
  let ticks = 0;
  for (const b of backends) {
    const stat = readProcStat(b.pid);
    if (stat === undefined) throw new Error(`backend ${b.id} (pid ${b.pid}) is gone`);
    ticks += stat.ticks;
  }
  return ticks;
}

async function measureOnce(
  task: Task,
  o: Options,
  target: string,
  backends: readonly Backend[],
  round: number,
  attempt: number,
  hz: number,
): Promise<RunRecord> {
  const spec: RunSpec = {
    client: task.client,
    target,
    preset: o.preset,
    concurrency: task.concurrency,
    warmupMs: o.warmup * 1000,
    durationMs: o.duration * 1000,
    deadlineMs: task.deadlineMs,
    limiterMax: task.limiterMax,
    checkCalls: 20,
  };
  const { child, pid, output } = spawnNode("runner.ts", [JSON.stringify(spec)], o.pin ? "1" : undefined);
  let meter: ReturnType<typeof startForeignCpuMeter> | undefined;
  let ticks0 = 0;
  let t0 = 0;
  let window: { other: number; steal: number; backendTicks: number; seconds: number } | undefined;
  const timeoutMs = RUNNER_SLACK_MS + spec.warmupMs + spec.durationMs + spec.deadlineMs;
  try {
    const result = await new Promise<RunResult>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no result within ${Math.round(timeoutMs / 1000)} s`)),
        timeoutMs,
      );
      const done = () => clearTimeout(timer);
      child.once("exit", (code, signal) => {
        done();
        reject(new Error(`client process exited (${signal ?? `code ${code}`}) without a result`));
      });
      child.on("message", (m: RunnerMessage) => {
        try {
          if (m.type === "window-start") {
            meter = startForeignCpuMeter([]); // this process and its children (backends, runner) are ours
            ticks0 = backendTicks(backends);
            t0 = performance.now();
          } else if (m.type === "window-end") {
            const seconds = (performance.now() - t0) / 1000;
            const foreign = meter?.stop();
            window = {
              other: foreign?.foreignCores ?? Number.NaN,
              steal: foreign?.stealCores ?? Number.NaN,
              backendTicks: backendTicks(backends) - ticks0,
              seconds,
            };
          } else if (m.type === "result") {
            done();
            resolve(m.result);
          } else if (m.type === "failed") {
            done();
            reject(new Error(m.message));
          }
        } catch (err) {
          done();
          reject(err);
        }
      });
    });
    if (window === undefined) throw new Error("the client sent its result without a window");
    const errors = Object.values(result.errors).reduce((a, b) => a + b, 0);
    const callsPerS = result.calls / result.elapsedS;
    const clientCores = result.clientCpuUs / 1e6 / result.elapsedS;
    const backendCores = window.backendTicks / hz / window.seconds;
    const record: RunRecord = {
      scenario: task.scenario,
      concurrency: task.concurrency,
      label: task.client.label,
      round,
      attempt,
      callsPerS,
      calls: result.calls,
      errors,
      firstError: result.firstError,
      badPayloads: result.badPayloads,
      servedBy: result.servedBy,
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      p999Ms: result.p999Ms,
      maxMs: result.maxMs,
      clientUsPerCall: result.calls > 0 ? result.clientCpuUs / result.calls : Number.NaN,
      clientCores,
      backendCores,
      backendUsPerCall: callsPerS > 0 ? (backendCores * 1e6) / callsPerS : Number.NaN,
      otherCores: window.other,
      stealCores: window.steal,
      noisy: !(window.other <= o.maxOther),
    };
    if (result.pool !== undefined) record.pool = result.pool;
    return record;
  } catch (err) {
    throw new Error(`${(err as Error).message}${output() ? ` — ${lastLines(output())}` : ""}`);
  } finally {
    await stop(child, pid, 1000);
  }
}

async function waitQuiet(o: Options): Promise<void> {
  if (o.waitQuiet <= 0) return;
  const until = Date.now() + o.waitQuiet * 1000;
  for (let i = 0; i < 3600 && Date.now() < until && !interrupted; i++) {
    const meter = startForeignCpuMeter([]);
    await new Promise((r) => setTimeout(r, 1000));
    if (meter.stop().foreignCores <= o.maxOther) return;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Main

function tasksOf(o: Options): Task[] {
  const tasks: Task[] = [];
  if (o.parts.includes("plain")) {
    for (const c of o.concurrencyList) {
      const scenario = `c${c}`;
      // deadline 0: the preset's, for both clients (createClient gets the preset's own value).
      const deadlineMs = o.deadlineMs > 0 ? o.deadlineMs : presetDeadline(o.preset);
      tasks.push({
        scenario,
        concurrency: c,
        client: { label: PLAIN, kind: "plain", policy: "round_robin" },
        deadlineMs,
        limiterMax: 0,
      });
      for (const policy of o.policies) {
        tasks.push({
          scenario,
          concurrency: c,
          client: { label: `roster ${policy}`, kind: "roster", policy },
          deadlineMs,
          limiterMax: 0,
        });
      }
    }
  }
  if (o.parts.includes("pool")) {
    const c = o.poolConcurrency;
    // 5,000 calls in flight take far longer than a preset's deadline to drain on 2 cores; the limiter
    // must let them all through (the part measures the pool, not the limiter).
    const common = { scenario: "pool", concurrency: c, deadlineMs: 60_000, limiterMax: c };
    tasks.push({ ...common, client: { label: "auto", kind: "roster", policy: "round_robin" } });
    for (const n of o.fixed) {
      tasks.push({
        ...common,
        client: { label: fixedLabel(n), kind: "roster", policy: "round_robin", fixedChannels: n },
      });
    }
    if (o.poolPlain)
      tasks.push({ ...common, client: { label: PLAIN, kind: "plain", policy: "round_robin" } });
  }
  return tasks;
}

function presetDeadline(name: string): number {
  const make = presets[name as keyof typeof presets];
  if (make === undefined)
    throw new Error(`--preset: unknown "${name}" (known: ${Object.keys(presets).join(", ")})`);
  return make().deadlineMs;
}

function machine(): Record<string, string | number> {
  let model = "unknown";
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  } catch {
    // not Linux
  }
  let loadavg = "";
  try {
    loadavg = readFileSync("/proc/loadavg", "utf8").trim();
  } catch {
    // not Linux
  }
  return {
    nproc: os.availableParallelism(),
    cpu: model,
    node: process.version,
    date: new Date().toISOString(),
    loadavg,
  };
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  presetDeadline(o.preset); // an unknown preset is an error before anything starts
  const hz = clockTicksPerSecond();
  const tasks = tasksOf(o);
  if (tasks.length === 0) throw new Error("nothing to run (see --parts)");
  const before = machine();
  const perRun = o.warmup + o.duration + 3;
  console.error(
    `client-bench: ${tasks.length} configurations × ${o.runs} runs, about ${Math.ceil((tasks.length * o.runs * perRun) / 60)} min ` +
      `(+ re-runs of noisy runs); ${before.nproc} × ${before.cpu}, ${before.node}, loadavg ${before.loadavg}`,
  );

  const backends: Backend[] = [];
  try {
    for (let i = 0; i < o.backends; i++)
      backends.push(await startBackend(`b${i + 1}`, o.maxStreams, o.pin ? "0" : undefined));
  } catch (err) {
    await Promise.all(backends.map((b) => stop(b.child, b.pid)));
    throw err;
  }
  const target = `ipv4:${backends.map((b) => `127.0.0.1:${b.port}`).join(",")}`;
  console.error(
    `backends: ${backends.map((b) => `${b.id} pid ${b.pid} port ${b.port}`).join(", ")}; target ${target}`,
  );

  // The backends' JIT warms up here, not in the first configuration's run (which would be at a disadvantage).
  try {
    const warm = await measureOnce(
      {
        scenario: "warm-up",
        concurrency: 50,
        client: { label: PLAIN, kind: "plain", policy: "round_robin" },
        deadlineMs: 10_000,
        limiterMax: 0,
      },
      { ...o, warmup: 0, duration: Math.max(2, o.warmup) },
      target,
      backends,
      0,
      1,
      hz,
    );
    console.error(`  backends warmed up: ${fmt(warm.callsPerS)} calls/s at 50 in flight (not counted)`);
  } catch (err) {
    await Promise.all(backends.map((b) => stop(b.child, b.pid)));
    throw new Error(`warm-up run failed: ${(err as Error).message}`);
  }

  const records: RunRecord[] = [];
  const failed = new Map<string, string>();
  const key = (t: Task) => `${t.scenario}/${t.client.label}`;
  let reruns = MAX_RERUNS;
  try {
    for (let round = 1; round <= o.runs && !interrupted; round++) {
      const scenarios = [...new Set(tasks.map((t) => t.scenario))];
      for (const scenario of scenarios) {
        const group = tasks.filter((t) => t.scenario === scenario);
        // Rotate the order each round, so drift of the machine reaches every client alike.
        const order = group.map((_, i) => group[(i + round - 1) % group.length]!);
        for (const task of order) {
          if (interrupted || failed.has(key(task))) continue;
          await waitQuiet(o);
          let best: RunRecord | undefined;
          for (let attempt = 1; attempt <= 1 + o.retries && !interrupted; attempt++) {
            let r: RunRecord;
            try {
              r = await measureOnce(task, o, target, backends, round, attempt, hz);
            } catch (err) {
              failed.set(key(task), (err as Error).message);
              console.error(`  ${key(task)}: FAILED (${(err as Error).message})`);
              break;
            }
            console.error(
              `  round ${round} ${key(task)}${attempt > 1 ? ` (re-run ${attempt - 1})` : ""}: ${fmt(r.callsPerS)} calls/s, ` +
                `p50 ${fmt(r.p50Ms, 2)} p99 ${fmt(r.p99Ms, 2)} p99.9 ${fmt(r.p999Ms, 2)} ms, client ${fmt(r.clientUsPerCall)} µs/call ` +
                `(${fmt(r.clientCores, 2)} cores), backends ${fmt(r.backendCores, 2)} cores, other ${fmt(r.otherCores, 2)} ` +
                `steal ${fmt(r.stealCores, 2)}${r.pool ? `, pool ${r.pool.end} (max ${r.pool.max}, mean ${fmt(r.pool.mean, 1)})` : ""}` +
                `${r.errors > 0 ? `, ${r.errors} errors (${r.firstError})` : ""}${r.noisy ? " NOISY" : ""}`,
            );
            if (best === undefined || r.otherCores < best.otherCores) best = r;
            if (!r.noisy || reruns === 0 || attempt > o.retries) break;
            reruns--;
          }
          if (best !== undefined) records.push(best);
        }
      }
    }
  } finally {
    await Promise.all(backends.map((b) => stop(b.child, b.pid)));
  }

  const summaries: Summary[] = [];
  for (const t of tasks) {
    const s = summarize(records.filter((r) => r.scenario === t.scenario && r.label === t.client.label));
    if (s !== undefined) summaries.push(s);
  }
  const vs = compareWithPlain(summaries, records, PLAIN);
  const verdict = poolVerdict(summaries);
  const after = machine();
  const notes = [
    `${before.nproc} × ${before.cpu}, Node ${before.node}, ${before.date}; loadavg before ${before.loadavg}, after ${after.loadavg}.`,
    `${o.backends} grpc-js echo backends (child processes, 127.0.0.1, max_concurrent_streams ${o.maxStreams || "default"}` +
      `${o.pin ? ", all pinned to core 0; each client process pinned to core 1" : ", nothing pinned"}); ` +
      `each run a fresh client process, ${o.warmup} s warm-up + ${o.duration} s window, closed loop, 64 B payload; ` +
      `medians over the quiet runs (processes not ours ≤ ${o.maxOther} cores), over all runs when none was quiet. ` +
      `Roster: createClient with presets.${o.preset}(); plain: a grpc-js generated client with round_robin in its service config, same target and deadline.`,
  ];
  for (const [k, reason] of failed) notes.push(`FAILED ${k}: ${reason}`);
  const sections: string[] = [notes.join("\n")];
  if (o.parts.includes("plain")) sections.push(plainTable(summaries, vs, PLAIN));
  if (o.parts.includes("pool")) {
    sections.push(
      `${o.poolConcurrency} calls in flight, backends allowing ${o.maxStreams} streams per connection, limiter at ` +
        `${o.poolConcurrency}, deadline 60 s, round_robin; fixed-N: pool min = max = N; auto: the preset's pool.`,
      poolTable(summaries, verdict),
    );
  }
  const markdown = sections.join("\n\n");
  console.log(`\n${markdown}`);
  if (o.out !== undefined) {
    writeFileSync(
      o.out,
      `${JSON.stringify({ options: o, machine: { before, after }, records, summaries, vsPlain: vs, pool: verdict, failed: Object.fromEntries(failed), markdown }, null, 2)}\n`,
    );
    console.error(`wrote ${o.out}`);
  }
  const bad = records.some((r) => r.errors > 0 || r.badPayloads > 0);
  return failed.size > 0 || (o.quick && bad) ? 1 : 0;
}

let interrupted = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  console.error(`\n${signal}: stopping every process started`);
  for (const c of children) if (c.pid !== undefined) tracked.signal(c.pid, "SIGTERM");
  setTimeout(() => process.exit(130), 1500).unref();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.on("exit", () => tracked.killAllSync());

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`client-bench: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  tracked.killAllSync();
}
