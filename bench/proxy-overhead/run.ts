// bench/proxy-overhead: what a per-call gRPC proxy hop costs — Roster next to nginx and HAProxy.
//
//   node --import tsx bench/proxy-overhead/run.ts [--runs 3] [--duration 10] [--warmup 3]
//     [--connections 4] [--streams 32] [--size 64] [--paths direct,roster,nginx,haproxy]
//     [--unloaded] [--out FILE.json]
//   node --import tsx bench/proxy-overhead/run.ts --callgrind [--callgrind-warmup 20000]
//     [--callgrind-calls 2000] [--callgrind-windows 5]     (instructions per call under valgrind)
//
// Method (docs: docs/benchmarks.md ("Method"), bench/proxy-overhead/README.md): two grpc-js Echo
// backends and h2load on core 0, the proxy alone on core 1; warm-up before every measured run;
// rounds alternate the paths; medians of the runs; CPU per call from /proc; grpc-status checked with
// a grpc-js client and calls counted at the backends, because h2load counts any HTTP 200 as success.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Command, InvalidArgumentError } from "commander";
import {
  type CallgrindSummary,
  callgrindMarkdown,
  callgrindToolsMissing,
  runCallgrind,
  valgrindVersion,
} from "./callgrind.ts";
import {
  ECHO_PATH,
  type EchoMessage,
  encodeEchoMessage,
  grpcFrame,
  loadEcho,
  UNLIMITED_MESSAGES,
} from "./echo.ts";
import { readLatencies, runH2load } from "./h2load.ts";
import {
  Backend,
  LOAD_CORE,
  PATH_NAMES,
  type PathName,
  type PathSettings,
  REPO_ROOT,
  startTarget,
  type Target,
} from "./paths.ts";
import {
  ChildRegistry,
  clockTicksPerSecond,
  commandVersion,
  lastLines,
  pinProcess,
  processTicks,
  readCpuTimes,
  timeWaitConnections,
  treeSysTicks,
  treeTicks,
} from "./proc.ts";
import { markdown, type PathCheck, type PathSummary, type RunRecord, summarize } from "./report.ts";

interface Options {
  runs: number;
  duration: number;
  warmup: number;
  connections: number;
  streams: number;
  size: number;
  paths: PathName[];
  unloaded: boolean;
  out: string | undefined;
  maxOther: number;
  retries: number;
  rosterBin: string;
  rosterArgs: string[];
  nginxKeepalive: number | undefined;
  keepTmp: boolean;
  callgrind: boolean;
  callgrindWarmup: number;
  callgrindCalls: number;
  callgrindWindows: number;
  callgrindStartTimeout: number;
  callgrindSettle: number;
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

function parsePaths(raw: string): PathName[] {
  const names = raw
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name.length > 0);
  for (const name of names) {
    if (!(PATH_NAMES as readonly string[]).includes(name)) {
      throw new InvalidArgumentError(`--paths: unknown path "${name}" (known: ${PATH_NAMES.join(", ")})`);
    }
  }
  if (names.length === 0) throw new InvalidArgumentError("--paths: give at least one path");
  return [...new Set(names)] as PathName[];
}

