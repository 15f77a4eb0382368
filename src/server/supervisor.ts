import { type ChildProcess, fork } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { PolicySpec } from "../core/balancer.ts";
import { type Address, type Endpoint, formatAddress } from "../core/endpoint.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { createSkills } from "../core/skills.ts";
import { type ClassifierConfig, createClassifier } from "../proxy/classify.ts";
import { type Lb, type LbOptions, startLb } from "../proxy/lb.ts";
import type { SupervisorMessage, WorkerConfig, WorkerMessage } from "./protocol.ts";

/**
 * `roster serve`: a supervisor that runs N worker processes of the user's service module, each a
 * grpc-js server on a unix socket, and the `roster lb` data path in front, balancing every call.
 *
 * Worker life cycle (one slot per worker index; tagged union in WorkerProc.state):
 *
 *   starting ──"ready" (health SERVING)──▶ ready ──drain()──▶ draining ──exit──▶ exited
 *   starting/ready ──unexpected exit──▶ exited ──backoff──▶ (new process) starting
 *   ready ──"leaving" (it got SIGTERM)──▶ drain() ──exit──▶ exited ──(not stopping)──▶ (new process) starting
 *
 * A worker receives calls only once it said "ready", which it says after its health service reports
 * SERVING. A crash restarts the slot with a growing backoff (100 ms doubling to 10 s); repeated crashes
 * are reported as a crash loop, not spun. A worker that fails while the server is starting stops the
 * whole start with its message (a broken module must not restart forever).
 *
 * Scaling (`scale(n)`, SIGTTIN/SIGTTOU in the CLI): a new slot takes the lowest worker number not in
 * use and joins the front's backends once ready, like a restarted worker. A removed slot is always the
 * highest-numbered one: it leaves the backends at once (under `resume` its skills leave the pool with
 * it), its open calls finish, then it exits; its skills file, if any, is deleted, so a worker added
 * later under that number starts unskilled. Never below 1 worker.
 */
export interface ServeOptions {
  /** Path of the service module (.ts or .js). */
  readonly module: string;
  readonly workers?: number;
  readonly listen: Address;
  readonly policy?: PolicySpec;
  /** How long draining workers and front connections get to finish open calls. */
  readonly drainGraceMs?: number;
  /** How long a worker may take to become ready. */
  readonly startTimeoutMs?: number;
  /**
   * Worker skills for the `resume` policy (server/resume.ts): `history` and `maxSkillAge` as in
   * core/skills.ts, and `dir`, where worker slot N keeps its skills in `worker-N.json` (so a restarted
   * worker reloads its predecessor's). Absent dir: skills are not persisted.
   */
  readonly skills?: { readonly history?: number; readonly maxSkillAge?: number; readonly dir?: string };
  /** The request classifier for the `resume` policy (proxy/classify.ts); absent: no classes. */
  readonly classifier?: ClassifierConfig;
  /** Hooks for logs and metrics, passed to the front. */
  readonly lb?: Pick<
    LbOptions,
    "onCallEnd" | "onRetry" | "onChannelEvent" | "onFrontEvent" | "onConnection" | "limits"
  >;
  readonly onEvent?: (event: ServeEvent) => void;
}

/**
 * What the supervisor tells its owner. `workerPid` is the worker process's id (named so because a logger that
 * spreads an event into a JSON line has its own `pid`, the supervisor's).
 */
export type ServeEvent =
  | { kind: "worker-ready"; worker: number; workerPid: number }
  | {
      kind: "worker-exited";
      worker: number;
      workerPid: number;
      code: number | null;
      signal: string | null;
      expected: boolean;
    }
  | {
      kind: "worker-restart-scheduled";
      worker: number;
      inMs: number;
      recentCrashes: number;
      crashLoop: boolean;
    }
  | { kind: "worker-failed"; worker: number; message: string }
  /** `scale()` changed the number of workers by one: `from` → `to` (the target, not yet ready). */
  | { kind: "worker-added"; worker: number; from: number; to: number }
  | { kind: "worker-removed"; worker: number; workerPid: number | undefined; from: number; to: number }
  | { kind: "reload"; phase: "start" | "done" | "aborted"; message?: string };

