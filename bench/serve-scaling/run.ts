// bench/serve-scaling: does `roster serve` turn N worker processes into N× the throughput of a CPU-bound
// service, when every call comes over ONE client connection?
//
//   node --import tsx bench/serve-scaling/run.ts [--workers-list 1,2,4] [--work-us 1000] [--duration 10]
//     [--warmup 2] [--runs 3] [--concurrency 32] [--connections 1] [--client grpc-js|h2load] [--out FILE.json]
//
// Configurations: `direct` (one grpc-js process with the example's handler, no balancer: the
// baseline), `roster-N` (serve() with N workers: the front balances every call) and `cluster-N` (Node's
// cluster module, N grpc-js workers on a shared port: it balances connections, not calls). The load is
// a grpc-js client in this process, closed loop at --concurrency calls in flight over --connections
// channels, or with --client h2load, h2load over --connections HTTP/2 connections (-m concurrency per
// connection), its successes checked against the calls the workers counted. Rounds alternate the configurations; each run has its own warm-up; the table shows medians.
// Method: docs/benchmarks.md ("Method"); reading: bench/serve-scaling/README.md.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";
import { connectEcho, drive, type Echo, PAYLOAD, type Window } from "./client.ts";
import { COUNT_DIR_ENV, type ServedCounts } from "./counted-service.ts";
import {
  checkVerbose,
  echoRequestFrame,
  H2LOAD,
  h2loadAvailable,
  killRunningH2load,
  readLatencies,
  runH2load,
} from "./h2load.ts";
import {
  type CpuTimes,
  childrenOf,
  clockTicksPerSecond,
  establishedOnPort,
  readCpuTimes,
  readProcStat,
  Tracked,
} from "./proc.ts";
import type { EntryMessage } from "./protocol.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "../..");
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 6000;
/** Re-runs of noisy runs over the whole benchmark, so a busy machine cannot stretch it much. */
const MAX_RERUNS = 3;

interface Options {
  workersList: number[];
  workUs: number;
  duration: number;
  warmup: number;
  runs: number;
  concurrency: number;
  connections: number;
  kinds: Kind[];
  bareFront: boolean;
  maxOther: number;
  waitQuiet: number;
  retries: number;
  client: ClientKind;
  out: string | undefined;
}

type ClientKind = "grpc-js" | "h2load";
const CLIENTS: readonly ClientKind[] = ["grpc-js", "h2load"];

type Kind = "direct" | "roster" | "cluster";
const KINDS: readonly Kind[] = ["direct", "roster", "cluster"];

interface Config {
  name: string;
  kind: Kind;
  workers: number;
}

interface Started {
  config: Config;
  child: ChildProcess;
  pid: number;
  port: number;
  /** Pids of the processes running the handler (for direct: the process itself). */
  workerPids: number[];
  output: () => string;
}

interface RunRecord {
  config: string;
  round: number;
  attempt: number;
  elapsedS: number;
  calls: number;
  errors: number;
  firstError: string | undefined;
  badPayloads: number;
  callsPerS: number;
  p50Ms: number;
  p99Ms: number;
  servedBy: Record<string, number>;
  /** CPU of the process in front of the workers (roster supervisor, cluster primary), in cores. */
  frontCores: number | null;
  workerCores: number[];
  clientCores: number;
  otherCores: number;
  stealCores: number;
  frontUsPerCall: number | null;
  workersUsPerCall: number;
  clientUsPerCall: number;
  /** Established connections on the configuration's port at the end of the window. */
  connections: number;
  noisy: boolean;
}

