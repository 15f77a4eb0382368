// `--callgrind` mode of bench/proxy-overhead: user-space instructions per forwarded call.
//
// Each proxy runs under `valgrind --tool=callgrind`; after a warm-up of W calls, K windows of
// `callgrind_control -z` (zero) → N calls with `h2load -n` → `callgrind_control -d` (dump) give the
// instructions the proxy process executed (all its threads, user space only) per call that succeeded.
// Instruction counts hardly depend on what else the machine runs, unlike CPU time (method:
// docs/benchmarks.md, "Method"; BENCHMARKING.md, "Instructions per call").
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ECHO_PATH } from "./echo.ts";
import { runH2load } from "./h2load.ts";
import {
  type Backend,
  LOAD_CORE,
  type PathName,
  type PathSettings,
  startTarget,
  type Target,
} from "./paths.ts";
import { type ChildRegistry, clockTicksPerSecond, lastLines, processTicks, processTree } from "./proc.ts";
import { median, type PathCheck } from "./report.ts";

// ---- pure helpers (unit-tested in callgrind.test.ts) ----

export interface DumpTotals {
  /** `pid:` of the dump's header: the process the counts belong to. */
  pid: number | undefined;
  /** `cmd:` of the header: the command line callgrind saw. */
  cmd: string | undefined;
  /** Event names of the `events:` line, e.g. ["Ir"]. */
  events: string[];
  /** Per event, the sum of the `totals:` lines (the `summary:` lines if there is no `totals:`). */
  totals: number[];
}

/**
 * Reads the header and the totals of a callgrind output file. A file may hold several parts, each
 * with its own `totals:`; they are summed. `summary:` is only the fallback: callgrind writes the
 * header's summary before it has counted everything (a dump of an idle process had `summary: 0`
 * and `totals: 5`).
 */
export function parseCallgrindDump(text: string): DumpTotals {
  let pid: number | undefined;
  let cmd: string | undefined;
  let events: string[] = [];
  const totals: number[][] = [];
  const summaries: number[][] = [];
  const numbers = (rest: string): number[] =>
    rest
      .trim()
      .split(/\s+/)
      .filter((field) => field.length > 0)
      .map(Number);
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const key = line.slice(0, colon);
    const rest = line.slice(colon + 1);
    if (key === "pid" && pid === undefined) pid = Number(rest.trim());
    else if (key === "cmd" && cmd === undefined) cmd = rest.trim();
    else if (key === "events") events = rest.trim().split(/\s+/);
    else if (key === "totals") totals.push(numbers(rest));
    else if (key === "summary") summaries.push(numbers(rest));
  }
  const rows = totals.length > 0 ? totals : summaries;
  const sums = events.map((_, i) => rows.reduce((sum, row) => sum + (row[i] ?? 0), 0));
  if (rows.some((row) => row.some((v) => !Number.isFinite(v)))) {
    throw new Error("callgrind dump: a totals/summary line is not numeric");
  }
  return { pid: Number.isInteger(pid) ? pid : undefined, cmd, events, totals: rows.length > 0 ? sums : [] };
}

/** Instructions executed (event `Ir`) in a dump; throws if the dump has no totals or no Ir. */
export function instructionsOf(dump: DumpTotals): number {
  const index = dump.events.indexOf("Ir");
  if (index < 0)
    throw new Error(`callgrind dump has no Ir event (events: ${dump.events.join(" ") || "none"})`);
  const value = dump.totals[index];
  if (value === undefined) throw new Error("callgrind dump has no totals: or summary: line");
  return value;
}

/** `vgdb -l` lines ("use --pid=123 for /usr/bin/valgrind.bin --tool=callgrind … prog args") by pid. */
export function parseVgdbList(text: string): Map<number, string> {
  const found = new Map<number, string>();
  for (const line of text.split("\n")) {
    const match = /^use --pid=(\d+) for (.*)$/.exec(line.trim());
    if (match !== null) found.set(Number(match[1]), match[2]!.trim());
  }
  return found;
}

/**
 * The program valgrind runs in a command line as `vgdb -l` shows it: the first word after the
 * valgrind binary that is not an option (every option we pass is a single `--name=value` word).
 */
export function valgrindProgram(command: string): string | undefined {
  const words = command.split(/\s+/).filter((word) => word.length > 0);
  return words.slice(1).find((word) => !word.startsWith("-"));
}

