// bench/affinity: zc.resumelb's log playback, synthetic. A site of N request classes (tenants, header
// x-tenant) with Zipf popularity, each class a working set of objects; `serve()` runs W workers of
// site-service.ts, each with a bounded LRU cache of objects (a miss = a simulated database load).
// The same request stream (same seed) and the same load under each policy; per policy: database loads
// per request, throughput, p50/p99 (from each call's intended start in open loop), overlap of cached
// objects between workers, per-class spread; then the dynamic phase: a worker added mid-run and one
// removed gracefully (serve's scale(); or, with --change kill, a worker killed with SIGKILL and
// restarted cold) and the miss spike that follows. Issue 5's target:
// resume ≥ 90 % fewer loads per request than round_robin, ≥ 1.5× its throughput at saturation, p99 no
// worse than least_request's.
//
// usage: node --import tsx bench/affinity/run.ts [--workers 4] [--classes 500] [--zipf 1.0]
//   [--objects-per-class 20] [--cache-objects N] [--miss-ms 5] [--miss-cpu-us 0] [--hit-us 200]
//   [--rate R | --concurrency C] [--warmup 15 | --warmup-calls N] [--duration 10] [--dynamic 16]
//   [--change scale|kill] [--added-for S] [--runs 1] [--history 9999] [--max-skill-age N] [--variance 4]
//   [--backlog-history 9] [--policies round_robin,least_request,ring_hash,resume,resume:8]
//   [--seed 1] [--out FILE]
// A policy "resume:V" is resume with variance V (several may be compared in one invocation).
import { type ChildProcess, fork } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Command } from "commander";
import * as hdr from "hdr-histogram-js";
import { childrenOf, clockTicksPerSecond, readCpuTimes, readProcStat } from "../serve-scaling/proc.ts";
import type { DbStats, ToDb } from "./db.ts";
import type { FromServer, ServerConfig, ToServer } from "./server.ts";

const opts = new Command()
  .option("--workers <n>", "worker processes", Number, 4)
  .option("--classes <n>", "request classes (tenants)", Number, 500)
  .option("--zipf <s>", "Zipf exponent of class popularity", Number, 1.0)
  .option("--objects-per-class <n>", "objects in each class's working set", Number, 20)
  .option("--cache-objects <n>", "LRU capacity of each worker (default: classes × objects ÷ workers)", Number)
  .option("--miss-ms <ms>", "simulated database load on a miss (async wait)", Number, 5)
  .option("--hit-us <us>", "CPU burnt by every call", Number, 200)
  .option("--miss-cpu-us <us>", "CPU burnt by a load besides the wait (decoding the object)", Number, 0)
  .option(
    "--db-capacity <k>",
    "loads the shared database serves at once (0: no limit, every load a plain wait)",
    Number,
    0,
  )
  .option(
    "--db-settle-calls <n>",
    "with --warmup-calls: the warm-up runs with no database limit, --db-capacity applies this many calls before the window",
    Number,
    2000,
  )
  .option("--rate <n>", "open loop: calls per second (latency from intended start)", Number)
  .option("--concurrency <n>", "closed loop: calls in flight (default when --rate is absent)", Number, 32)
  .option("--warmup <s>", "seconds of the same load before measuring", Number, 15)
  .option(
    "--warmup-calls <n>",
    "instead of --warmup: measure from the stream's N-th call (same for every policy)",
    Number,
  )
  .option("--duration <s>", "measured seconds", Number, 10)
  .option("--dynamic <s>", "seconds of the dynamic phase after measuring (0: none)", Number, 16)
  .option(
    "--change <how>",
    "dynamic phase: scale (a worker added, later one removed) or kill (SIGKILL, restart)",
    "scale",
  )
  .option(
    "--added-for <s>",
    "dynamic phase (scale): seconds the added worker stays before it is removed (default 3/8 of --dynamic)",
    Number,
  )
  .option("--runs <n>", "runs per policy (medians reported)", Number, 1)
  .option("--history <n>", "worker skills history (requests; roster's default)", Number, 9999)
  .option("--max-skill-age <n>", "worker skills max_skill_age (default 10 × history)", Number)
  .option("--variance <x>", "resume variance", Number, 4)
  .option("--backlog-history <n>", "resume backlog_history", Number, 9)
  .option("--policies <list>", "policies to compare", "round_robin,least_request,ring_hash,resume")
  .option("--seed <n>", "seed of the request stream", Number, 1)
  .option("--out <file>", "write every run as JSON")
  .parse()
  .opts<{
    workers: number;
    classes: number;
    zipf: number;
    objectsPerClass: number;
    cacheObjects?: number;
    missMs: number;
    hitUs: number;
    missCpuUs: number;
    dbCapacity: number;
    dbSettleCalls: number;
    rate?: number;
    concurrency: number;
    warmup: number;
    warmupCalls?: number;
    duration: number;
    dynamic: number;
    change: string;
    addedFor?: number;
    runs: number;
    history: number;
    maxSkillAge?: number;
    variance: number;
    backlogHistory: number;
    policies: string;
    seed: number;
    out?: string;
  }>();

if (opts.change !== "scale" && opts.change !== "kill") throw new Error("--change: scale or kill");
/** Dynamic phase (scale): the worker is added at a quarter of it, removed this many ms later. */
const addAtMs = Math.round((opts.dynamic * 1000) / 4);
const addedForMs = Math.round((opts.addedFor ?? (opts.dynamic * 3) / 8) * 1000);
if (
  opts.change === "scale" &&
  opts.dynamic > 0 &&
  !(addedForMs > 0 && addAtMs + addedForMs < opts.dynamic * 1000)
)
  throw new Error(
    "--added-for: > 0 and ending before the dynamic phase does (it starts at a quarter of --dynamic)",
  );