interface Summary {
  config: Config;
  available: boolean;
  reason: string | undefined;
  runs: RunRecord[];
  median:
    | {
        runs: number;
        /** Runs the medians are over: the quiet ones, or all when every run was noisy. */
        usedRuns: number;
        noisyRuns: number;
        callsPerS: number;
        ratio: number | null;
        p50Ms: number;
        p99Ms: number;
        frontCores: number | null;
        workersCores: number;
        clientCores: number;
        otherCores: number;
        frontUsPerCall: number | null;
        workersUsPerCall: number;
        clientUsPerCall: number;
        /** Shares of calls per worker in the run with the median throughput. */
        shares: Array<{ worker: string; calls: number; share: number }>;
        /** Largest share any worker took, per run. */
        busiestShares: number[];
        connections: number;
        errors: number;
      }
    | undefined;
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
    .name("serve-scaling")
    .description(
      "Throughput of a CPU-bound service: roster serve with 1..N workers vs cluster vs one process.",
    )
    .option(
      "--workers-list <list>",
      "worker counts, comma-separated (roster-N for each; cluster-N for each N ≥ 2)",
      listOption("--workers-list", intOption("--workers-list", 1, 32)),
      [1, 2, 4],
    )
    .option("--work-us <µs>", "CPU the handler burns per call", intOption("--work-us", 0, 1_000_000), 1000)
    .option("--duration <s>", "seconds per measured run", intOption("--duration", 1, 600), 10)
    .option("--warmup <s>", "seconds of load before every measured run", intOption("--warmup", 0, 600), 2)
    .option("--runs <n>", "measured runs per configuration (median)", intOption("--runs", 1, 100), 3)
    .option("--concurrency <n>", "calls in flight (closed loop)", intOption("--concurrency", 1, 10_000), 32)
    .option(
      "--connections <n>",
      "client channels (connections) the calls are spread over",
      intOption("--connections", 1, 64),
      1,
    )
    .option(
      "--kinds <list>",
      "configurations to run: direct,roster,cluster",
      listOption("--kinds", (k) => {
        if (!(KINDS as readonly string[]).includes(k)) {
          throw new InvalidArgumentError(`--kinds: unknown "${k}" (known: ${KINDS.join(", ")})`);
        }
        return k as Kind;
      }),
      [...KINDS],
    )
    .option("--bare-front", "roster front without the CLI's per-call metrics hooks", false)
    .option(
      "--max-other <cores>",
      "a run is noisy when processes not ours used more CPU than this",
      (raw: string) => {
        const value = Number(raw);
        if (!(value >= 0)) throw new InvalidArgumentError(`--max-other must be a number ≥ 0, got "${raw}"`);
        return value;
      },
      0.25,
    )
    .option(
      "--retries <n>",
      "re-runs of a noisy run (at most 3 in the whole benchmark)",
      intOption("--retries", 0, 5),
      1,
    )
    .option(
      "--wait-quiet <s>",
      "before each run, wait up to this long for the machine to be quiet (busy < --max-other)",
      intOption("--wait-quiet", 0, 3600),
      0,
    )
    .option(
      "--client <kind>",
      `load generator: grpc-js (in this process) or h2load (${H2LOAD}, -c connections -m concurrency/connections)`,
      (raw: string) => {
        if (!(CLIENTS as readonly string[]).includes(raw)) {
          throw new InvalidArgumentError(`--client: unknown "${raw}" (known: ${CLIENTS.join(", ")})`);
        }
        return raw as ClientKind;
      },
      "grpc-js" as ClientKind,
    )
    .option("--out <file>", "also write every run, the medians and the table as JSON")
    .parse(argv, { from: "user" });
  const o = program.opts<Omit<Options, "out"> & { out?: string }>();
  if (o.client === "h2load" && o.concurrency % o.connections !== 0) {
    program.error(
      `--client h2load: --concurrency (${o.concurrency}) must be a multiple of --connections (${o.connections})`,
    );
  }
  return { ...o, out: o.out };
}

function configsFor(o: Options): Config[] {
  const configs: Config[] = [];
  if (o.kinds.includes("direct")) configs.push({ name: "direct", kind: "direct", workers: 1 });
  const counts = [...o.workersList].sort((a, b) => a - b);
  if (o.kinds.includes("roster")) {
    for (const n of counts) configs.push({ name: `roster-${n}`, kind: "roster", workers: n });
  }
  if (o.kinds.includes("cluster")) {
    for (const n of counts) if (n >= 2) configs.push({ name: `cluster-${n}`, kind: "cluster", workers: n });
  }
  return configs;
}

// ---------------------------------------------------------------------------------------------------------
// Processes

const tracked = new Tracked();
const running = new Set<Started>();