export interface DumpFile {
  name: string;
  /** N of callgrind.out.PID.N: the dump's sequence number. */
  dump: number;
  /** Valgrind's thread number (1 = the main thread) with --separate-threads=yes, else undefined. */
  thread: number | undefined;
}

/**
 * The numbered dump files of one process in a directory: callgrind.out.PID.N, or with
 * --separate-threads=yes callgrind.out.PID.N-TT (one per thread), by N then thread. The final dump
 * at exit (callgrind.out.PID) is not numbered and left out.
 */
export function dumpFiles(names: readonly string[], pid: number): DumpFile[] {
  const pattern = new RegExp(`^callgrind\\.out\\.${pid}\\.(\\d+)(?:-(\\d+))?$`);
  const found: DumpFile[] = [];
  for (const name of names) {
    const match = pattern.exec(name);
    if (match === null) continue;
    found.push({
      name,
      dump: Number(match[1]),
      thread: match[2] === undefined ? undefined : Number(match[2]),
    });
  }
  return found.sort((a, b) => a.dump - b.dump || (a.thread ?? 0) - (b.thread ?? 0));
}

// ---- valgrind control ----

/** The command a proxy runs under: everything valgrind'd, except tsx's esbuild service (Go). */
export function valgrindWrapper(outDir: string): string[] {
  return [
    "valgrind",
    "--tool=callgrind",
    "--smc-check=all-non-file",
    "--trace-children=yes",
    // roster run from the TypeScript sources starts tsx's esbuild service, a Go binary: native is fine.
    "--trace-children-skip=*esbuild*",
    // One file per thread and dump: the main thread's share tells the event loop's work from V8's
    // background threads (TurboFan jobs, GC helpers); the figure is still the sum of all threads.
    "--separate-threads=yes",
    `--callgrind-out-file=${outDir}/callgrind.out.%p`,
  ];
}