function parseOptions(argv: readonly string[]): Options {
  const program = new Command()
    .name("proxy-overhead")
    .description("Per-call gRPC proxy overhead: Roster vs nginx vs HAProxy, CPU per call and latency.")
    .option("--runs <n>", "measured runs per path (median reported)", intOption("--runs", 1, 100), 3)
    .option("--duration <s>", "seconds per measured run", intOption("--duration", 1, 600), 10)
    .option("--warmup <s>", "seconds of warm-up before every measured run", intOption("--warmup", 0, 600), 3)
    .option("--connections <n>", "h2load connections (-c)", intOption("--connections", 1, 1000), 4)
    .option("--streams <n>", "h2load streams per connection (-m)", intOption("--streams", 1, 1000), 32)
    .option("--size <bytes>", "payload bytes per call", intOption("--size", 0, 64 * 1024 * 1024), 64)
    .option("--paths <list>", "comma-separated paths", parsePaths, [...PATH_NAMES])
    .option("--unloaded", "1 connection × 1 stream: p50 latency added by each hop", false)
    .option("--out <file>", "also write the results as JSON")
    .option(
      "--max-other <cores>",
      "a run is noisy when other processes used more CPU than this",
      (raw: string) => {
        const value = Number(raw);
        if (!(value >= 0)) throw new InvalidArgumentError(`--max-other must be a number ≥ 0, got "${raw}"`);
        return value;
      },
      0.2,
    )
    .option("--retries <n>", "re-runs of a noisy run", intOption("--retries", 0, 5), 2)
    .option("--roster-bin <file>", "roster CLI entry point", path.join(REPO_ROOT, "bin", "roster.js"))
    .option("--roster-args <args>", "extra arguments for roster lb (space-separated)", "")
    .option(
      "--nginx-keepalive <n>",
      "nginx upstream keepalive pool (default 4 × connections × streams)",
      intOption("--nginx-keepalive", 1, 100_000),
    )
    .option("--keep-tmp", "keep the temp dir (configs, logs)", false)
    .option("--callgrind", "instructions per call of each proxy under valgrind's callgrind", false)
    .option(
      "--callgrind-warmup <n>",
      "calls before the first window (in h2load runs of --callgrind-calls each)",
      intOption("--callgrind-warmup", 0, 10_000_000),
      20_000,
    )
    .option("--callgrind-calls <n>", "calls per window", intOption("--callgrind-calls", 1, 10_000_000), 2000)
    .option(
      "--callgrind-windows <k>",
      "zero → calls → dump windows",
      intOption("--callgrind-windows", 1, 100),
      5,
    )
    .option(
      "--callgrind-start-timeout <s>",
      "seconds a proxy under valgrind may take to listen",
      intOption("--callgrind-start-timeout", 1, 3600),
      300,
    )
    .option(
      "--callgrind-settle <s>",
      "longest wait for the proxy to go idle (background JIT) before each window",
      intOption("--callgrind-settle", 0, 3600),
      300,
    )
    .parse(argv, { from: "user" });
  const o = program.opts<{
    runs: number;
    duration: number;
    warmup: number;
    connections: number;
    streams: number;
    size: number;
    paths: PathName[];
    unloaded: boolean;
    out?: string;
    maxOther: number;
    retries: number;
    rosterBin: string;
    rosterArgs: string;
    nginxKeepalive?: number;
    keepTmp: boolean;
    callgrind: boolean;
    callgrindWarmup: number;
    callgrindCalls: number;
    callgrindWindows: number;
    callgrindStartTimeout: number;
    callgrindSettle: number;
  }>();
  const connections = o.unloaded ? 1 : o.connections;
  if (o.callgrind && o.callgrindCalls < connections) {
    throw new InvalidArgumentError(`--callgrind-calls must be at least --connections (${connections})`);
  }
  return {
    ...o,
    connections,
    streams: o.unloaded ? 1 : o.streams,
    out: o.out,
    nginxKeepalive: o.nginxKeepalive,
    rosterBin: path.resolve(o.rosterBin),
    rosterArgs: o.rosterArgs.split(/\s+/).filter((arg) => arg.length > 0),
  };
}

function log(message: string): void {
  process.stderr.write(`[proxy-overhead] ${message}\n`);
}