function startConfig(config: Config, o: Options): Promise<Started> {
  const entry =
    config.kind === "roster"
      ? [path.join(HERE, "roster-entry.ts"), String(config.workers), ...(o.bareFront ? ["--bare-front"] : [])]
      : [path.join(HERE, "cluster-entry.ts"), String(config.kind === "direct" ? 0 : config.workers)];
  const child = spawn(process.execPath, ["--import", "tsx", ...entry], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    // Own process group: a ctrl-c on the terminal reaches only this script, which stops them in order.
    detached: true,
    env: childEnv(),
  });
  if (child.pid === undefined) return Promise.reject(new Error(`${config.name}: cannot spawn node`));
  const pid = child.pid;
  tracked.add(pid);
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-8192);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return new Promise<Started>((resolve, reject) => {
    const fail = (message: string) => {
      clearTimeout(timer);
      void stopChild(child, pid, []);
      reject(new Error(`${config.name}: ${message}${output ? ` — ${lastLines(output)}` : ""}`));
    };
    const timer = setTimeout(() => fail(`not ready within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    child.once("exit", (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before it was ready`));
    child.on("message", (m: EntryMessage) => {
      if (m.type === "failed") fail(m.message);
      else if (m.type === "ready") {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        for (const w of m.workers) tracked.add(w);
        // Whatever else the entry started (none expected): remembered so that cleanup reaches it.
        for (const c of childrenOf(pid)) tracked.add(c.pid);
        const started: Started = {
          config,
          child,
          pid,
          port: m.port,
          workerPids: m.workers,
          output: () => output,
        };
        running.add(started);
        resolve(started);
      }
    });
  });
}

/** Where the workers write their served counts (counted-service.ts); removed at the end. */
const countDir = mkdtempSync(path.join(os.tmpdir(), "serve-scaling-"));

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ROSTER_LOG_LEVEL: "warn", [COUNT_DIR_ENV]: countDir };
  delete env.ROSTER_WORKER_ID; // served_by must come from each entry, not from our environment
  return env;
}

function lastLines(text: string, count = 3): string {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .slice(-count)
    .join(" | ");
}

/** SIGTERM the entry (it stops its workers), then SIGKILL it and the workers if still there. */
async function stopChild(child: ChildProcess, pid: number, workers: readonly number[]): Promise<void> {
  const family = [pid, ...workers, ...childrenOf(pid).map((c) => c.pid)];
  for (const p of family) tracked.add(p);
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    tracked.signal(pid, "SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, STOP_GRACE_MS))]);
  }
  for (const p of family) tracked.signal(p, "SIGKILL");
}

let stopping: Promise<void> | undefined;

/** Stops every configuration (once, however many times it is called). */
function stopAll(): Promise<void> {
  stopping ??= (async () => {
    const all = [...running];
    running.clear();
    await Promise.all(all.map((s) => stopChild(s.child, s.pid, s.workerPids)));
    tracked.killAllSync();
  })();
  return stopping;
}

// ---------------------------------------------------------------------------------------------------------
// Measuring

interface Snapshot {
  front: number | undefined;
  workers: number[];
  client: NodeJS.CpuUsage;
  system: CpuTimes;
  missing: number[];
}