export interface WorkerStatus {
  worker: number;
  pid: number | undefined;
  /**
   * The worker's own gRPC server, `unix:/PATH` (its socket in a private temporary directory), while the
   * slot has a process: what the front dials. A client on the same machine may call a worker directly —
   * e.g. a thick client (`roster/client`, policy `roster_resume`) reading the workers' ORCA résumés
   * itself. Undefined while no process runs; a restarted worker gets a new path.
   */
  address: string | undefined;
  state: WorkerState | "waiting-restart";
  restarts: number;
}

type WorkerState = "starting" | "ready" | "draining" | "exited";

interface WorkerProc {
  readonly slot: Slot;
  readonly child: ChildProcess;
  readonly endpoint: Endpoint;
  state: WorkerState;
  /** Resolves when ready; rejects with the worker's message when it exits first. */
  readonly ready: Promise<void>;
}

interface Slot {
  readonly index: number;
  generation: number;
  /** Taken out by scale(): never restarted, skipped by a rolling restart in progress. */
  removed: boolean;
  proc: WorkerProc | undefined;
  crashes: number[];
  restarts: number;
  restartTimer: NodeJS.Timeout | undefined;
  /**
   * The endpoint of its worker that died unexpectedly, kept among the front's backends until a
   * successor is ready: calls then wait in the front's queue for the restarted worker (bounded by
   * their deadline and queueTimeoutMs) rather than fail at once with "no backends" when it was the
   * last one. Its connection fails (the socket is gone), so it never gets a call. Under its own key
   * ("worker-N.G (restarting)"): the dead worker's backend leaves the channel at once, as before, so
   * no call is sent on its connection before that connection has noticed the death.
   */
  standIn: Endpoint | undefined;
}

export interface RosterServer {
  readonly address: string;
  readonly lb: Lb;
  workers(): WorkerStatus[];
  /** Rolling restart: one worker at a time, each replaced only once its successor is ready. */
  reload(): Promise<void>;
  /** The number of workers asked for (the last scale() target, else the start count). */
  size(): number;
  /**
   * Changes the number of workers to `n` (a whole number ≥ 1) now: adds workers, or removes the
   * highest-numbered ones gracefully (out of the backends, open calls finish, then exit). Resolves
   * when the added workers are ready (or failed, reported by events) and the removed ones have exited.
   */
  scale(n: number): Promise<void>;
  /** Health NOT_SERVING, front stops accepting and drains, then workers drain and exit. */
  close(): Promise<void>;
}