export function valgrindVersion(): string | undefined {
  const result = spawnSync("valgrind", ["--version"], { encoding: "utf8", timeout: 10_000 });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

/** Runs `callgrind_control <flag> <pid>`; throws unless it reports OK. */
function callgrindControl(pid: number, flag: "-z" | "-d"): void {
  let output: string;
  try {
    output = execFileSync("callgrind_control", [flag, String(pid)], {
      encoding: "utf8",
      timeout: 120_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (error) {
    throw new Error(`callgrind_control ${flag} ${pid} failed: ${(error as Error).message}`);
  }
  if (!/\bOK\b/.test(output)) throw new Error(`callgrind_control ${flag} ${pid}: ${lastLines(output)}`);
}

/**
 * The pid of the valgrind'd proxy: among the started process and its descendants, the one valgrind
 * runs `program` in. With `taskset … valgrind … prog` it is the started pid itself (both exec), but
 * nothing here assumes so.
 */
async function findCallgrindPid(rootPid: number, program: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let seen = "";
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    const listing = spawnSync("vgdb", ["-l"], { encoding: "utf8", timeout: 10_000 }).stdout ?? "";
    const running = parseVgdbList(listing);
    const tree = new Set(processTree(rootPid));
    const ours = [...running].filter(([pid]) => tree.has(pid));
    const matching = ours.filter(([, command]) => path.basename(valgrindProgram(command) ?? "") === program);
    if (matching.length === 1) return matching[0]![0];
    if (matching.length > 1) {
      throw new Error(
        `several valgrind'd ${program} processes under pid ${rootPid}: ${matching.map(([p]) => p).join(", ")}`,
      );
    }
    seen = ours.map(([pid, command]) => `${pid}: ${command}`).join("; ");
    await sleep(200);
  }
  throw new Error(`no valgrind'd ${program} under pid ${rootPid} (vgdb -l: ${seen || "none of ours"})`);
}

/** Waits for the dump `callgrind_control -d` has just asked for: every thread's file, complete. */
async function newDump(outDir: string, pid: number, known: ReadonlySet<string>): Promise<DumpFile[]> {
  const deadline = Date.now() + 60_000;
  let previous = "";
  for (let attempt = 0; attempt < 600 && Date.now() < deadline; attempt++) {
    const fresh = dumpFiles(readdirSync(outDir), pid).filter((file) => !known.has(file.name));
    const numbers = new Set(fresh.map((file) => file.dump));
    if (numbers.size > 1)
      throw new Error(`dumps ${[...numbers].join(", ")} of pid ${pid} where one was expected`);
    const complete = fresh.every((file) =>
      /^totals:/m.test(readFileSync(path.join(outDir, file.name), "utf8")),
    );
    const names = fresh.map((file) => file.name).join(",");
    // The same complete set twice in a row: callgrind has written every thread's file.
    if (fresh.length > 0 && complete && names === previous) return fresh;
    previous = complete ? names : "";
    await sleep(200);
  }
  throw new Error(`no new complete callgrind dump of pid ${pid} in ${outDir}`);
}

/**
 * Waits until the process (all its threads) has used less than `idleShare` of a core over one
 * second, or `maxS` have passed; returns the seconds waited. A safeguard, so that background work
 * left from the previous load (V8's TurboFan jobs, which under valgrind share one lock with the busy
 * main thread) does not land in the next window; in the runs so far roster was idle within 1–2 s.
 */
async function settle(pid: number, maxS: number, idleShare = 0.05): Promise<number> {
  const ticksPerS = clockTicksPerSecond();
  const started = performance.now();
  let last = processTicks(pid);
  for (let second = 0; second < maxS; second++) {
    await sleep(1000);
    const now = processTicks(pid);
    if ((now - last) / ticksPerS < idleShare) break;
    last = now;
  }
  return (performance.now() - started) / 1000;
}

// ---- the measurement ----

export interface CallgrindOptions {
  warmupCalls: number;
  calls: number;
  windows: number;
  connections: number;
  streams: number;
  startTimeoutS: number;
  /** Longest wait for the proxy to go idle after the warm-up and between windows. */
  settleS: number;
}

export interface CallgrindWindow {
  window: number;
  instructions: number;
  succeeded: number;
  failed: number;
  errored: number;
  /** Echo calls each backend of the path answered during the window. */
  served: number[];
  /** Every call succeeded and the backends served exactly that many. */
  servedMatches: boolean;
  instructionsPerCall: number;
  /** The part of instructionsPerCall executed by the main thread (node's event loop). */
  mainThreadPerCall: number;
  /** Threads with a dump file in this window. */
  threads: number;
  /** callgrind.out.PID.N (the per-thread files add -TT). */
  dumpFile: string;
  /** Seconds waited before the window for the proxy to go idle (background JIT work). */
  settleS: number;
}

export interface CallgrindSummary {
  path: PathName;
  available: boolean;
  reason: string | undefined;
  check: PathCheck | undefined;
  /** The valgrind'd process whose counters were zeroed and dumped. */
  pid: number | undefined;
  command: string | undefined;
  warmup: { runs: number; succeeded: number; failed: number; errored: number; served: number } | undefined;
  windows: CallgrindWindow[];
  /** Median of the windows' instructions per call. */
  median: number | undefined;
  /** Median of the windows' main-thread instructions per call. */
  mainThreadMedian: number | undefined;
}

export interface CallgrindDeps {
  registry: ChildRegistry;
  backends: readonly [Backend, Backend];
  settings: PathSettings;
  requestFile: string;
  options: CallgrindOptions;
  /** Sequential grpc-js calls through the path (deadline long enough for valgrind). */
  check: (target: Target) => Promise<PathCheck>;
  log: (message: string) => void;
}

const PROGRAMS: Record<Exclude<PathName, "direct">, string> = {
  roster: path.basename(process.execPath),
  nginx: "nginx",
  haproxy: "haproxy",
};

/** Under valgrind node runs ~50× slower: a generous ceiling per call for h2load's runs. */
function loadTimeoutS(calls: number): number {
  return 300 + Math.ceil(calls * 0.2);
}

export async function runCallgrind(
  deps: CallgrindDeps,
  paths: readonly Exclude<PathName, "direct">[],
): Promise<CallgrindSummary[]> {
  const summaries: CallgrindSummary[] = [];
  for (const name of paths) {
    const summary: CallgrindSummary = {
      path: name,
      available: false,
      reason: undefined,
      check: undefined,
      pid: undefined,
      command: undefined,
      warmup: undefined,
      windows: [],
      median: undefined,
      mainThreadMedian: undefined,
    };
    summaries.push(summary);
    try {
      await measurePath(deps, name, summary);
      summary.available = summary.windows.length > 0;
    } catch (error) {
      summary.available = false;
      summary.reason = (error as Error).message;
      deps.log(`${name}: not available (${summary.reason})`);
    }
    const ok = summary.windows.filter((w) => w.servedMatches);
    summary.median = ok.length > 0 ? median(ok.map((w) => w.instructionsPerCall)) : undefined;
    summary.mainThreadMedian = ok.length > 0 ? median(ok.map((w) => w.mainThreadPerCall)) : undefined;
    if (summary.available && ok.length < summary.windows.length) {
      summary.reason = `${summary.windows.length - ok.length} window(s) with failed or unserved calls left out`;
    }
  }
  return summaries;
}

async function measurePath(
  deps: CallgrindDeps,
  name: Exclude<PathName, "direct">,
  summary: CallgrindSummary,
): Promise<void> {
  const { registry, options, log } = deps;
  const outDir = path.join(deps.settings.tmpDir, `callgrind-${name}`);
  mkdirSync(outDir, { recursive: true });
  const settings: PathSettings = {
    ...deps.settings,
    wrapper: valgrindWrapper(outDir),
    startTimeoutMs: options.startTimeoutS * 1000,
  };
  log(`${name}: starting under callgrind (up to ${options.startTimeoutS} s)`);
  const started = Date.now();
  const target = await startTarget(name, registry, deps.backends, settings);
  const proxy = target.proxy!;
  try {
    const pid = await findCallgrindPid(proxy.pid, PROGRAMS[name], 30_000);
    summary.pid = pid;
    log(`${name}: listening after ${((Date.now() - started) / 1000).toFixed(0)} s, callgrind pid ${pid}`);
    summary.check = await deps.check(target);
    if (!summary.check.ok) throw new Error(`sample call failed: ${summary.check.detail}`);
    log(`${name}: sample call ${summary.check.detail}`);

    const spec = {
      port: target.port,
      urlPath: ECHO_PATH,
      requestFile: deps.requestFile,
      connections: options.connections,
      streams: options.streams,
      durationS: 0,
      core: LOAD_CORE,
      logFile: undefined,
    };
    const served = async (): Promise<number[]> => Promise.all(target.backends.map((b) => b.served()));
    const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0);

    if (options.warmupCalls > 0) {
      // In runs of one window's size, each on fresh connections like the windows: roster's hot
      // functions deopt ("wrong map") and re-optimize when new connections arrive, so one long
      // warm-up on 4 connections left ~200k instructions/call of TurboFan work in window 1.
      const before = await served();
      const t0 = performance.now();
      const warmup = { runs: 0, succeeded: 0, failed: 0, errored: 0, served: 0 };
      for (let left = options.warmupCalls; left > 0; left -= options.calls) {
        const requests = Math.max(options.connections, Math.min(left, options.calls));
        const warm = await runH2load(registry, { ...spec, requests, timeoutS: loadTimeoutS(requests) });
        warmup.runs += 1;
        warmup.succeeded += warm.succeeded;
        warmup.failed += warm.failed;
        warmup.errored += warm.errored;
      }
      warmup.served = sum(await served()) - sum(before);
      summary.warmup = warmup;
      log(
        `${name}: warm-up ${warmup.succeeded}/${options.warmupCalls} ok in ${warmup.runs} h2load runs, ` +
          `served ${warmup.served}, ${((performance.now() - t0) / 1000).toFixed(0)} s`,
      );
    }

    const known = new Set(dumpFiles(readdirSync(outDir), pid).map((file) => file.name));
    for (let window = 0; window < options.windows; window++) {
      if (proxy.hasExited()) throw new Error(`the proxy exited: ${lastLines(proxy.tail())}`);
      const settleS = await settle(pid, options.settleS);
      const before = await served();
      callgrindControl(pid, "-z");
      const t0 = performance.now();
      const load = await runH2load(registry, {
        ...spec,
        requests: options.calls,
        timeoutS: loadTimeoutS(options.calls),
      });
      const wallS = (performance.now() - t0) / 1000;
      callgrindControl(pid, "-d");
      const after = await served();
      const files = await newDump(outDir, pid, known);
      let instructions = 0;
      let mainThread = 0;
      for (const file of files) {
        known.add(file.name);
        const dump = parseCallgrindDump(readFileSync(path.join(outDir, file.name), "utf8"));
        if (dump.pid !== pid) throw new Error(`${file.name} is the dump of pid ${dump.pid}, not ${pid}`);
        summary.command = dump.cmd;
        const count = instructionsOf(dump);
        instructions += count;
        if (file.thread === undefined || file.thread === 1) mainThread += count;
      }
      const split = after.map((n, i) => n - (before[i] ?? 0));
      const servedTotal = sum(split);
      const record: CallgrindWindow = {
        window: window + 1,
        instructions,
        succeeded: load.succeeded,
        failed: load.failed,
        errored: load.errored,
        served: split,
        servedMatches: load.succeeded === options.calls && servedTotal === load.succeeded,
        instructionsPerCall: load.succeeded > 0 ? instructions / load.succeeded : Number.NaN,
        mainThreadPerCall: load.succeeded > 0 ? mainThread / load.succeeded : Number.NaN,
        threads: files.length,
        dumpFile: files[0]!.name.replace(/-\d+$/, ""),
        settleS,
      };
      summary.windows.push(record);
      log(
        `${name}: window ${window + 1}: ${Math.round(record.instructionsPerCall)} instructions/call ` +
          `(${instructions} / ${load.succeeded} ok; served ${split.join("+")}` +
          `${record.servedMatches ? "" : " MISMATCH"}; ${load.failed} failed, ${load.errored} errored; ` +
          `main thread ${Math.round(record.mainThreadPerCall)}/call of ${record.threads} threads; ` +
          `idle after ${settleS.toFixed(0)} s, window ${wallS.toFixed(0)} s, ${record.dumpFile})`,
      );
    }
  } finally {
    await registry.kill(proxy, 10_000);
  }
}

// ---- report ----

const LABELS: Record<PathName, string> = {
  direct: "direct to one backend",
  roster: "roster lb, round_robin",
  nginx: "nginx, 1 worker, grpc_pass",
  haproxy: "HAProxy, 1 thread, h2 both sides",
};

function count(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? "—" : Math.round(value).toLocaleString("en-US");
}

function ratio(value: number | undefined, base: number | undefined): string {
  if (value === undefined || base === undefined || !(base > 0) || !Number.isFinite(value)) return "—";
  return `${(value / base).toFixed(2)}×`;
}

export function callgrindMarkdown(
  summaries: readonly CallgrindSummary[],
  context: { title: string; windows: number; skipped: readonly string[] },
): string {
  const lines: string[] = [`### ${context.title}`, ""];
  const medianOf = (name: PathName): number | undefined => summaries.find((s) => s.path === name)?.median;
  const nginx = medianOf("nginx");
  const haproxy = medianOf("haproxy");
  const header = [
    "path",
    ...Array.from({ length: context.windows }, (_, i) => `window ${i + 1}`),
    "median instr/call",
    "÷ HAProxy",
    "÷ nginx",
    "main thread, median",
    "calls ok = served",
  ];
  lines.push(`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`);
  for (const s of summaries) {
    if (!s.available) continue;
    const cells = Array.from({ length: context.windows }, (_, i) => {
      const w = s.windows[i];
      if (w === undefined) return "—";
      return `${count(w.instructionsPerCall)}${w.servedMatches ? "" : " (!)"}`;
    });
    const good = s.windows.filter((w) => w.servedMatches).length;
    lines.push(
      `| ${[
        LABELS[s.path],
        ...cells,
        count(s.median),
        ratio(s.median, haproxy),
        ratio(s.median, nginx),
        count(s.mainThreadMedian),
        `${good}/${s.windows.length} windows`,
      ].join(" | ")} |`,
    );
  }
  lines.push(
    "",
    "- user-space instructions (callgrind `Ir`, all threads of the proxy process) per call that " +
      "succeeded, from one `callgrind_control -z` … `-d` window each; work done in the kernel " +
      '(syscalls, TCP) is not counted. "main thread": the part run by the process\'s first thread ' +
      "(node's event loop; for nginx and HAProxy the whole); the rest is V8's background threads " +
      "(TurboFan jobs, GC helpers).",
  );
  for (const name of context.skipped) lines.push(`- ${name}: skipped (no proxy to count)`);
  for (const s of summaries) {
    if (!s.available) lines.push(`- ${s.path}: not available (${s.reason ?? "unknown reason"})`);
    else if (s.reason !== undefined) lines.push(`- ${s.path}: ${s.reason}`);
    if (s.windows.some((w) => !w.servedMatches)) {
      lines.push(
        `- ${s.path}: (!) windows where not every call succeeded or was served are left out of the median`,
      );
    }
  }
  return lines.join("\n");
}

/** Why callgrind mode cannot run here (a tool missing), or undefined. */
export function callgrindToolsMissing(): string | undefined {
  for (const tool of ["valgrind", "callgrind_control", "vgdb"]) {
    const found = spawnSync("sh", ["-c", 'command -v "$1"', "sh", tool], { encoding: "utf8" });
    if (found.status !== 0) return `${tool} not found (apt-get install valgrind)`;
  }
  return undefined;
}