/** Sequential grpc-js calls through the path: each must be OK and echo the payload. */
async function grpcCheck(
  target: Target,
  payload: Buffer,
  calls: number,
  deadlineMs = 5000,
): Promise<PathCheck> {
  const { Client } = loadEcho();
  const client = new Client(
    `127.0.0.1:${target.port}`,
    grpc.credentials.createInsecure(),
    UNLIMITED_MESSAGES,
  );
  const before = await Promise.all(target.backends.map((backend) => backend.served()));
  try {
    for (let i = 0; i < calls; i++) {
      const reply = await new Promise<EchoMessage>((resolve, reject) => {
        const deadline = new Date(Date.now() + deadlineMs);
        client.Echo({ payload }, { deadline }, (error, response) => {
          if (error !== null) reject(error);
          else resolve(response);
        });
      });
      if (!Buffer.from(reply.payload).equals(payload)) {
        return { ok: false, detail: `call ${i + 1}: reply payload differs from the request's` };
      }
    }
  } catch (error) {
    const e = error as grpc.ServiceError;
    const code = typeof e.code === "number" ? (grpc.status[e.code] ?? String(e.code)) : "error";
    return { ok: false, detail: `grpc-status ${code}: ${e.details ?? e.message}` };
  } finally {
    client.close();
  }
  const after = await Promise.all(target.backends.map((backend) => backend.served()));
  const split = after.map((n, i) => n - (before[i] ?? 0));
  const served = split.reduce((a, b) => a + b, 0);
  if (served !== calls) {
    return { ok: false, detail: `grpc-status OK but backends served ${served} of ${calls} calls` };
  }
  return { ok: true, detail: `OK ${calls}/${calls}, per backend ${split.join("/")}` };
}

interface Context {
  options: Options;
  registry: ChildRegistry;
  requestFile: string;
  tmpDir: string;
  ticksPerS: number;
  allBackends: Backend[];
}