/** The worker entry: .ts beside this file when running from sources, .js when built. */
const workerEntry = fileURLToPath(
  new URL(`./worker${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url),
);

/** tsx's loader, resolved from roster's own dependencies (not from the user's working directory). */
function tsxLoader(): string {
  return import.meta.resolve("tsx");
}

export class ServeStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ServeStartError";
  }
}

export async function serve(o: ServeOptions): Promise<RosterServer> {
  const count = o.workers ?? availableParallelism();
  // Bad settings fail here, with the field named, rather than in every worker.
  if (o.skills !== undefined) createSkills(o.skills);
  if (o.skills?.dir !== undefined) mkdirSync(o.skills.dir, { recursive: true });
  const graceMs = o.drainGraceMs ?? 10_000;
  const modulePath = resolve(o.module);
  // TypeScript service modules load without a build step, through tsx (a dependency of roster).
  const needsTsx = /\.[cm]?ts$/.test(workerEntry) || /\.[cm]?tsx?$/.test(modulePath);
  const socketDir = mkdtempSync(join(tmpdir(), "roster-"));
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({
    index,
    generation: 0,
    removed: false,
    proc: undefined,
    crashes: [],
    restarts: 0,
    restartTimer: undefined,
    standIn: undefined,
  }));
  /** Workers of removed slots, until they exit (shown as draining in workers()). */
  const leaving = new Set<WorkerProc>();
  /** Per worker number, the last generation used: a slot added again must not reuse a socket path. */
  const generations = new Map<number, number>();
  const idempotent = new Set<string>();
  let lb: Lb | undefined;
  let stopping = false;

  const publish = () => {
    if (lb === undefined) return;
    const backends: Endpoint[] = [];
    for (const s of slots) {
      if (s.proc?.state === "ready") backends.push(s.proc.endpoint);
      else if (s.standIn !== undefined) backends.push(s.standIn);
    }
    lb.setBackends(backends);
  };

  const spawnWorker = (slot: Slot): WorkerProc => {
    slot.generation++;
    const id = `${slot.index + 1}.${slot.generation}`;
    const socket = join(socketDir, `w${id}.sock`);
    const skills = o.skills;
    const config: WorkerConfig = {
      module: modulePath,
      socket,
      id,
      ...(skills !== undefined
        ? {
            skills: {
              ...(skills.history !== undefined ? { history: skills.history } : {}),
              ...(skills.maxSkillAge !== undefined ? { maxSkillAge: skills.maxSkillAge } : {}),
              ...(skills.dir !== undefined
                ? { file: join(resolve(skills.dir), `worker-${slot.index + 1}.json`) }
                : {}),
            },
          }
        : {}),
    };
    const execArgv = needsTsx ? ["--import", tsxLoader()] : [];
    const child = fork(workerEntry, [], {
      execArgv,
      env: {
        ...process.env,
        ROSTER_WORKER: JSON.stringify(config),
        ROSTER_WORKER_ID: String(slot.index + 1),
      },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const endpoint: Endpoint = {
      key: `worker-${id}`,
      address: { kind: "unix", path: socket },
      weight: 1,
      labels: { worker: String(slot.index + 1) },
    };
    let resolveReady!: () => void;
    let rejectReady!: (e: Error) => void;
    const ready = new Promise<void>((res, rej) => {
      resolveReady = res;
      rejectReady = rej;
    });
    ready.catch(() => {}); // observed by whoever awaits it
    const proc: WorkerProc = { slot, child, endpoint, state: "starting", ready };
    let fatal: string | undefined;
    child.on("message", (m: WorkerMessage) => {
      if (m.type === "ready" && proc.state === "starting") {
        proc.state = "ready";
        slot.standIn = undefined;
        for (const p of m.idempotentPaths) idempotent.add(p);
        o.onEvent?.({ kind: "worker-ready", worker: slot.index + 1, workerPid: child.pid ?? 0 });
        resolveReady();
        publish();
      } else if (m.type === "fatal") {
        fatal = m.message;
        o.onEvent?.({ kind: "worker-failed", worker: slot.index + 1, message: m.message });
      } else if (m.type === "leaving" && proc.state === "ready") {
        // Out of the balancer first (drain() publishes), then "drain": its socket closes only after the
        // front stopped using it. Sent to this worker alone, SIGTERM replaces it, as a crash would, but
        // without a backoff; sent to the whole group, the supervisor is stopping too.
        void drain(proc).then(() => {
          if (stopping || slot.removed || slot.proc !== proc) return;
          slot.restarts++;
          slot.proc = spawnWorker(slot);
        });
      }
    });
    child.on("error", () => {}); // 'exit' follows
    child.once("exit", (code, signal) => {
      const wasState = proc.state;
      proc.state = "exited";
      const expected = wasState === "draining" || stopping || slot.removed;
      o.onEvent?.({
        kind: "worker-exited",
        worker: slot.index + 1,
        workerPid: child.pid ?? 0,
        code,
        signal,
        expected,
      });
      rejectReady(
        new ServeStartError(
          fatal ?? `worker ${slot.index + 1} exited (${signal ?? `code ${code}`}) before it was ready`,
        ),
      );
      if (!expected && slot.proc === proc && wasState === "ready" && lb !== undefined)
        slot.standIn = { ...endpoint, key: `${endpoint.key} (restarting)` };
      if (wasState === "ready") publish();
      if (!expected && slot.proc === proc) scheduleRestart(slot);
    });
    return proc;
  };

  const scheduleRestart = (slot: Slot) => {
    if (stopping || lb === undefined || slot.removed) return; // during start-up a failure aborts the start instead
    const now = Date.now();
    slot.crashes = [...slot.crashes.filter((t) => now - t < 60_000), now];
    const recent = slot.crashes.length;
    const inMs = Math.min(100 * 2 ** (recent - 1), 10_000);
    o.onEvent?.({
      kind: "worker-restart-scheduled",
      worker: slot.index + 1,
      inMs,
      recentCrashes: recent,
      crashLoop: recent >= 5,
    });
    clearTimeout(slot.restartTimer);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (stopping || slot.removed) return;
      slot.restarts++;
      slot.proc = spawnWorker(slot);
    }, inMs);
  };

  const drain = (proc: WorkerProc): Promise<void> => {
    if (proc.state === "exited") return Promise.resolve();
    proc.state = "draining";
    publish();
    return new Promise<void>((res) => {
      const kill = setTimeout(() => proc.child.kill("SIGKILL"), graceMs + 2000);
      proc.child.once("exit", () => {
        clearTimeout(kill);
        res();
      });
      sendTo(proc, { type: "drain", graceMs });
    });
  };

  const killAll = () => {
    for (const s of slots) if (s.proc && s.proc.state !== "exited") s.proc.child.kill("SIGKILL");
    for (const p of leaving) if (p.state !== "exited") p.child.kill("SIGKILL");
    rmSync(socketDir, { recursive: true, force: true });
  };

  // Start every worker; the first one that fails stops the start with its message.
  for (const s of slots) s.proc = spawnWorker(s);
  try {
    await withTimeout(
      Promise.all(slots.map((s) => s.proc!.ready)),
      o.startTimeoutMs ?? 60_000,
      `workers did not become ready within ${o.startTimeoutMs ?? 60_000} ms`,
    );
  } catch (err) {
    stopping = true;
    killAll();
    throw err;
  }

  lb = await startLb({
    listen: o.listen,
    backends: slots.map((s) => s.proc!.endpoint),
    // Default: least_request scanning every worker (up to A48's 10 choices): with identical local
    // workers this keeps their shares within a few calls of each other.
    policy:
      o.policy ??
      createDefaultRegistry().resolve("least_request", { choiceCount: Math.min(Math.max(count, 2), 10) }),
    forward: {
      isIdempotent: (path) => idempotent.has(path),
      ...(o.classifier !== undefined ? { classify: createClassifier(o.classifier) } : {}),
    },
    // A worker that dies takes all its calls in flight at once (about concurrency ÷ workers); the
    // budget must absorb such a burst, while still stopping retries if every worker keeps failing.
    retryThrottle: { maxTokens: 100, tokenRatio: 0.1 },
    // Workers are local: reconnect fast, and give up a dead socket quickly.
    connection: { keepaliveMs: 10_000, keepaliveTimeoutMs: 5000, connectTimeoutMs: 2000 },
    ...o.lb,
    // Clients reconnect every ~10 min, so several `roster serve` machines behind an L4 balancer share
    // long-lived clients (docs/configuration.md).
    limits: { maxConnectionAgeMs: 600_000, maxConnectionAgeGraceMs: 30_000, ...o.lb?.limits },
  });
  const front = lb;

  let reloading: Promise<void> | undefined;
  const reload = async () => {
    o.onEvent?.({ kind: "reload", phase: "start" });
    for (const slot of [...slots]) {
      if (stopping) return;
      if (slot.removed) continue;
      const old = slot.proc;
      const next = spawnWorker(slot);
      // The old process keeps its slot (and its calls) until its successor is ready.
      try {
        await withTimeout(
          next.ready,
          o.startTimeoutMs ?? 60_000,
          `worker ${slot.index + 1} did not become ready`,
        );
      } catch (err) {
        next.child.kill("SIGKILL");
        o.onEvent?.({ kind: "reload", phase: "aborted", message: (err as Error).message });
        return;
      }
      if (slot.removed) {
        // Scaled away while its successor started: the successor goes too (the old one is leaving).
        next.child.kill("SIGKILL");
        continue;
      }
      // Swap: the new worker takes new calls; the old one leaves the backend list (its open calls
      // finish on the connection that carries them), then drains and exits.
      slot.proc = next;
      publish();
      if (old !== undefined) await drain(old);
    }
    o.onEvent?.({ kind: "reload", phase: "done" });
  };

  const addSlot = (): Promise<void> => {
    const inUse = new Set([...slots.map((s) => s.index), ...[...leaving].map((p) => p.slot.index)]);
    let index = 0;
    while (inUse.has(index)) index++;
    const from = slots.length;
    const slot: Slot = {
      index,
      generation: generations.get(index) ?? 0,
      removed: false,
      proc: undefined,
      crashes: [],
      restarts: 0,
      restartTimer: undefined,
      standIn: undefined,
    };
    slots.push(slot);
    slots.sort((a, b) => a.index - b.index);
    o.onEvent?.({ kind: "worker-added", worker: index + 1, from, to: slots.length });
    const proc = spawnWorker(slot);
    slot.proc = proc;
    // Ready: publish() adds it to the backends. Failed: the exit handler restarts the slot.
    return proc.ready.then(
      () => {},
      () => {},
    );
  };

  const removeSlot = (): Promise<void> => {
    const slot = slots.reduce((a, b) => (b.index > a.index ? b : a));
    const from = slots.length;
    slot.removed = true;
    slots.splice(slots.indexOf(slot), 1);
    generations.set(slot.index, slot.generation);
    clearTimeout(slot.restartTimer);
    slot.restartTimer = undefined;
    const proc = slot.proc;
    o.onEvent?.({
      kind: "worker-removed",
      worker: slot.index + 1,
      workerPid: proc?.child.pid,
      from,
      to: slots.length,
    });
    const forgetSkills = () => {
      if (o.skills?.dir === undefined) return;
      rmSync(join(resolve(o.skills.dir), `worker-${slot.index + 1}.json`), { force: true });
    };
    if (proc === undefined || proc.state === "exited") {
      forgetSkills();
      return Promise.resolve();
    }
    leaving.add(proc);
    if (proc.state === "starting") {
      // No calls yet: it never joined the backends.
      proc.child.kill("SIGKILL");
    }
    // Out of the backends at once (publish() inside drain), open calls finish, then it exits.
    return drain(proc).then(() => {
      leaving.delete(proc);
      forgetSkills();
    });
  };

  return {
    address: front.server.address,
    lb: front,
    workers: (): WorkerStatus[] => [
      ...slots.map(
        (s): WorkerStatus => ({
          worker: s.index + 1,
          pid: s.proc?.child.pid,
          address:
            s.proc === undefined || s.proc.state === "exited"
              ? undefined
              : formatAddress(s.proc.endpoint.address),
          state: s.restartTimer !== undefined ? "waiting-restart" : (s.proc?.state ?? "exited"),
          restarts: s.restarts,
        }),
      ),
      ...[...leaving].map(
        (p): WorkerStatus => ({
          worker: p.slot.index + 1,
          pid: p.child.pid,
          address: formatAddress(p.endpoint.address),
          state: p.state,
          restarts: p.slot.restarts,
        }),
      ),
    ],
    size: () => slots.length,
    scale(n: number) {
      if (!Number.isInteger(n) || n < 1) {
        return Promise.reject(
          new RangeError(`scale: the number of workers must be a whole number ≥ 1, got ${n}`),
        );
      }
      if (stopping) return Promise.resolve();
      const changes: Promise<void>[] = [];
      while (slots.length < n) changes.push(addSlot());
      while (slots.length > n) changes.push(removeSlot());
      return Promise.all(changes).then(() => {});
    },
    reload() {
      reloading ??= reload().finally(() => {
        reloading = undefined;
      });
      return reloading;
    },
    async close() {
      if (stopping) return;
      stopping = true;
      for (const s of slots) clearTimeout(s.restartTimer);
      // Health NOT_SERVING first, so health-checking clients and balancers move away while we drain.
      for (const s of slots) if (s.proc) sendTo(s.proc, { type: "not-serving" });
      await front.close(graceMs);
      await Promise.all([
        ...slots.map((s) => (s.proc ? drain(s.proc) : Promise.resolve())),
        ...[...leaving].map((p) => drain(p)),
      ]);
      rmSync(socketDir, { recursive: true, force: true });
    },
  };
}

function sendTo(proc: WorkerProc, message: SupervisorMessage): void {
  if (proc.child.connected) proc.child.send(message, () => {});
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((res, rej) => {
    const t = setTimeout(() => rej(new ServeStartError(message)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        res(v);
      },
      (e) => {
        clearTimeout(t);
        rej(e);
      },
    );
  });
}