/** The added worker's share is reported over at most this long after it is added (issue 11's target). */
const ADDED_SHARE_MS = 10_000;
if (!(Number.isInteger(opts.dbCapacity) && opts.dbCapacity >= 0))
  throw new Error("--db-capacity: a whole number ≥ 0 (0: no limit)");
if (!(Number.isInteger(opts.dbSettleCalls) && opts.dbSettleCalls >= 0))
  throw new Error("--db-settle-calls: a whole number ≥ 0");
const cacheObjects = opts.cacheObjects ?? Math.ceil((opts.classes * opts.objectsPerClass) / opts.workers);
const openLoop = opts.rate !== undefined;
const CALL_DEADLINE_MS = 10_000;
/** Open loop: at most this many calls in flight; a call due beyond it is counted as unsent. */
const MAX_IN_FLIGHT = 5000;

// ---------------------------------------------------------------------------------------------------
// Processes: every child is tracked and killed by pid on exit, error or Ctrl-C.

const children = new Set<ChildProcess>();
const workerPids = new Set<number>();
const tempDirs = new Set<string>();
function cleanup(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const pid of workerPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}
process.on("exit", cleanup);
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));

interface ServerHandle {
  child: ChildProcess;
  address: string;
  pids: number[];
  dumpDir: string;
  db: DbHandle;
  request(m: ToServer): Promise<FromServer>;
}

interface DbHandle {
  child: ChildProcess;
  socket: string;
  request(m: ToDb): Promise<DbStats>;
}

/** The shared database process (db.ts), unlimited until told its capacity. */
async function startDb(dir: string): Promise<DbHandle> {
  const socket = join(dir, "db.sock");
  const child = fork(fileURLToPath(new URL("./db.ts", import.meta.url)), [socket], {
    env: { ...process.env, AFFINITY_MISS_MS: String(opts.missMs) },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("database did not start within 30 s")), 30_000);
    child.once("message", () => {
      clearTimeout(timer);
      resolve();
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`database exited with ${code} before it was ready`));
    });
  });
  return {
    child,
    socket,
    request: (m) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`database: no answer to ${m.type}`)), 10_000);
        child.once("message", (a: DbStats) => {
          clearTimeout(timer);
          resolve(a);
        });
        child.send(m);
      }),
  };
}

/** "resume:8" → resume with variance 8; other names as they are. */
function policyOf(label: string): { policy: string; variance: number } {
  const [policy = label, v] = label.split(":");
  const variance = v === undefined ? opts.variance : Number(v);
  if (!(variance > 0)) throw new Error(`${label}: the variance after ":" must be a number > 0`);
  return { policy, variance };
}

async function startServer(label: string): Promise<ServerHandle> {
  const dumpDir = mkdtempSync(join(tmpdir(), "roster-affinity-"));
  tempDirs.add(dumpDir);
  const db = await startDb(dumpDir);
  const { policy, variance } = policyOf(label);
  const policyConfig: Record<string, unknown> =
    policy === "ring_hash"
      ? { hashKey: { header: "x-tenant" } }
      : policy === "least_request"
        ? { choiceCount: Math.min(Math.max(opts.workers + 1, 2), 10) } // as serve()'s default (+1: scale)
        : policy === "resume"
          ? { variance, backlogHistory: opts.backlogHistory }
          : {};
  const config: ServerConfig = {
    workers: opts.workers,
    policy,
    policyConfig,
    history: opts.history,
    maxSkillAge: opts.maxSkillAge,
    skillsDir: join(dumpDir, "skills"),
  };
  const child = fork(fileURLToPath(new URL("./server.ts", import.meta.url)), [JSON.stringify(config)], {
    env: {
      ...process.env,
      AFFINITY_CACHE_OBJECTS: String(cacheObjects),
      AFFINITY_MISS_MS: String(opts.missMs),
      AFFINITY_HIT_US: String(opts.hitUs),
      AFFINITY_MISS_CPU_US: String(opts.missCpuUs),
      AFFINITY_DUMP_DIR: dumpDir,
      AFFINITY_DB_SOCKET: db.socket,
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  const ready = await new Promise<FromServer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start within 60 s")), 60_000);
    child.once("message", (m: FromServer) => {
      clearTimeout(timer);
      resolve(m);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before it was ready`));
    });
  });
  if (ready.type !== "ready") throw new Error(`server failed: ${JSON.stringify(ready)}`);
  for (const pid of ready.pids) workerPids.add(pid);
  return {
    child,
    address: ready.address,
    pids: ready.pids,
    dumpDir,
    db,
    request: (m) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to ${m.type}`)), 10_000);
        child.once("message", (a: FromServer) => {
          clearTimeout(timer);
          resolve(a);
        });
        child.send(m);
      }),
  };
}

