/**
 * `roster bench`: argv parsing and wiring of the load generator in src/bench. See docs/bench.md.
 *
 * Every error a user can fix (flags, proto, method, unreachable target, unwritable report file) is a
 * ConfigError, which `roster` prints as one line on stderr with exit status 2, without a stack trace.
 */
import { accessSync, constants, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import { readUplotAssets, renderHtml } from "../bench/html.ts";
import { type BenchFlags, type BenchSettings, DEFAULTS, parseBenchFlags } from "../bench/options.ts";
import { type BenchReport, buildReport, formatSummary } from "../bench/report.ts";
import { type RunProgress, runBenchmark } from "../bench/run.ts";
import { ConfigError } from "../core/errors.ts";

export interface BenchIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/**
 * Runs `roster bench` with already-parsed flags: validates them, runs the load, prints the summary table
 * (and the generator-CPU warning, loudly, on stderr), writes --json / --html. Resolves with the report.
 * Ctrl-C stops the run early and still reports what was measured; a second Ctrl-C exits at once.
 */
export async function runBench(
  options: BenchFlags,
  io: BenchIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<BenchReport> {
  const settings = parseBenchFlags(options);
  for (const [file, flag] of [
    [settings.json, "--json"],
    [settings.html, "--html"],
  ] as const) {
    if (file !== undefined) checkWritable(file, flag);
  }
  const assets = settings.html === undefined ? undefined : readUplotAssets();

  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts === 1) {
      io.stderr.write("\nroster bench: stopping (Ctrl-C again to quit at once)\n");
      controller.abort();
    } else {
      process.exit(130);
    }
  };
  process.on("SIGINT", onSigint);
  const bar = settings.progress && io.stderr.isTTY === true ? progressBar(settings, io.stderr) : undefined;
  let run: Awaited<ReturnType<typeof runBenchmark>>;
  try {
    run = await runBenchmark(settings, {
      signal: controller.signal,
      ...(bar === undefined ? {} : { onProgress: bar.update }),
    });
  } finally {
    bar?.stop();
    process.off("SIGINT", onSigint);
  }

  const report = buildReport(run);
  io.stdout.write(formatSummary(report));
  if (report.generator.warning !== undefined) {
    const line = "!".repeat(78);
    io.stderr.write(`\n${line}\n${report.generator.warning}\n${line}\n`);
  }
  if (settings.json !== undefined) {
    write(settings.json, `${JSON.stringify(report, null, 2)}\n`, "--json");
    io.stdout.write(`JSON report: ${settings.json}\n`);
  }
  if (settings.html !== undefined && assets !== undefined) {
    write(settings.html, renderHtml(report, assets), "--html");
    io.stdout.write(`HTML report: ${settings.html}\n`);
  }
  return report;
}

function checkWritable(file: string, flag: string): void {
  try {
    accessSync(dirname(resolve(file)), constants.W_OK);
  } catch (err) {
    throw new ConfigError(
      flag,
      `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

function write(file: string, text: string, flag: string): void {
  try {
    writeFileSync(file, text);
  } catch (err) {
    throw new ConfigError(
      flag,
      `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** A bar on stderr: time-based in duration mode, call-based in calls mode. */
function progressBar(settings: BenchSettings, stream: NodeJS.WritableStream) {
  const n = settings.targets.length;
  const byCalls = settings.stop.kind === "calls";
  const total =
    settings.stop.kind === "calls" ? settings.stop.count * n : n * (settings.warmupMs + settings.stop.ms);
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format:
        "{bar} {percentage}% | {phase} {target} | {measured} calls, {errors} errors, {inFlight} in flight",
      hideCursor: true,
      clearOnComplete: true,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { phase: "connecting", measured: 0, errors: 0, inFlight: 0 });
  return {
    update: (p: RunProgress) => {
      const value = byCalls ? p.measured : Math.min(total, p.elapsedMs);
      bar.update(value, {
        phase: n > 1 && p.target !== "" ? `${p.phase} ${p.target}` : p.phase,
        measured: p.measured,
        errors: p.errors,
        inFlight: p.inFlight,
      });
    },
    stop: () => bar.stop(),
  };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Adds `roster bench` to the `roster` program. */
export function registerBenchCommand(program: Command): Command {
  return program
    .command("bench")
    .description(
      "gRPC load generator: closed or open loop, HDR percentiles, per-backend shares, JSON/HTML reports",
    )
    .option("--target <host:port>", "server or balancer to load: HOST:PORT, [IPv6]:PORT or unix:PATH")
    .option(
      "--compare <t1,t2,...>",
      "two or more targets run in alternation within one run, with ratio columns",
    )
    .option("--proto <file>", "the .proto file that defines the method")
    .option("--import-path <dir>", "where the proto's imports are found (repeatable)", collect)
    .option("--call <pkg.Service/Method>", "the method to call")
    .option("--data <json>", "the request message as JSON, field names as in the .proto (default {})")
    .option("--data-file <file>", "the request message as JSON, read from a file")
    .option("--payload-size <bytes>", "fill the request's first bytes field with this many bytes")
    .option("--stream-messages <n>", "requests per call of a client-streaming or bidi method (default 1)")
    .option("--metadata <key=value>", "request metadata (repeatable); -bin keys take base64", collect)
    .option("--connections <n>", "HTTP/2 connections (separate grpc-js channels) per target (default 1)")
    .option("--concurrency <n>", `closed loop: calls in flight (default ${DEFAULTS.concurrency})`)
    .option(
      "--rate <calls/s>",
      "open loop: calls per second on a fixed schedule, latency from intended start",
    )
    .option("--max-in-flight <n>", `open loop: cap on calls in flight (default ${DEFAULTS.maxInFlight})`)
    .option("--duration <time>", `measured time per target, e.g. 30s, 2m (default ${DEFAULTS.duration})`)
    .option("--calls <n>", "measure this many calls per target instead of a duration")
    .option("--warmup <time>", `unmeasured load before measuring (default ${DEFAULTS.warmup})`)
    .option("--timeout <time>", `deadline of each call, 0 for none (default ${DEFAULTS.timeout})`)
    .option("--connect-timeout <time>", `time to reach each target (default ${DEFAULTS.connectTimeout})`)
    .option("--workers <n>", "load-generating processes whose histograms are merged (default 1)")
    .option(
      "--backend-header <name>",
      `response header naming the backend (default ${DEFAULTS.backendHeader})`,
    )
    .option("--backend-field <name>", "read the backend's identity from this response message field instead")
    .option("--slice <time>", `with --compare: time each target gets in turn (default ${DEFAULTS.slice})`)
    .option("--json <file>", "write the full report as JSON")
    .option("--html <file>", "write a self-contained HTML report with charts")
    .option("--no-progress", "no progress bar (there is none when stderr is not a terminal anyway)")
    .addHelpText(
      "after",
      `
Examples:
  roster bench --target 127.0.0.1:50051 --proto echo.proto --call pkg.Echo/Echo --data '{"message":"hi"}'
  roster bench --target 127.0.0.1:50051 --proto echo.proto --call pkg.Echo/Echo --rate 2000 --duration 30s
  roster bench --compare 127.0.0.1:50061,127.0.0.1:50051 --proto echo.proto --call pkg.Echo/Echo \\
               --payload-size 64 --connections 4 --concurrency 128 --workers 2 --html report.html

See docs/bench.md.`,
    )
    .action(async (options: BenchFlags) => {
      const report = await runBench(options);
      if (report.interrupted) process.exitCode = 130;
    });
}