async function measure(ctx: Context, target: Target, round: number, attempt: number): Promise<RunRecord> {
  const { options, registry } = ctx;
  const spec = {
    port: target.port,
    urlPath: ECHO_PATH,
    requestFile: ctx.requestFile,
    connections: options.connections,
    streams: options.streams,
    core: LOAD_CORE,
  };
  if (options.warmup > 0) {
    await runH2load(registry, { ...spec, durationS: options.warmup, logFile: undefined });
  }
  const logFile = path.join(ctx.tmpDir, `h2load-${target.name}-${round}-${attempt}.log`);
  const servedBefore = await Promise.all(target.backends.map((backend) => backend.served()));
  const backendPids = ctx.allBackends.map((backend) => backend.child.pid);
  const targetBackendPids = target.backends.map((backend) => backend.child.pid);
  const backendPorts = new Set(target.backends.map((backend) => backend.port));
  const frontPorts = new Set(target.proxy === undefined ? [] : [target.port]);
  const backendWaitBefore = timeWaitConnections(backendPorts);
  const frontWaitBefore = timeWaitConnections(frontPorts);
  const proxyBefore = target.proxy === undefined ? 0 : treeTicks(target.proxy.pid);
  const proxySysBefore = target.proxy === undefined ? 0 : treeSysTicks(target.proxy.pid);
  const backendBefore = backendPids.map(processTicks);
  const cpuBefore = readCpuTimes();
  const selfBefore = process.cpuUsage();
  const t0 = performance.now();

  const load = await runH2load(registry, { ...spec, durationS: options.duration, logFile });

  const wallS = (performance.now() - t0) / 1000;
  const selfCpu = process.cpuUsage(selfBefore);
  const cpuAfter = readCpuTimes();
  const backendAfter = backendPids.map(processTicks);
  const proxyAfter = target.proxy === undefined ? 0 : treeTicks(target.proxy.pid);
  const proxySysAfter = target.proxy === undefined ? 0 : treeSysTicks(target.proxy.pid);
  const servedAfter = await Promise.all(target.backends.map((backend) => backend.served()));
  const newlyClosed = (before: Set<string>, after: Set<string>): number =>
    [...after].filter((key) => !before.has(key)).length;
  const backendConnectionsClosed = newlyClosed(backendWaitBefore, timeWaitConnections(backendPorts));
  const frontConnectionsClosed = newlyClosed(frontWaitBefore, timeWaitConnections(frontPorts));

  const latencies = readLatencies(logFile);
  const calls = load.succeeded;
  const usPerTick = 1e6 / ctx.ticksPerS;
  const perCall = (ticks: number): number => (calls > 0 ? (ticks * usPerTick) / calls : Number.NaN);
  const backendTicks = backendPids.map((_pid, i) => (backendAfter[i] ?? 0) - (backendBefore[i] ?? 0));
  const targetBackendTicks = backendTicks
    .filter((_, i) => targetBackendPids.includes(backendPids[i] ?? -1))
    .reduce((a, b) => a + b, 0);
  const proxyTicks = proxyAfter - proxyBefore;
  const served = servedAfter.map((n, i) => n - (servedBefore[i] ?? 0));
  const servedTotal = served.reduce((a, b) => a + b, 0);
  // Every success must have been served by a backend. Calls cut off when the warm-up and the measured
  // h2load stop may be served without being counted as done: at most one per stream in flight, each.
  const inFlight = options.connections * options.streams;
  const servedMatches =
    calls > 0 && servedTotal >= calls && servedTotal <= calls + 2 * inFlight + Math.ceil(calls * 0.001);

  const ours =
    proxyTicks +
    backendTicks.reduce((a, b) => a + b, 0) +
    load.cpuS * ctx.ticksPerS +
    ((selfCpu.user + selfCpu.system) / 1e6) * ctx.ticksPerS;
  const otherCores = Math.max(0, (cpuAfter.busy - cpuBefore.busy - ours) / ctx.ticksPerS / wallS);
  const stealCores = (cpuAfter.steal - cpuBefore.steal) / ctx.ticksPerS / wallS;
  return {
    path: target.name,
    round,
    attempt,
    durationS: options.duration,
    wallS,
    succeeded: calls,
    failed: load.failed,
    errored: load.errored,
    rps: calls / options.duration,
    p50Ms: latencies.p50Ms,
    p99Ms: latencies.p99Ms,
    p999Ms: latencies.p999Ms,
    proxyCpuUsPerCall: target.proxy === undefined ? null : perCall(proxyTicks),
    proxySysUsPerCall: target.proxy === undefined ? null : perCall(proxySysAfter - proxySysBefore),
    backendCpuUsPerCall: perCall(targetBackendTicks),
    h2loadCpuUsPerCall: calls > 0 ? (load.cpuS * 1e6) / calls : Number.NaN,
    served,
    servedMatches,
    backendConnectionsClosed,
    frontConnectionsClosed,
    stealCores,
    otherCores,
    noisy: otherCores > options.maxOther,
  };
}

/** Why a run shows the path is broken (so its figures must not be reported), or undefined. */
function brokenRun(run: RunRecord, target: Target): string | undefined {
  if (target.proxy?.hasExited()) {
    return `the proxy exited during the run: ${lastLines(target.proxy.tail())}`;
  }
  if (run.succeeded === 0) return `no call succeeded (${run.failed} failed, ${run.errored} errored)`;
  if (!run.servedMatches) {
    return `backends served ${run.served.reduce((a, b) => a + b, 0)} calls but h2load counted ${run.succeeded} successes`;
  }
  return undefined;
}

function describeRun(run: RunRecord): string {
  const proxy =
    run.proxyCpuUsPerCall === null
      ? ""
      : ` proxy ${run.proxyCpuUsPerCall.toFixed(0)} µs/call (${(run.proxySysUsPerCall ?? 0).toFixed(0)} in the kernel),`;
  return (
    `${run.path} round ${run.round + 1}${run.attempt > 0 ? ` (retry ${run.attempt})` : ""}: ` +
    `${run.rps.toFixed(0)} rps, p50 ${run.p50Ms.toFixed(2)} p99 ${run.p99Ms.toFixed(1)} ms,${proxy} ` +
    `backends ${run.backendCpuUsPerCall.toFixed(0)} µs/call, served ${run.served.join("+")} for ` +
    `${run.succeeded} ok${run.servedMatches ? "" : " (MISMATCH)"}, ` +
    `connections closed ${run.frontConnectionsClosed} front/${run.backendConnectionsClosed} back, steal ${run.stealCores.toFixed(2)}, ` +
    `other ${run.otherCores.toFixed(2)} cores${run.noisy ? " (noisy)" : ""}`
  );
}