async function stopServer(s: ServerHandle): Promise<void> {
  const exited = new Promise<void>((r) => {
    if (s.child.exitCode !== null || s.child.signalCode !== null) r();
    else s.child.once("exit", () => r());
  });
  if (s.child.connected) s.child.send({ type: "close" } satisfies ToServer);
  const timer = setTimeout(() => s.child.kill("SIGKILL"), 8000);
  await exited;
  clearTimeout(timer);
  // Workers exit with their supervisor; make sure of it.
  for (const pid of workerPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  workerPids.clear();
  if (s.db.child.connected) s.db.child.disconnect();
  if (s.db.child.exitCode === null && s.db.child.signalCode === null) s.db.child.kill("SIGKILL");
  rmSync(s.dumpDir, { recursive: true, force: true });
  tempDirs.delete(s.dumpDir);
}

interface WorkerDump {
  worker: string;
  pid: number;
  requests: number;
  loads: number;
  cache: string[];
}

/** SIGUSR2 to every worker, then reads their dumps (bounded wait). */
async function dumpWorkers(s: ServerHandle): Promise<WorkerDump[]> {
  const status = await s.request({ type: "workers" });
  const pids = status.type === "workers" ? status.pids : [];
  for (const pid of pids) workerPids.add(pid);
  const files = new Map<number, string>();
  const before = Date.now();
  for (const pid of pids) {
    process.kill(pid, "SIGUSR2");
  }
  const out: WorkerDump[] = [];
  for (let i = 0; i < 200 && out.length < pids.length; i++) {
    await sleep(25);
    for (const pid of pids) {
      if (out.some((d) => d.pid === pid)) continue;
      const name = files.get(pid) ?? findDump(s.dumpDir, pid);
      if (name === undefined) continue;
      files.set(pid, name);
      const d = JSON.parse(readFileSync(name, "utf8")) as WorkerDump;
      rmSync(name, { force: true });
      out.push(d);
    }
  }
  if (out.length < pids.length) {
    process.stderr.write(
      `warning: ${pids.length - out.length} worker dumps missing after ${Date.now() - before} ms\n`,
    );
  }
  return out;
}

function findDump(dir: string, pid: number): string | undefined {
  for (let slot = 1; slot <= opts.workers + 1; slot++) {
    const f = join(dir, `w${slot}-${pid}.json`);
    if (existsSync(f)) return f;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------
// The workload: a seeded stream of (class, object). Class ranks follow Zipf(s); objects are uniform
// within the class's working set.

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `first`: no call of the stream asked for this object before (a load no cache could have saved). */
interface Item {
  tenant: string;
  object: number;
  first: boolean;
  /** Position in the stream (0-based). */
  index: number;
}

function workload(seed: number): () => Item {
  const cdf: number[] = [];
  let sum = 0;
  for (let r = 1; r <= opts.classes; r++) {
    sum += 1 / r ** opts.zipf;
    cdf.push(sum);
  }
  const random = mulberry32(seed);
  const seen = new Set<number>();
  let index = 0;
  return () => {
    const u = random() * sum;
    let lo = 0;
    let hi = cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    const object = Math.floor(random() * opts.objectsPerClass);
    const id = lo * opts.objectsPerClass + object;
    const first = !seen.has(id);
    if (first) seen.add(id);
    return { tenant: `t${lo}`, object, first, index: index++ };
  };
}

// ---------------------------------------------------------------------------------------------------
// The load: one grpc-js channel to the front; closed loop (C lanes) or open loop (calls at their
// intended times, latency from the intended start, as `roster bench` does).

type Get = (
  req: { object: number },
  md: grpc.Metadata,
  o: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: { served_by: string; loaded: boolean }) => void,
) => void;

function siteClient(address: string): grpc.Client & { Get: Get } {
  const def = protoLoader.loadSync(fileURLToPath(new URL("./site.proto", import.meta.url)), {
    keepCase: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    roster: { bench: { affinity: { Site: grpc.ServiceClientConstructor } } };
  };
  return new pkg.roster.bench.affinity.Site(
    address,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    Get: Get;
  };
}

interface CallEnd {
  /** ms since the load began: intended start (open loop) or actual start (closed loop). */
  start: number;
  /** The call's position in the stream. */
  index: number;
  latencyUs: number;
  ok: boolean;
  tenant: string;
  servedBy: string;
  loaded: boolean;
  first: boolean;
}

/**
 * Sends the stream at the configured load until `stopAt()` ms, calling `onEnd` for each finished call,
 * `onStart(index, ms)` as each call starts and `onTick(ms)` every 10 ms; resolves once every call has
 * ended.
 */
async function drive(
  client: grpc.Client & { Get: Get },
  next: () => Item,
  stopAt: () => number,
  onEnd: (e: CallEnd) => void,
  onTick: (ms: number) => void,
  onStart: (index: number, ms: number) => void = () => {},
): Promise<{ unsent: number }> {
  const t0 = performance.now();
  let inFlight = 0;
  let unsent = 0;
  const call = (intended: number): Promise<void> => {
    const { tenant, object, first, index } = next();
    onStart(index, intended - t0);
    const md = new grpc.Metadata();
    md.set("x-tenant", tenant);
    inFlight++;
    return new Promise((resolve) => {
      client.Get({ object }, md, { deadline: Date.now() + CALL_DEADLINE_MS }, (err, res) => {
        inFlight--;
        const now = performance.now();
        onEnd({
          start: intended - t0,
          index,
          latencyUs: Math.max(1, Math.round((now - intended) * 1000)),
          ok: err === null && res !== undefined,
          tenant,
          servedBy: res?.served_by ?? "",
          loaded: res?.loaded === true,
          first,
        });
        resolve();
      });
    });
  };
  const ticker = setInterval(() => onTick(performance.now() - t0), 10);
  try {
    if (openLoop) {
      const rate = opts.rate!;
      let sent = 0;
      const pending = new Set<Promise<void>>();
      while (performance.now() - t0 < stopAt()) {
        const due = Math.floor(((performance.now() - t0) / 1000) * rate);
        while (sent < due) {
          const intended = t0 + (sent * 1000) / rate;
          sent++;
          if (inFlight >= MAX_IN_FLIGHT) {
            unsent++;
            continue;
          }
          const p = call(intended);
          pending.add(p);
          void p.then(() => pending.delete(p));
        }
        await sleep(1);
      }
      await Promise.all(pending);
    } else {
      const lane = async () => {
        while (performance.now() - t0 < stopAt()) await call(performance.now());
      };
      await Promise.all(Array.from({ length: opts.concurrency }, lane));
    }
  } finally {
    clearInterval(ticker);
  }
  return { unsent };
}

// ---------------------------------------------------------------------------------------------------
// CPU accounting: our processes (this driver, the server process and its workers) against the whole
// machine's busy time (/proc/stat), so that CPU used by other processes during the window is reported.

const HZ = clockTicksPerSecond();

interface CpuSnap {
  at: number;
  busyTicks: number;
  stealTicks: number;
  driverUs: number;
  serverTicks: number;
}

function cpuSnap(s: ServerHandle): CpuSnap {
  const sys = readCpuTimes();
  const u = process.cpuUsage();
  const pid = s.child.pid ?? 0;
  let serverTicks = readProcStat(pid)?.ticks ?? 0;
  for (const c of childrenOf(pid)) serverTicks += c.ticks;
  return {
    at: performance.now(),
    busyTicks: sys.busy,
    stealTicks: sys.steal,
    driverUs: u.user + u.system,
    serverTicks,
  };
}

/** Cores used during [a, b]: by our processes, by everything else, and stolen by the hypervisor. */
function cpuBetween(a: CpuSnap, b: CpuSnap): { ours: number; other: number; steal: number } {
  const secs = Math.max(1e-3, (b.at - a.at) / 1000);
  const ours = ((b.driverUs - a.driverUs) / 1e6 + (b.serverTicks - a.serverTicks) / HZ) / secs;
  const busy = (b.busyTicks - a.busyTicks) / HZ / secs;
  return { ours, other: Math.max(0, busy - ours), steal: (b.stealTicks - a.stealTicks) / HZ / secs };
}

// ---------------------------------------------------------------------------------------------------
// One run of one policy.

interface RunResult {
  policy: string;
  /** Stream position of the window's first call. */
  windowStartCall: number;
  calls: number;
  errors: number;
  unsent: number;
  callsPerSec: number;
  loadsPerCall: number;
  workerLoadsPerCall: number;
  /** Calls that asked for an object for the first time in the stream: the floor of loads per call. */
  firstTouchPerCall: number;
  /** Loads that were not first touches, per call: what a policy can avoid (steady-state misses). */
  avoidablePerCall: number;
  p50: number;
  p99: number;
  p999: number;
  /** Of the distinct objects cached at the end of the window, the share held by more than one worker. */
  overlap: number;
  /** Cached object copies ÷ distinct cached objects. */
  copiesPerObject: number;
  /** Mean number of workers that served a class, over classes (unweighted) and over calls (weighted). */
  spread: number;
  spreadWeighted: number;
  workerShares: Record<string, number>;
  /** Cores during the window: our processes, other processes, steal. */
  cpu: { ours: number; other: number; steal: number };
  /** The database during the window: loads it served per second, mean queue wait per load (ms), and
   * the share of its capacity in use (undefined without a limit). */
  db: { loadsPerSec: number; queueMsPerLoad: number; busy: number | undefined };
  dynamic?: DynamicResult;
}

interface Bucket {
  ms: number;
  calls: number;
  loads: number;
  errors: number;
  servedBy: Record<string, number>;
}

/** One change of the dynamic phase (a worker added, removed, or killed) and what followed it. */
interface ChangeResult {
  change: string;
  atMs: number;
  /** Loads/call over the (up to) 2 s before the change. */
  loadsPerCallBefore: number;
  /** Highest loads/call of a bucket after the change (until the next change or the end). */
  peakAfter: number;
  /** Loads after the change beyond the before-rate × calls. */
  excessLoads: number;
  /** Some bucket after the change above 1.5× the before-rate. */
  spiked: boolean;
  /** ms after the change from which every bucket stays within 1.5× the before-rate (after a spike). */
  recoveryMs: number | undefined;
  /** Loads/call over the last 2 s before the next change (or the end). */
  loadsPerCallAfter: number;
  /** Calls/s per worker (w<number>) over those last 2 s. */
  perWorkerAfter: Record<string, number>;
  /** For the worker added: its share of the calls started in the (up to) 10 s after the change. */
  added?: AddedShare;
}

interface AddedShare {
  worker: string;
  /** Length of the window: 10 s, or until the worker is removed. */
  windowMs: number;
  /** Calls it served ÷ calls that succeeded in the window, and that ÷ a fair share (1 / workers). */
  share: number;
  ofFair: number;
  /** Its share per second of the window. */
  perSecond: number[];
  /** ms after the change of the first call it served (undefined: none). */
  firstCallMs: number | undefined;
}

interface DynamicResult {
  mode: "scale" | "kill";
  bucketMs: number;
  timeline: Bucket[];
  changes: ChangeResult[];
  errors: number;
}

async function oneRun(policy: string): Promise<RunResult> {
  const server = await startServer(policy);
  const client = siteClient(server.address);
  try {
    const byCalls = opts.warmupCalls !== undefined;
    const durationMs = opts.duration * 1000;
    let windowStart: number | undefined = byCalls ? undefined : opts.warmup * 1000;
    let windowStartCall = byCalls ? opts.warmupCalls! : -1;
    const endMs = () => (windowStart === undefined ? Number.POSITIVE_INFINITY : windowStart + durationMs);
    const hist = newHistogram();
    let calls = 0;
    let errors = 0;
    let loads = 0;
    let firstTouches = 0;
    const classWorkers = new Map<string, Map<string, number>>();
    const workerCalls = new Map<string, number>();
    let startDump: Promise<WorkerDump[]> | undefined;
    let cpuStart: CpuSnap | undefined;
    let cpuEnd: CpuSnap | undefined;
    let dbStart: Promise<DbStats> | undefined;
    let dbEnd: Promise<DbStats> | undefined;
    const beginWindow = () => {
      startDump = dumpWorkers(server);
      cpuStart = cpuSnap(server);
      dbStart = server.db.request({ type: "stats" });
    };
    // The warm-up (by calls) runs with no database limit, so that every policy reaches the window's
    // stream position at the same cost; the limit applies --db-settle-calls calls before the window.
    const capacityAtCall = byCalls ? Math.max(0, windowStartCall - opts.dbSettleCalls) : 0;
    let capacitySet: Promise<DbStats> | undefined;
    const setCapacity = () => {
      capacitySet ??= server.db.request({ type: "capacity", capacity: opts.dbCapacity });
    };
    if (capacityAtCall === 0) {
      setCapacity();
      await capacitySet;
    }
    const inWindow = (e: CallEnd) =>
      windowStart !== undefined &&
      e.start < windowStart + durationMs &&
      (byCalls ? e.index >= windowStartCall : e.start >= windowStart);
    const next = workload(opts.seed);
    const { unsent } = await drive(
      client,
      next,
      endMs,
      (e) => {
        if (!inWindow(e)) return;
        calls++;
        hist.recordValue(e.latencyUs);
        if (!e.ok) {
          errors++;
          return;
        }
        if (e.loaded) loads++;
        if (e.first) firstTouches++;
        const m = classWorkers.get(e.tenant) ?? new Map<string, number>();
        m.set(e.servedBy, (m.get(e.servedBy) ?? 0) + 1);
        classWorkers.set(e.tenant, m);
        workerCalls.set(e.servedBy, (workerCalls.get(e.servedBy) ?? 0) + 1);
      },
      (ms) => {
        if (!byCalls && startDump === undefined && ms >= windowStart!) {
          windowStartCall = -1;
          beginWindow();
        }
        if (cpuStart !== undefined && cpuEnd === undefined && ms >= endMs()) {
          cpuEnd = cpuSnap(server);
          dbEnd = server.db.request({ type: "stats" });
        }
      },
      (index, ms) => {
        if (index === capacityAtCall) setCapacity();
        if (byCalls && index === windowStartCall) {
          windowStart = ms;
          beginWindow();
        } else if (!byCalls && windowStartCall < 0 && ms >= windowStart!) {
          windowStartCall = index;
        }
      },
    );
    cpuEnd ??= cpuSnap(server);
    dbEnd ??= server.db.request({ type: "stats" });
    const d0 = await dbStart;
    const d1 = await dbEnd;
    const windowSecs = cpuStart !== undefined ? Math.max(1e-3, (cpuEnd.at - cpuStart.at) / 1000) : 1;
    const dbServed = d0 !== undefined ? d1.served - d0.served : 0;
    const first = (await startDump) ?? [];
    const last = await dumpWorkers(server);
    // Worker counters over the window (a worker restarted meanwhile would be missing from `first`).
    let dReq = 0;
    let dLoads = 0;
    for (const d of last) {
      const f = first.find((x) => x.pid === d.pid);
      dReq += d.requests - (f?.requests ?? 0);
      dLoads += d.loads - (f?.loads ?? 0);
    }
    const holders = new Map<string, number>();
    for (const d of last) for (const k of d.cache) holders.set(k, (holders.get(k) ?? 0) + 1);
    let shared = 0;
    let copies = 0;
    for (const n of holders.values()) {
      if (n > 1) shared++;
      copies += n;
    }
    let spreadSum = 0;
    let spreadWeighted = 0;
    for (const m of classWorkers.values()) {
      spreadSum += m.size;
      let n = 0;
      for (const c of m.values()) n += c;
      spreadWeighted += m.size * n;
    }
    const ok = calls - errors;
    const result: RunResult = {
      policy,
      windowStartCall,
      calls,
      errors,
      unsent,
      callsPerSec: calls / opts.duration,
      loadsPerCall: loads / Math.max(1, ok),
      workerLoadsPerCall: dLoads / Math.max(1, dReq),
      firstTouchPerCall: firstTouches / Math.max(1, ok),
      avoidablePerCall: (loads - firstTouches) / Math.max(1, ok),
      p50: hist.getValueAtPercentile(50) / 1000,
      p99: hist.getValueAtPercentile(99) / 1000,
      p999: hist.getValueAtPercentile(99.9) / 1000,
      overlap: shared / Math.max(1, holders.size),
      copiesPerObject: copies / Math.max(1, holders.size),
      spread: spreadSum / Math.max(1, classWorkers.size),
      spreadWeighted: spreadWeighted / Math.max(1, ok),
      workerShares: Object.fromEntries([...workerCalls].map(([k, n]) => [k, n / Math.max(1, ok)])),
      cpu: cpuStart !== undefined ? cpuBetween(cpuStart, cpuEnd) : { ours: 0, other: 0, steal: 0 },
      db: {
        loadsPerSec: dbServed / windowSecs,
        queueMsPerLoad: d0 !== undefined ? (d1.queuedMs - d0.queuedMs) / Math.max(1, dbServed) : 0,
        busy:
          opts.dbCapacity > 0 && d0 !== undefined
            ? (d1.busyMs - d0.busyMs) / (opts.dbCapacity * windowSecs * 1000)
            : undefined,
      },
    };
    if (opts.dynamic > 0) result.dynamic = await dynamicPhase(server, client, next);
    return result;
  } finally {
    client.close();
    await stopServer(server);
  }
}

/**
 * The same load for `--dynamic` s. scale: at a quarter of it serve() scales to workers + 1 (a cold
 * worker added; resume: unskilled, at the LRU end), at 5/8 back to workers (the highest-numbered worker,
 * the one added, removed gracefully: out of the balancer, open calls finish, then it exits; resume: its
 * skills leave with it). kill: at a third, worker 1 gets SIGKILL and serve() restarts it cold.
 */
async function dynamicPhase(
  server: ServerHandle,
  client: grpc.Client & { Get: Get },
  next: () => Item,
): Promise<DynamicResult> {
  const bucketMs = 250;
  const phaseMs = opts.dynamic * 1000;
  const mode = opts.change as "scale" | "kill";
  const status = await server.request({ type: "workers" });
  const firstPid = status.type === "workers" ? status.pids[0]! : server.pids[0]!;
  const plan: Array<{ atMs: number; change: string; run: () => void }> = [];
  let pending: Promise<unknown> = Promise.resolve();
  const scaleTo = (n: number) => {
    pending = pending.then(async () => {
      const r = await server.request({ type: "scale", n });
      if (r.type === "workers") for (const pid of r.pids) workerPids.add(pid);
      else throw new Error(`scale(${n}) failed: ${JSON.stringify(r)}`);
    });
  };
  if (mode === "scale") {
    plan.push({
      atMs: addAtMs,
      change: `worker added (scale ${opts.workers} → ${opts.workers + 1})`,
      run: () => scaleTo(opts.workers + 1),
    });
    plan.push({
      atMs: addAtMs + addedForMs,
      change: `worker ${opts.workers + 1} removed (scale ${opts.workers + 1} → ${opts.workers})`,
      run: () => scaleTo(opts.workers),
    });
  } else {
    plan.push({
      atMs: Math.round(phaseMs / 3),
      change: "worker 1 killed (SIGKILL; restarted cold)",
      run: () => process.kill(firstPid, "SIGKILL"),
    });
  }
  const buckets: Bucket[] = Array.from({ length: Math.ceil(phaseMs / bucketMs) }, (_, i) => ({
    ms: i * bucketMs,
    calls: 0,
    loads: 0,
    errors: 0,
    servedBy: {},
  }));
  let done = 0;
  await drive(
    client,
    next,
    () => phaseMs,
    (e) => {
      const b = buckets[Math.floor(e.start / bucketMs)];
      if (b === undefined) return;
      b.calls++;
      if (!e.ok) {
        b.errors++;
        return;
      }
      if (e.loaded) b.loads++;
      // "w5-1234" → "w5": the worker number (a restarted worker keeps its number).
      const w = e.servedBy.split("-")[0] ?? e.servedBy;
      b.servedBy[w] = (b.servedBy[w] ?? 0) + 1;
    },
    (ms) => {
      while (done < plan.length && ms >= plan[done]!.atMs) plan[done++]!.run();
    },
  );
  await pending;
  // The restarted worker's pid, so cleanup can reach it.
  const after = await server.request({ type: "workers" });
  if (after.type === "workers") for (const pid of after.pids) workerPids.add(pid);

  const sum = (bs: Bucket[]) => {
    const t = { calls: 0, loads: 0, servedBy: {} as Record<string, number> };
    for (const b of bs) {
      t.calls += b.calls;
      t.loads += b.loads;
      for (const [w, n] of Object.entries(b.servedBy)) t.servedBy[w] = (t.servedBy[w] ?? 0) + n;
    }
    return t;
  };
  const tail = Math.round(2000 / bucketMs);
  const changes = plan.map((p, i): ChangeResult => {
    const at = Math.floor(p.atMs / bucketMs);
    const prevAt = i > 0 ? Math.floor(plan[i - 1]!.atMs / bucketMs) : 0;
    const nextAt = i + 1 < plan.length ? Math.floor(plan[i + 1]!.atMs / bucketMs) : buckets.length;
    const before = sum(buckets.slice(Math.max(prevAt, at - tail), at));
    const rateBefore = before.loads / Math.max(1, before.calls);
    const afterBuckets = buckets.slice(at, nextAt);
    let peak = 0;
    let excess = 0;
    let spiked = false;
    let lastHigh = -1;
    afterBuckets.forEach((b, j) => {
      const r = b.loads / Math.max(1, b.calls);
      peak = Math.max(peak, r);
      excess += b.loads - rateBefore * b.calls;
      if (r > 1.5 * rateBefore) {
        spiked = true;
        lastHigh = j;
      }
    });
    const recoveryMs = spiked && lastHigh < afterBuckets.length - 1 ? (lastHigh + 1) * bucketMs : undefined;
    const end = sum(buckets.slice(Math.max(at, nextAt - tail), nextAt));
    let added: AddedShare | undefined;
    if (mode === "scale" && i === 0) {
      const worker = `w${opts.workers + 1}`;
      const window = buckets.slice(at, Math.min(nextAt, at + ADDED_SHARE_MS / bucketMs));
      const served = (bs: Bucket[]) => bs.reduce((a, b) => a + (b.servedBy[worker] ?? 0), 0);
      const ok = (bs: Bucket[]) => bs.reduce((a, b) => a + b.calls - b.errors, 0);
      const share = served(window) / Math.max(1, ok(window));
      const perSecond: number[] = [];
      for (let j = 0; j < window.length; j += 1000 / bucketMs) {
        const sec = window.slice(j, j + 1000 / bucketMs);
        perSecond.push(served(sec) / Math.max(1, ok(sec)));
      }
      const first = window.findIndex((b) => (b.servedBy[worker] ?? 0) > 0);
      added = {
        worker,
        windowMs: window.length * bucketMs,
        share,
        ofFair: share * (opts.workers + 1),
        perSecond,
        firstCallMs: first < 0 ? undefined : first * bucketMs,
      };
    }
    const secs = (Math.min(tail, nextAt - at) * bucketMs) / 1000;
    return {
      change: p.change,
      atMs: p.atMs,
      loadsPerCallBefore: rateBefore,
      peakAfter: peak,
      excessLoads: Math.round(excess),
      spiked,
      recoveryMs,
      loadsPerCallAfter: end.loads / Math.max(1, end.calls),
      perWorkerAfter: Object.fromEntries(
        Object.entries(end.servedBy)
          .sort(([a], [b]) => Number(a.slice(1)) - Number(b.slice(1)))
          .map(([w, n]) => [w, Math.round(n / secs)]),
      ),
      ...(added !== undefined ? { added } : {}),
    };
  });
  return {
    mode,
    bucketMs,
    timeline: buckets,
    changes,
    errors: buckets.reduce((a, b) => a + b.errors, 0),
  };
}

// ---------------------------------------------------------------------------------------------------

function newHistogram(): hdr.Histogram {
  return hdr.build({
    bitBucketSize: 32,
    autoResize: true,
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const x0busy = (runs: RunResult[]): number | undefined =>
  opts.dbCapacity > 0 ? median(runs.map((x) => x.db.busy ?? 0)) : undefined;

async function main(): Promise<void> {
  const policies = opts.policies.split(",");
  for (const p of policies) policyOf(p); // fail early on a bad "resume:V"
  const all: RunResult[] = [];
  const load = openLoop
    ? `${opts.rate} calls/s open loop`
    : `closed loop, ${opts.concurrency} calls in flight`;
  const dbText =
    opts.dbCapacity === 0
      ? "database without a load limit"
      : `database serving ${opts.dbCapacity} load(s) at a time (${((opts.dbCapacity * 1000) / opts.missMs).toFixed(0)} loads/s at most)` +
        (opts.warmupCalls !== undefined ? `, from ${opts.dbSettleCalls} calls before the window` : "");
  const warm =
    opts.warmupCalls !== undefined
      ? `from call ${opts.warmupCalls} of the stream`
      : `after ${opts.warmup} s warm-up`;
  process.stderr.write(
    `${opts.workers} workers, ${opts.classes} classes Zipf ${opts.zipf} × ${opts.objectsPerClass} objects, ` +
      `cache ${cacheObjects} objects/worker, miss ${opts.missMs} ms + ${opts.missCpuUs} µs CPU, hit ${opts.hitUs} µs CPU, ${dbText}, ${load}, ${warm}\n`,
  );
  for (let r = 0; r < opts.runs; r++) {
    // Alternate the order between rounds so drift reaches every policy alike.
    for (const policy of r % 2 === 0 ? policies : [...policies].reverse()) {
      const res = await oneRun(policy);
      all.push(res);
      process.stderr.write(
        `run ${r + 1} ${policy}: ${res.callsPerSec.toFixed(0)} calls/s, loads/call ${res.loadsPerCall.toFixed(4)} ` +
          `(first touches ${res.firstTouchPerCall.toFixed(4)}, avoidable ${res.avoidablePerCall.toFixed(4)}), ` +
          `p50 ${res.p50.toFixed(1)} p99 ${res.p99.toFixed(1)} ms, errors ${res.errors}, spread ${res.spread.toFixed(2)}/${res.spreadWeighted.toFixed(2)}, ` +
          `CPU ours ${res.cpu.ours.toFixed(2)} other ${res.cpu.other.toFixed(2)} steal ${res.cpu.steal.toFixed(2)} cores, ` +
          `DB ${res.db.loadsPerSec.toFixed(0)} loads/s${res.db.busy === undefined ? "" : ` busy ${(100 * res.db.busy).toFixed(0)} %`} queue ${res.db.queueMsPerLoad.toFixed(2)} ms/load` +
          (res.dynamic
            ? res.dynamic.changes
                .map(
                  (c) =>
                    `; ${c.change}: ${c.loadsPerCallBefore.toFixed(4)} → peak ${c.peakAfter.toFixed(4)}, excess ${c.excessLoads}, ` +
                    `recovery ${c.recoveryMs ?? (c.spiked ? "none" : "no spike")}, after ${c.loadsPerCallAfter.toFixed(4)} ${JSON.stringify(c.perWorkerAfter)}` +
                    (c.added !== undefined
                      ? `, ${c.added.worker}'s share in ${c.added.windowMs / 1000} s ${(100 * c.added.share).toFixed(1)} % (${c.added.ofFair.toFixed(2)} of fair)`
                      : ""),
                )
                .join("")
            : "") +
          "\n",
      );
    }
  }
  const rows = policies.map((policy) => {
    const runs = all.filter((x) => x.policy === policy);
    const m = (f: (x: RunResult) => number) => median(runs.map(f));
    return {
      policy,
      runs,
      windowStartCall: m((x) => x.windowStartCall),
      loadsPerCall: m((x) => x.loadsPerCall),
      workerLoadsPerCall: m((x) => x.workerLoadsPerCall),
      firstTouchPerCall: m((x) => x.firstTouchPerCall),
      avoidablePerCall: m((x) => x.avoidablePerCall),
      callsPerSec: m((x) => x.callsPerSec),
      p50: m((x) => x.p50),
      p99: m((x) => x.p99),
      overlap: m((x) => x.overlap),
      copiesPerObject: m((x) => x.copiesPerObject),
      spread: m((x) => x.spread),
      spreadWeighted: m((x) => x.spreadWeighted),
      otherCpu: m((x) => x.cpu.other),
      dbLoadsPerSec: m((x) => x.db.loadsPerSec),
      dbQueueMs: m((x) => x.db.queueMsPerLoad),
      dbBusy: x0busy(runs),
      maxOtherCpu: Math.max(...runs.map((x) => x.cpu.other)),
      errors: runs.reduce((a, x) => a + x.errors + x.unsent, 0),
    };
  });
  const rr = rows.find((x) => x.policy === "round_robin");
  const lr = rows.find((x) => x.policy === "least_request");
  const ratio = (v: number, base: number | undefined, digits = 2) =>
    base !== undefined && base > 0 ? (v / base).toFixed(digits) : "—";
  const lines = [
    `${opts.workers} workers; ${opts.classes} classes (Zipf ${opts.zipf}) × ${opts.objectsPerClass} objects; ` +
      `LRU ${cacheObjects} objects per worker; miss = ${opts.missMs} ms wait + ${opts.missCpuUs} µs CPU, every call ${opts.hitUs} µs CPU; ${dbText}; ` +
      `${load}; ${opts.duration} s measured ${warm}; history ${opts.history}, max skill age ${opts.maxSkillAge ?? 10 * opts.history}; ` +
      `medians of ${opts.runs} run(s):`,
    "",
    "| policy | DB loads / call | ÷ round_robin | (worker counters) | first touches / call | avoidable loads / call | ÷ round_robin | calls/s | × round_robin | p50 ms | p99 ms | p99 ÷ least_request | cached objects on >1 worker | copies / object | workers per class (mean / call-weighted) | DB loads/s | DB busy | DB queue ms / load | other CPU cores (median / max) | errors |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map(
      (x) =>
        `| ${x.policy} | ${x.loadsPerCall.toFixed(4)} | ${ratio(x.loadsPerCall, rr?.loadsPerCall, 3)} | ${x.workerLoadsPerCall.toFixed(4)} | ${x.firstTouchPerCall.toFixed(4)} | ` +
        `${x.avoidablePerCall.toFixed(4)} | ${ratio(x.avoidablePerCall, rr?.avoidablePerCall, 3)} | ` +
        `${x.callsPerSec.toFixed(0)} | ${ratio(x.callsPerSec, rr?.callsPerSec)} | ${x.p50.toFixed(2)} | ${x.p99.toFixed(2)} | ` +
        `${ratio(x.p99, lr?.p99)} | ${(100 * x.overlap).toFixed(1)} % | ${x.copiesPerObject.toFixed(2)} | ` +
        `${x.spread.toFixed(2)} / ${x.spreadWeighted.toFixed(2)} | ${x.dbLoadsPerSec.toFixed(0)} | ` +
        `${x.dbBusy === undefined ? "no limit" : `${(100 * x.dbBusy).toFixed(0)} %`} | ${x.dbQueueMs.toFixed(2)} | ` +
        `${x.otherCpu.toFixed(2)} / ${x.maxOtherCpu.toFixed(2)} | ${x.errors} |`,
    ),
  ];
  if (opts.dynamic > 0) {
    lines.push(
      "",
      opts.change === "scale"
        ? `Dynamic phase: the same load for ${opts.dynamic} s; a worker added at ${addAtMs / 1000} s (serve's scale(${opts.workers + 1})), ` +
            `the same worker removed gracefully at ${(addAtMs + addedForMs) / 1000} s (scale(${opts.workers})). Per 250 ms bucket of call starts (first run):`
        : `Dynamic phase: the same load for ${opts.dynamic} s; at ${(opts.dynamic / 3).toFixed(1)} s worker 1 gets SIGKILL and serve() restarts it cold ` +
            "(resume: it reloads its skills file). Per 250 ms bucket of call starts (first run):",
      "",
      "| policy | change | loads / call, 2 s before | peak after | excess loads after | stays within 1.5× from | loads / call, last 2 s after | calls/s per worker, last 2 s after | errors |",
      "|---|---|---|---|---|---|---|---|---|",
    );
    for (const x of rows) {
      const d = x.runs[0]?.dynamic;
      if (d === undefined) continue;
      for (const c of d.changes) {
        const rec =
          c.recoveryMs !== undefined
            ? `${c.recoveryMs} ms`
            : c.spiked
              ? "not within the phase"
              : "never above 1.5×";
        const perWorker = Object.entries(c.perWorkerAfter)
          .map(([w, n]) => `${w} ${n}`)
          .join(", ");
        lines.push(
          `| ${x.policy} | ${c.change} | ${c.loadsPerCallBefore.toFixed(4)} | ${c.peakAfter.toFixed(4)} | ${c.excessLoads} | ${rec} | ` +
            `${c.loadsPerCallAfter.toFixed(4)} | ${perWorker} | ${d.errors} |`,
        );
      }
    }
    if (opts.change === "scale") {
      const fair = 1 / (opts.workers + 1);
      lines.push(
        "",
        `The added worker's share of the calls started in the ${Math.min(ADDED_SHARE_MS, addedForMs) / 1000} s after scale(${opts.workers + 1}) ` +
          `(a fair share is ${(100 * fair).toFixed(1)} %; issue 11's target: ≥ half of it), every run:`,
        "",
        "| policy | share per run | median | ÷ fair share (median) | first call served after (per run) | share per second (first run) | errors in the phase (per run) |",
        "|---|---|---|---|---|---|---|",
      );
      for (const x of rows) {
        const added = x.runs.map((r) => r.dynamic?.changes[0]?.added).filter((a) => a !== undefined);
        if (added.length === 0) continue;
        const med = median(added.map((a) => a.share));
        lines.push(
          `| ${x.policy} | ${added.map((a) => `${(100 * a.share).toFixed(1)} %`).join(", ")} | ${(100 * med).toFixed(1)} % | ` +
            `${(med / fair).toFixed(2)} | ${added.map((a) => (a.firstCallMs === undefined ? "none" : `${a.firstCallMs} ms`)).join(", ")} | ` +
            `${added[0]!.perSecond.map((v) => (100 * v).toFixed(0)).join(" ")} % | ${x.runs.map((r) => r.dynamic?.errors ?? 0).join(", ")} |`,
        );
      }
    }
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  if (opts.out) {
    const machine = {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      loadavg: loadavg(),
      node: process.version,
    };
    writeFileSync(
      opts.out,
      JSON.stringify(
        {
          options: { ...opts, cacheObjects },
          machine,
          runs: all,
          rows: rows.map(({ runs: _runs, ...r }) => r),
        },
        null,
        2,
      ),
    );
  }
}

try {
  await main();
} finally {
  cleanup();
}