function snapshot(s: Started): Snapshot {
  const ticks = (pid: number): number | undefined => readProcStat(pid)?.ticks;
  const missing: number[] = [];
  const workers = s.workerPids.map((pid) => {
    const t = ticks(pid);
    if (t === undefined) missing.push(pid);
    return t ?? 0;
  });
  return {
    front: s.config.kind === "direct" ? undefined : ticks(s.pid),
    workers,
    client: process.cpuUsage(),
    system: readCpuTimes(),
    missing,
  };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

async function measure(
  s: Started,
  o: Options,
  round: number,
  attempt: number,
  hz: number,
): Promise<RunRecord> {
  const clients: Echo[] = Array.from({ length: o.connections }, () => connectEcho(s.port));
  let before: Snapshot | undefined;
  let after: Snapshot | undefined;
  let connections = 0;
  let window: Window;
  try {
    window = await drive(clients, {
      concurrency: o.concurrency,
      workUs: o.workUs,
      warmupMs: o.warmup * 1000,
      durationMs: o.duration * 1000,
      onWindowStart: () => {
        before = snapshot(s);
      },
      onWindowEnd: () => {
        after = snapshot(s);
        connections = establishedOnPort(s.port);
      },
    });
  } finally {
    for (const c of clients) c.close();
  }
  if (before === undefined || after === undefined) throw new Error("window snapshots missing");
  if (after.missing.length > 0) {
    throw new Error(`${s.config.name}: worker process(es) ${after.missing.join(", ")} gone during the run`);
  }
  const b = before;
  const a = after;
  const secs = window.elapsedS;
  const cores = (ticks: number) => ticks / hz / secs;
  const frontCores = a.front !== undefined && b.front !== undefined ? cores(a.front - b.front) : null;
  const workerCores = a.workers.map((t, i) => cores(t - (b.workers[i] ?? 0)));
  const workersTotal = workerCores.reduce((x, y) => x + y, 0);
  const clientCores = (a.client.user + a.client.system - b.client.user - b.client.system) / 1e6 / secs;
  const busyCores = cores(a.system.busy - b.system.busy);
  const otherCores = Math.max(0, busyCores - workersTotal - (frontCores ?? 0) - clientCores);
  const perCall = (c: number) => (window.calls > 0 ? (c * secs * 1e6) / window.calls : Number.NaN);
  return {
    config: s.config.name,
    round,
    attempt,
    elapsedS: secs,
    calls: window.calls,
    errors: window.errors,
    firstError: window.firstError,
    badPayloads: window.badPayloads,
    callsPerS: window.calls / secs,
    p50Ms: percentile(window.latenciesMs, 50),
    p99Ms: percentile(window.latenciesMs, 99),
    servedBy: window.servedBy,
    frontCores,
    workerCores,
    clientCores,
    otherCores,
    stealCores: cores(a.system.steal - b.system.steal),
    frontUsPerCall: frontCores === null ? null : perCall(frontCores),
    workersUsPerCall: perCall(workersTotal),
    clientUsPerCall: perCall(clientCores),
    connections,
    noisy: otherCores > o.maxOther,
  };
}

/** 20 unloaded calls must come back OK with the payload echoed. */
async function check(s: Started): Promise<void> {
  const client = connectEcho(s.port);
  try {
    for (let i = 0; i < 20; i++) {
      const reply = await client.call(0);
      if (!PAYLOAD.equals(reply.payload)) throw new Error("payload not echoed");
      if (!reply.served_by.startsWith("worker-"))
        throw new Error(`unexpected served_by "${reply.served_by}"`);
    }
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// --client h2load

/** How long the workers' counts must stay unchanged to be read as final (they are written every 100 ms). */
const SETTLE_MS = 250;
const SETTLE_TRIES = 40;

function readServed(s: Started): ServedCounts[] {
  return s.workerPids.map((pid) => {
    const file = path.join(countDir, `${pid}.json`);
    for (let i = 0; i < 5; i++) {
      try {
        return JSON.parse(readFileSync(file, "utf8")) as ServedCounts;
      } catch {
        // renamed into place meanwhile: read again
      }
    }
    throw new Error(`${s.config.name}: no served count from worker pid ${pid} (${file})`);
  });
}

/** The workers' counts once they stop changing (calls cut off when h2load stopped may still end). */
async function settledServed(s: Started): Promise<ServedCounts[]> {
  let last = readServed(s);
  for (let i = 0; i < SETTLE_TRIES; i++) {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const now = readServed(s);
    if (now.every((c, j) => c.calls === last[j]?.calls)) return now;
    last = now;
  }
  throw new Error(`${s.config.name}: the workers' served counts kept changing after h2load ended`);
}

interface ServedDelta {
  calls: number;
  byWorker: Record<string, number>;
  /** The served requests carried the work_us and payload of the request file. */
  requestsAsSent: boolean;
}

function servedDelta(
  before: readonly ServedCounts[],
  after: readonly ServedCounts[],
  o: Options,
): ServedDelta {
  const byWorker: Record<string, number> = {};
  let calls = 0;
  let workUs = 0;
  let bytes = 0;
  after.forEach((a, i) => {
    const b = before[i];
    const n = a.calls - (b?.calls ?? 0);
    byWorker[a.servedBy] = (byWorker[a.servedBy] ?? 0) + n;
    calls += n;
    workUs += a.workUs - (b?.workUs ?? 0);
    bytes += a.payloadBytes - (b?.payloadBytes ?? 0);
  });
  return { calls, byWorker, requestsAsSent: workUs === calls * o.workUs && bytes === calls * PAYLOAD.length };
}

interface H2loadContext {
  requestFile: string;
}

/**
 * Before a configuration is measured with h2load: 20 calls sent by h2load (one at a time, -v) must
 * all be HTTP 200 without a trailers-only (error) answer, and the workers must have served exactly 20
 * calls carrying the request file's work_us and payload.
 */
async function checkH2load(s: Started, o: Options, h: H2loadContext): Promise<void> {
  const calls = 20;
  const before = await settledServed(s);
  const load = await runH2load({
    port: s.port,
    requestFile: h.requestFile,
    connections: 1,
    streams: 1,
    requests: calls,
    verbose: true,
  });
  const seen = checkVerbose(load.output);
  const served = servedDelta(before, await settledServed(s), o);
  const problems: string[] = [];
  if (load.succeeded !== calls) problems.push(`h2load: ${load.succeeded} of ${calls} succeeded`);
  if (seen.ok !== calls) problems.push(`${seen.ok} of ${calls} responses with :status 200`);
  if (seen.otherStatuses.length > 0) problems.push(`:status ${seen.otherStatuses.join(", ")}`);
  if (seen.trailersOnly.length > 0) problems.push(`trailers-only answers (${seen.trailersOnly[0]})`);
  if (served.calls !== calls) problems.push(`the workers served ${served.calls} of ${calls} calls`);
  if (!served.requestsAsSent) problems.push("the workers decoded another work_us or payload than sent");
  if (problems.length > 0) throw new Error(`h2load check: ${problems.join("; ")}`);
}

async function measureH2load(
  s: Started,
  o: Options,
  round: number,
  attempt: number,
  hz: number,
  h: H2loadContext,
): Promise<RunRecord> {
  // One grpc-js call first: h2load cannot see grpc-status, this call can (OK, payload echoed).
  const probe = connectEcho(s.port);
  try {
    const reply = await probe.call(o.workUs);
    if (!PAYLOAD.equals(reply.payload)) throw new Error(`${s.config.name}: payload not echoed`);
  } finally {
    probe.close();
  }
  const spec = {
    port: s.port,
    requestFile: h.requestFile,
    connections: o.connections,
    streams: o.concurrency / o.connections,
  };
  if (o.warmup > 0) await runH2load({ ...spec, durationS: o.warmup });
  const servedBefore = await settledServed(s);
  const logFile = path.join(countDir, `h2load-${s.config.name}-${round}-${attempt}.log`);
  let connections = 0;
  const probeTimer = setTimeout(
    () => {
      connections = establishedOnPort(s.port);
    },
    Math.min(1000, o.duration * 500),
  );
  const b = snapshot(s);
  const t0 = performance.now();
  let load: Awaited<ReturnType<typeof runH2load>>;
  try {
    load = await runH2load({ ...spec, durationS: o.duration, logFile });
  } finally {
    clearTimeout(probeTimer);
  }
  const wallS = (performance.now() - t0) / 1000;
  const a = snapshot(s);
  if (a.missing.length > 0) {
    throw new Error(`${s.config.name}: worker process(es) ${a.missing.join(", ")} gone during the run`);
  }
  const served = servedDelta(servedBefore, await settledServed(s), o);
  const latencies = readLatencies(logFile);
  const calls = load.succeeded;
  // Every success must have been served by a worker (h2load counts any HTTP 200, a fast UNAVAILABLE
  // too). Calls cut off when h2load stopped may be served without being counted: at most one per stream.
  const slack = o.concurrency + Math.ceil(calls * 0.001);
  if (calls === 0 || served.calls < calls || served.calls > calls + slack) {
    throw new Error(
      `${s.config.name}: h2load counted ${calls} successes (${load.failed} failed, ${load.errored} errored) ` +
        `but the workers served ${served.calls} calls`,
    );
  }
  const cores = (ticks: number) => ticks / hz / wallS;
  const frontCores = a.front !== undefined && b.front !== undefined ? cores(a.front - b.front) : null;
  const workerCores = a.workers.map((t, i) => cores(t - (b.workers[i] ?? 0)));
  const workersTotal = workerCores.reduce((x, y) => x + y, 0);
  const clientCores = load.cpuS / wallS;
  const selfCores = (a.client.user + a.client.system - b.client.user - b.client.system) / 1e6 / wallS;
  const busyCores = cores(a.system.busy - b.system.busy);
  const otherCores = Math.max(0, busyCores - workersTotal - (frontCores ?? 0) - clientCores - selfCores);
  const perCall = (c: number) => (calls > 0 ? (c * wallS * 1e6) / calls : Number.NaN);
  const errors = load.failed + load.errored + load.timeout;
  return {
    config: s.config.name,
    round,
    attempt,
    elapsedS: o.duration,
    calls,
    errors,
    firstError:
      errors > 0
        ? `h2load: ${load.failed} failed, ${load.errored} errored, ${load.timeout} timeout`
        : undefined,
    badPayloads: served.requestsAsSent ? 0 : served.calls,
    callsPerS: calls / o.duration,
    p50Ms: latencies.p50Ms,
    p99Ms: latencies.p99Ms,
    servedBy: served.byWorker,
    frontCores,
    workerCores,
    clientCores,
    otherCores,
    stealCores: cores(a.system.steal - b.system.steal),
    frontUsPerCall: frontCores === null ? null : perCall(frontCores),
    workersUsPerCall: perCall(workersTotal),
    clientUsPerCall: perCall(clientCores),
    connections,
    noisy: otherCores > o.maxOther,
  };
}

/**
 * Waits (up to --wait-quiet seconds, in 1 s samples of /proc/stat) until the machine is quiet: our
 * processes are idle between runs, so what is busy is someone else's. Bounded; never fails.
 */
async function waitQuiet(o: Options, hz: number): Promise<void> {
  const deadline = Date.now() + o.waitQuiet * 1000;
  let waited = false;
  for (let i = 0; i < 3600 && Date.now() < deadline && !interrupted; i++) {
    const a = readCpuTimes();
    await new Promise((r) => setTimeout(r, 1000));
    const busy = (readCpuTimes().busy - a.busy) / hz;
    if (busy <= o.maxOther) break;
    if (!waited) console.error(`  waiting for a quiet machine (busy ${busy.toFixed(2)} cores)…`);
    waited = true;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Report

function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function shares(
  servedBy: Record<string, number>,
  workers: number,
): Array<{ worker: string; calls: number; share: number }> {
  const names = new Set(Object.keys(servedBy));
  for (let i = 1; i <= workers; i++) names.add(`worker-${i}`);
  const total = Object.values(servedBy).reduce((x, y) => x + y, 0);
  return [...names]
    .sort((x, y) => x.localeCompare(y, "en", { numeric: true }))
    .map((worker) => ({
      worker,
      calls: servedBy[worker] ?? 0,
      share: total > 0 ? (servedBy[worker] ?? 0) / total : 0,
    }));
}

/** The runs the medians are over: the quiet ones when there are any, else all (marked in the table). */
function usedRuns(runs: readonly RunRecord[]): RunRecord[] {
  const quiet = runs.filter((r) => !r.noisy);
  return quiet.length > 0 ? quiet : [...runs];
}

function summarize(config: Config, all: RunRecord[], directCallsPerS: number | undefined): Summary["median"] {
  if (all.length === 0) return undefined;
  const runs = usedRuns(all);
  const byThroughput = [...runs].sort((x, y) => x.callsPerS - y.callsPerS);
  const mid = byThroughput[Math.floor((byThroughput.length - 1) / 2)]!;
  const callsPerS = median(runs.map((r) => r.callsPerS));
  const fronts = runs.map((r) => r.frontCores).filter((x): x is number => x !== null);
  const frontUs = runs.map((r) => r.frontUsPerCall).filter((x): x is number => x !== null);
  return {
    runs: all.length,
    usedRuns: runs.length,
    noisyRuns: all.filter((r) => r.noisy).length,
    callsPerS,
    ratio: directCallsPerS === undefined ? null : callsPerS / directCallsPerS,
    p50Ms: median(runs.map((r) => r.p50Ms)),
    p99Ms: median(runs.map((r) => r.p99Ms)),
    frontCores: fronts.length > 0 ? median(fronts) : null,
    workersCores: median(runs.map((r) => r.workerCores.reduce((x, y) => x + y, 0))),
    clientCores: median(runs.map((r) => r.clientCores)),
    otherCores: median(runs.map((r) => r.otherCores)),
    frontUsPerCall: frontUs.length > 0 ? median(frontUs) : null,
    workersUsPerCall: median(runs.map((r) => r.workersUsPerCall)),
    clientUsPerCall: median(runs.map((r) => r.clientUsPerCall)),
    shares: shares(mid.servedBy, config.workers),
    // Shares do not depend on noise: every run.
    busiestShares: all.map((r) => Math.max(0, ...shares(r.servedBy, config.workers).map((x) => x.share))),
    connections: median(all.map((r) => r.connections)),
    errors: all.reduce((x, r) => x + r.errors + r.badPayloads, 0),
  };
}

const fmt = (v: number | null | undefined, digits = 0): string =>
  v === null || v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(digits);

function runsText(m: NonNullable<Summary["median"]>): string {
  if (m.noisyRuns === 0) return `${m.runs}`;
  if (m.usedRuns < m.runs) return `${m.usedRuns} quiet of ${m.runs}`;
  return `${m.runs}, all noisy`;
}

function processesOf(c: Config): string {
  if (c.kind === "direct") return "1 grpc-js process";
  if (c.kind === "roster") return `supervisor + ${c.workers} worker${c.workers > 1 ? "s" : ""}`;
  return `primary + ${c.workers} workers`;
}

function markdown(summaries: readonly Summary[], o: Options): string {
  const lines = [
    "| configuration | processes | runs used | calls/s | × direct | p50 ms | p99 ms | calls per worker (median run) | busiest worker, each run | front CPU cores (µs/call) | workers CPU cores (µs/call) | client CPU cores (µs/call) | other CPU cores |",
    "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
  ];
  for (const s of summaries) {
    const m = s.median;
    if (!s.available || m === undefined) {
      lines.push(
        `| ${s.config.name} | ${processesOf(s.config)} | not available: ${s.reason ?? "no runs"} ||||||||||||`,
      );
      continue;
    }
    const shareText = m.shares
      .map((x) => `${x.worker.replace("worker-", "w")} ${(x.share * 100).toFixed(0)}%`)
      .join(" · ");
    const busiest = m.busiestShares.map((x) => `${(x * 100).toFixed(0)}%`).join(", ");
    const front = m.frontCores === null ? "—" : `${fmt(m.frontCores, 2)} (${fmt(m.frontUsPerCall)})`;
    lines.push(
      `| ${s.config.name}${m.errors > 0 ? ` (${m.errors} errors)` : ""} | ${processesOf(s.config)} | ${runsText(m)} | ${fmt(m.callsPerS)} | ${fmt(m.ratio, 2)} | ${fmt(m.p50Ms, 1)} | ${fmt(m.p99Ms, 1)} | ${shareText} | ${busiest} | ${front} | ${fmt(m.workersCores, 2)} (${fmt(m.workersUsPerCall)}) | ${fmt(m.clientCores, 2)} (${fmt(m.clientUsPerCall)}) | ${fmt(m.otherCores, 2)} |`,
    );
  }
  const conns = summaries.map((s) => s.median?.connections).filter((x): x is number => x !== undefined);
  const plural = o.connections > 1 ? "s" : "";
  const client =
    o.client === "h2load"
      ? `h2load connection${plural} (-c ${o.connections} -m ${o.concurrency / o.connections}; each run's successes checked against the calls the workers served)`
      : `grpc-js channel${plural}`;
  lines.push(
    "",
    `Handler: ${o.workUs} µs of busy CPU per call; ${o.concurrency} calls in flight over ${o.connections} ` +
      `${client} (connections seen on the server port: ${[...new Set(conns)].join("/") || "—"}); ` +
      `${o.runs} run${o.runs > 1 ? "s" : ""} × ${o.duration} s, each after ${o.warmup} s of warm-up; medians over ` +
      `the quiet runs (processes not ours used ≤ ${o.maxOther} cores), or over all runs when none was quiet; ` +
      `the busiest-worker column lists every run. ` +
      `CPU in cores (1.00 = one core busy for the whole window) and µs per call; "client" is ` +
      `${o.client === "h2load" ? "h2load" : "this process (the grpc-js client)"}; "front" is the roster ` +
      `supervisor (front + supervision${o.bareFront ? ", no metrics hooks" : ", with the CLI's metrics hooks"}) or the cluster primary.`,
  );
  return lines.join("\n");
}

function machine(): Record<string, string | number> {
  let model = "unknown";
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  } catch {
    // not Linux
  }
  return {
    nproc: os.availableParallelism(),
    cpu: model,
    node: process.version,
    date: new Date().toISOString(),
    loadavg: readFileSync("/proc/loadavg", "utf8").trim(),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const configs = configsFor(o);
  if (configs.length === 0) throw new Error("nothing to run (see --kinds, --workers-list)");
  const hz = clockTicksPerSecond();
  let h2load: H2loadContext | undefined;
  if (o.client === "h2load") {
    if (!h2loadAvailable()) throw new Error(`--client h2load: no ${H2LOAD} (apt-get install nghttp2-client)`);
    const requestFile = path.join(countDir, "request.bin");
    writeFileSync(requestFile, echoRequestFrame(PAYLOAD, o.workUs));
    h2load = { requestFile };
  }
  const before = machine();
  const perRun = o.warmup + o.duration + 0.5;
  console.error(
    `serve-scaling: ${configs.map((c) => c.name).join(", ")}; ${o.runs} rounds; about ` +
      `${Math.ceil((configs.length * o.runs * perRun) / 60)} min + start-up (+ up to ${Math.min(MAX_RERUNS, configs.length)} re-runs of noisy runs)`,
  );
  console.error(`machine: ${before.nproc} × ${before.cpu}, ${before.node}, loadavg ${before.loadavg}`);

  const summaries: Summary[] = configs.map((config) => ({
    config,
    available: true,
    reason: undefined,
    runs: [],
    median: undefined,
  }));
  const started = new Map<string, Started>();
  // Start one configuration at a time (start-up burns CPU); idle ones cost ~nothing while others run.
  for (const s of summaries) {
    try {
      const st = await startConfig(s.config, o);
      await check(st);
      if (h2load !== undefined) await checkH2load(st, o, h2load);
      started.set(s.config.name, st);
      console.error(
        `  ${s.config.name}: port ${st.port}, front pid ${st.pid}, worker pids ${st.workerPids.join(" ")}`,
      );
    } catch (err) {
      s.available = false;
      s.reason = (err as Error).message;
      console.error(`  ${s.config.name}: not available (${s.reason})`);
    }
  }

  let retryBudget = Math.min(MAX_RERUNS, configs.length);
  for (let round = 0; round < o.runs && !interrupted; round++) {
    // Rotate the order each round, so drift of the machine reaches every configuration alike.
    const order = summaries.map((_, i) => summaries[(i + round) % summaries.length]!);
    for (const s of order) {
      const st = started.get(s.config.name);
      if (st === undefined || interrupted) continue;
      await waitQuiet(o, hz);
      let best: RunRecord | undefined;
      for (let attempt = 0; attempt <= o.retries && !interrupted; attempt++) {
        let record: RunRecord;
        try {
          record =
            h2load === undefined
              ? await measure(st, o, round + 1, attempt + 1, hz)
              : await measureH2load(st, o, round + 1, attempt + 1, hz, h2load);
        } catch (err) {
          s.available = false;
          s.reason = (err as Error).message;
          console.error(`  ${s.config.name}: failed (${s.reason}) ${lastLines(st.output())}`);
          started.delete(s.config.name);
          break;
        }
        console.error(
          `  round ${round + 1} ${s.config.name}${attempt > 0 ? ` (re-run ${attempt})` : ""}: ` +
            `${record.callsPerS.toFixed(0)} calls/s, p50 ${record.p50Ms.toFixed(1)} ms, p99 ${record.p99Ms.toFixed(1)} ms, ` +
            `served ${JSON.stringify(record.servedBy)}, front ${fmt(record.frontCores, 2)} workers ` +
            `${record.workerCores.map((c) => c.toFixed(2)).join("+")} client ${record.clientCores.toFixed(2)} ` +
            `other ${record.otherCores.toFixed(2)} steal ${record.stealCores.toFixed(2)} cores` +
            `${record.errors > 0 ? `, ${record.errors} errors (${record.firstError})` : ""}${record.noisy ? " NOISY" : ""}`,
        );
        if (best === undefined || record.otherCores < best.otherCores) best = record;
        if (!record.noisy || retryBudget === 0) break;
        if (attempt < o.retries) retryBudget--;
      }
      if (best !== undefined) s.runs.push(best);
    }
  }

  const direct = summaries.find((s) => s.config.kind === "direct");
  const directCallsPerS = direct?.runs.length
    ? median(usedRuns(direct.runs).map((r) => r.callsPerS))
    : undefined;
  for (const s of summaries) s.median = summarize(s.config, s.runs, directCallsPerS);
  const after = machine();
  const table = markdown(summaries, o);
  console.log(
    `\n${before.nproc} × ${before.cpu}, Node ${before.node}, ${before.date}; loadavg before ${before.loadavg}, after ${after.loadavg}\n`,
  );
  console.log(table);
  if (o.out !== undefined) {
    writeFileSync(
      o.out,
      `${JSON.stringify({ options: o, machine: { before, after }, summaries, markdown: table }, null, 2)}\n`,
    );
    console.error(`wrote ${o.out}`);
  }
}

let interrupted = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  console.error(`\n${signal}: stopping every process started`);
  void stopAll().finally(() => process.exit(130));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.on("exit", () => {
  killRunningH2load();
  tracked.killAllSync();
  rmSync(countDir, { recursive: true, force: true });
});

try {
  await main();
} catch (err) {
  console.error(`serve-scaling: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await stopAll();
}