/** `--callgrind`: instructions per call of each proxy, under valgrind (callgrind.ts). */
async function callgrindMode(
  options: Options,
  registry: ChildRegistry,
  backends: readonly [Backend, Backend],
  settings: PathSettings,
  requestFile: string,
  payload: Buffer,
): Promise<void> {
  const missing = callgrindToolsMissing();
  if (missing !== undefined) throw new Error(missing);
  const skipped = options.paths.filter((name) => name === "direct");
  if (skipped.length > 0) log("direct: skipped in --callgrind mode (no proxy whose instructions to count)");
  const paths = options.paths.filter((name) => name !== "direct");
  const summaries: CallgrindSummary[] = await runCallgrind(
    {
      registry,
      backends,
      settings,
      requestFile,
      options: {
        warmupCalls: options.callgrindWarmup,
        calls: options.callgrindCalls,
        windows: options.callgrindWindows,
        connections: options.connections,
        streams: options.streams,
        startTimeoutS: options.callgrindStartTimeout,
        settleS: options.callgrindSettle,
      },
      // Under valgrind a cold node answers its first calls in seconds, not milliseconds.
      check: (target) => grpcCheck(target, payload, 20, 120_000),
      log,
    },
    paths,
  );
  const title =
    `Instructions per call (callgrind): ${options.size}-byte unary, ${options.connections} conn × ` +
    `${options.streams} stream${options.streams === 1 ? "" : "s"}, warm-up ${options.callgrindWarmup} calls, ` +
    `${options.callgrindWindows} windows × ${options.callgrindCalls} calls, two grpc-js echo backends`;
  const table = callgrindMarkdown(summaries, { title, windows: options.callgrindWindows, skipped });
  process.stdout.write(`${table}\n`);
  if (options.out !== undefined) {
    const report = {
      date: new Date().toISOString(),
      mode: "callgrind",
      options: { ...options, paths: options.paths },
      machine: {
        cores: os.cpus().length,
        cpu: os.cpus()[0]?.model ?? "unknown",
        node: process.version,
        valgrind: valgrindVersion() ?? "unknown",
        h2load: commandVersion("h2load", ["--version"]),
        nginx: commandVersion("/usr/sbin/nginx", ["-v"]),
        haproxy: commandVersion("/usr/sbin/haproxy", ["-v"]),
      },
      paths: summaries,
      markdown: table,
    };
    writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);
    log(`wrote ${options.out}`);
  }
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const registry = new ChildRegistry();
  const tmpDir = mkdtempSync(path.join(os.tmpdir(), "roster-proxy-overhead-"));
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping every process started`);
    void registry.killAll().finally(() => {
      if (!options.keepTmp) rmSync(tmpDir, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  process.on("exit", () => registry.killAllSync());

  try {
    if (os.cpus().length < 2)
      throw new Error("needs 2 cores: the proxy on core 1, load and backends on core 0");
    // Keep this process (and the grpc-js check client) off the proxy's core.
    pinProcess(process.pid, LOAD_CORE);

    const payload = Buffer.alloc(options.size, 0x78);
    const requestFile = path.join(tmpDir, "req.bin");
    writeFileSync(requestFile, grpcFrame(encodeEchoMessage(payload)));

    log(`starting 2 grpc-js echo backends on core ${LOAD_CORE}`);
    const backends = [
      await Backend.start(registry, "backend-1"),
      await Backend.start(registry, "backend-2"),
    ] as const;
    log(`backends on 127.0.0.1:${backends[0].port} and 127.0.0.1:${backends[1].port}`);

    const settings: PathSettings = {
      concurrency: options.connections * options.streams,
      streamsPerConnection: options.streams,
      tmpDir,
      rosterBin: options.rosterBin,
      rosterArgs: options.rosterArgs,
      nginxKeepalive: options.nginxKeepalive,
    };
    if (options.callgrind) {
      await callgrindMode(options, registry, backends, settings, requestFile, payload);
      return;
    }
    const summaries: PathSummary[] = [];
    const targets = new Map<PathName, Target>();
    for (const name of options.paths) {
      const summary: PathSummary = {
        path: name,
        available: false,
        reason: undefined,
        check: undefined,
        runs: [],
        median: undefined,
      };
      summaries.push(summary);
      let target: Target;
      try {
        target = await startTarget(name, registry, backends, settings);
      } catch (error) {
        summary.reason = (error as Error).message;
        log(`${name}: not available (${summary.reason})`);
        continue;
      }
      summary.check = await grpcCheck(target, payload, 20);
      if (!summary.check.ok) {
        summary.reason = `sample call failed: ${summary.check.detail}`;
        log(`${name}: not available (${summary.reason})`);
        if (target.proxy !== undefined) await registry.kill(target.proxy);
        continue;
      }
      summary.available = true;
      targets.set(name, target);
      log(`${name}: 127.0.0.1:${target.port}, sample call ${summary.check.detail}`);
    }

    const ctx: Context = {
      options,
      registry,
      requestFile,
      tmpDir,
      ticksPerS: clockTicksPerSecond(),
      allBackends: [...backends],
    };
    const order = [...targets.values()];
    for (let round = 0; round < options.runs; round++) {
      // Rotate the order each round so drift and position effects reach every path alike.
      const rotated = order.map((_, i) => order[(i + round) % order.length]!);
      for (const target of rotated) {
        const summary = summaries.find((s) => s.path === target.name)!;
        if (!summary.available) continue;
        for (let attempt = 0; attempt <= options.retries; attempt++) {
          let run: RunRecord;
          try {
            run = await measure(ctx, target, round, attempt);
          } catch (error) {
            summary.available = false;
            summary.reason = `run failed: ${(error as Error).message}`;
            break;
          }
          summary.runs.push(run);
          log(describeRun(run));
          const broken = brokenRun(run, target);
          if (broken !== undefined) {
            summary.available = false;
            summary.reason = broken;
            break;
          }
          if (!run.noisy) break;
        }
        if (!summary.available) {
          log(`${target.name}: dropped (${summary.reason})`);
          if (target.proxy !== undefined) await registry.kill(target.proxy);
        }
      }
    }
    for (const summary of summaries) summary.median = summarize(summary.runs);

    const title =
      `${options.unloaded ? "Unloaded" : "Loaded"}: ${options.size}-byte unary, ` +
      `${options.connections} conn × ${options.streams} stream${options.streams === 1 ? "" : "s"}, ${options.runs} × ${options.duration} s ` +
      `(warm-up ${options.warmup} s), two grpc-js echo backends`;
    const table = markdown(summaries, { title, unloaded: options.unloaded, maxOther: options.maxOther });
    process.stdout.write(`${table}\n`);

    if (options.out !== undefined) {
      const machine = {
        cores: os.cpus().length,
        cpu: os.cpus()[0]?.model ?? "unknown",
        clockTicksPerS: ctx.ticksPerS,
        node: process.version,
        h2load: commandVersion("h2load", ["--version"]),
        nginx: commandVersion("/usr/sbin/nginx", ["-v"]),
        haproxy: commandVersion("/usr/sbin/haproxy", ["-v"]),
      };
      const report = {
        date: new Date().toISOString(),
        options: { ...options, paths: options.paths },
        machine,
        paths: summaries,
        markdown: table,
      };
      writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);
      log(`wrote ${options.out}`);
    }
  } finally {
    await registry.killAll();
    if (options.keepTmp) log(`kept ${tmpDir}`);
    else rmSync(tmpDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
