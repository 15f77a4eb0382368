/**
 * The load engine of `roster bench`: grpc-js channels, the closed and the open loop, and the recording of
 * every measured call. One engine runs in one process; `--workers N` runs N of them (./worker.ts) and
 * merges their records (./run.ts).
 *
 * Load models:
 * - closed loop: `concurrency` lanes; a lane starts its next call when its previous one ends, so latency
 *   is measured from the actual start. A stalled server stalls the lanes too: the calls that would have
 *   been sent during the stall are never sent, and their latency is never recorded (coordinated omission).
 * - open loop: call k is *due* at `start + (k + phase) / rate` whatever the server does, and its latency is
 *   measured from that intended time, not from when it was actually started. When the server stalls the
 *   due calls are still started (up to `maxInFlight` at once; past it they wait, their clock running), so
 *   the stall shows in the tail as it would for real users (Gil Tene, "How NOT to measure latency";
 *   wrk2's constant-throughput mode).
 *
 * Timing: `performance.now()`; absolute times (`startAt`) are epoch ms so that worker processes share them.
 * The open-loop pacer sleeps with setTimeout, whose libuv clock has 1 ms granularity: a timer fires up to
 * about 1 ms after its time. So the pacer wakes about 1 ms *early* and starts every call due within the
 * next millisecond (EARLY_MS); a call's latency is measured from its intended start, or from its actual
 * start when that came first. Timer lateness thus never counts as latency, the schedule holds to within
 * 1 ms, and no CPU is burnt polling; a start later than intended (the generator itself behind) does count,
 * and is reported apart as the start lag.
 */
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { ConfigError } from "../core/errors.ts";
import { statusName } from "../core/status.ts";
import type { LoadModel, StopRule } from "./options.ts";
import type { BenchMethod } from "./proto.ts";
import { type TargetRecord, TargetStats } from "./stats.ts";

export interface EnginePlan {
  readonly targets: readonly string[];
  /** The flag the targets came from, for error messages ("--target" or "--compare"). */
  readonly targetFlag: string;
  readonly metadata: readonly (readonly [string, string])[];
  /** Channels per target in this process. */
  readonly connections: number;
  /** This process's share: concurrency lanes, or calls/s with its phase in [0, 1). */
  readonly load: LoadModel;
  readonly phase: number;
  /** This process's share of --calls, or the duration per target. */
  readonly stop: StopRule;
  readonly warmupMs: number;
  readonly timeoutMs: number;
  readonly sliceMs: number;
  readonly intervalMs: number;
  readonly streamMessages: number;
  readonly backendHeader: string;
  readonly backendField: string | undefined;
  /** Makes channel options unique across worker processes. */
  readonly workerIndex: number;
}

export interface EngineProgress {
  /** Measured calls finished, all targets. */
  readonly measured: number;
  readonly errors: number;
  readonly inFlight: number;
  /** Milliseconds since the run started. */
  readonly elapsedMs: number;
  readonly phase: "connecting" | "warm-up" | "measuring" | "draining" | "done";
  readonly target: string;
}

export interface EngineResult {
  readonly targets: readonly TargetRecord[];
  /** User + system CPU of this process over the run, ms. */
  readonly cpuMs: number;
  readonly wallMs: number;
}

export interface CallStatus {
  readonly code: number;
  readonly details: string;
}

const identity = (b: Buffer): Buffer => b;

/** How early the open-loop pacer may start a call (see the file comment). */
const EARLY_MS = 1;

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

export class Engine {
  readonly #plan: EnginePlan;
  readonly #method: BenchMethod;
  readonly #clients: grpc.Client[][];
  readonly #stats: TargetStats[];
  readonly #metadata: grpc.Metadata;
  readonly #active = new Set<grpc.Call>();
  #next = 0;
  #inFlight = 0;
  #measured = 0;
  #errors = 0;
  #phase: EngineProgress["phase"] = "connecting";
  #current = 0;
  #runStart = performance.now();
  #origin = 0;
  #aborted = false;
  #wake: (() => void) | undefined;
  /** Measured calls started per target (calls mode bookkeeping). */
  readonly #started: number[];

  constructor(plan: EnginePlan, method: BenchMethod) {
    this.#plan = plan;
    this.#method = method;
    this.#metadata = new grpc.Metadata();
    for (const [k, v] of plan.metadata) {
      if (k.endsWith("-bin")) this.#metadata.add(k, Buffer.from(v, "base64"));
      else this.#metadata.add(k, v);
    }
    this.#clients = plan.targets.map((target, t) =>
      Array.from(
        { length: plan.connections },
        (_, i) =>
          new grpc.Client(target, grpc.credentials.createInsecure(), {
            // One HTTP/2 connection per channel: grpc-js shares subchannels between channels with equal
            // options unless told otherwise.
            "grpc.use_local_subchannel_pool": 1,
            "grpc.roster_bench_channel": `${process.pid}/${plan.workerIndex}/${t}/${i}`,
            "grpc.max_receive_message_length": -1,
            "grpc.max_send_message_length": -1,
            "grpc.enable_retries": 0,
            "grpc.primary_user_agent": "roster-bench",
          }),
      ),
    );
    this.#stats = plan.targets.map((t) => new TargetStats(t));
    this.#started = plan.targets.map(() => 0);
  }

  /**
   * Connects every channel, then makes one call per target; throws a ConfigError when a target cannot be
   * reached within `timeoutMs`, does not answer, or does not implement the method. Other statuses of the
   * probe call are fine: they are the server's answers, counted as errors during the run.
   */
  async connect(timeoutMs: number): Promise<void> {
    const flag = this.#plan.targetFlag;
    await Promise.all(
      this.#plan.targets.map(async (target, t) => {
        const [first, ...rest] = this.#clients[t]!;
        // Without wait-for-ready a refused connection fails the call at once, with the reason.
        const status = await this.probe(first!, timeoutMs);
        const state = first!.getChannel().getConnectivityState(false);
        if (status.code === grpc.status.UNAVAILABLE && state !== grpc.connectivityState.READY) {
          const why = status.details.replace(/\s*Resolution note:.*$/s, "").trim();
          throw new ConfigError(flag, `cannot reach ${target}: ${why}`);
        }
        if (status.code === grpc.status.DEADLINE_EXCEEDED) {
          throw new ConfigError(
            flag,
            `${target} did not answer a first call within ${timeoutMs} ms (see --connect-timeout)`,
          );
        }
        if (status.code === grpc.status.UNIMPLEMENTED) {
          throw new ConfigError(
            "--call",
            `${target} does not implement ${this.#method.path.slice(1)}: ${status.details}`,
          );
        }
        await Promise.all(
          rest.map(
            (client) =>
              new Promise<void>((resolve, reject) =>
                client.waitForReady(Date.now() + timeoutMs, (err) =>
                  err
                    ? reject(
                        new ConfigError(flag, `cannot open more connections to ${target}: ${err.message}`),
                      )
                    : resolve(),
                ),
              ),
          ),
        );
      }),
    );
  }

  /** One unmeasured call on `client`, resolving with its status. */
  probe(client: grpc.Client, timeoutMs: number): Promise<CallStatus> {
    return new Promise((resolve) => {
      this.#start(client, timeoutMs, (status) => resolve(status));
    });
  }

  progress(): EngineProgress {
    return {
      measured: this.#measured,
      errors: this.#errors,
      inFlight: this.#inFlight,
      elapsedMs: performance.now() - this.#runStart,
      phase: this.#phase,
      target: this.#plan.targets[this.#current] ?? "",
    };
  }

  /** Stops starting calls; the run then drains what is in flight (bounded by the call deadline). */
  abort(): void {
    this.#aborted = true;
    this.#wake?.();
  }

  /** Cancels what is still in flight (used when a drain would not end by itself). */
  cancelAll(): void {
    for (const call of this.#active) call.cancel();
  }

  /**
   * Runs the whole plan, starting at `startAt` (epoch ms): warm-up and measurement for one target, or with
   * two or more targets a warm-up of each then slices of `sliceMs` in turn until each has had its share.
   */
  async run(startAt: number): Promise<EngineResult> {
    const p = this.#plan;
    const wait = startAt - epochNow();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const cpu0 = process.cpuUsage();
    this.#runStart = performance.now();
    const n = p.targets.length;
    const measureFrom = this.#runStart + p.warmupMs * n;
    this.#origin = measureFrom;
    if (n === 1) {
      await this.#step(0, p.warmupMs, p.stop.kind === "duration" ? p.stop.ms : undefined, this.#quota(0));
    } else {
      for (let t = 0; t < n && !this.#aborted; t++) {
        if (p.warmupMs > 0) await this.#step(t, p.warmupMs, 0, undefined);
      }
      this.#origin = performance.now();
      const left = p.targets.map(() => (p.stop.kind === "duration" ? p.stop.ms : Number.POSITIVE_INFINITY));
      // Bounded: each turn either measures a slice of every unfinished target (duration mode: `left`
      // shrinks by sliceMs) or records at least one call per unfinished target (calls mode), or aborts.
      for (;;) {
        let pending = false;
        for (let t = 0; t < n && !this.#aborted; t++) {
          if (left[t]! <= 0 || this.#quota(t) === 0) continue;
          const ms = Math.min(p.sliceMs, left[t]!);
          await this.#step(t, 0, ms, this.#quota(t));
          left[t]! -= ms;
          if (left[t]! > 0 && this.#quota(t) !== 0) pending = true;
        }
        if (!pending || this.#aborted) break;
      }
    }
    this.#phase = "done";
    const cpu = process.cpuUsage(cpu0);
    return {
      targets: this.#stats.map((s) => s.toRecord()),
      cpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: performance.now() - this.#runStart,
    };
  }

  close(): void {
    this.cancelAll();
    for (const list of this.#clients) for (const c of list) c.close();
  }

  /** Measured calls still to start on target t in calls mode; undefined in duration mode. */
  #quota(t: number): number | undefined {
    const stop = this.#plan.stop;
    return stop.kind === "calls" ? Math.max(0, stop.count - this.#started[t]!) : undefined;
  }

  /**
   * One continuous stretch of load on target t: `warmupMs` unmeasured, then `measureMs` (or, in calls
   * mode, until `quota` measured calls have started; with --compare both bound a slice). Resolves when
   * every call it started has ended.
   */
  async #step(t: number, warmupMs: number, measureMs: number | undefined, quota: number | undefined) {
    const p = this.#plan;
    this.#current = t;
    const stats = this.#stats[t]!;
    const clients = this.#clients[t]!;
    const begin = performance.now();
    const recordFrom = begin + warmupMs;
    const recordUntil = measureMs === undefined ? Number.POSITIVE_INFINITY : recordFrom + measureMs;
    this.#phase = warmupMs > 0 ? "warm-up" : "measuring";
    let lastMeasuredEnd = recordFrom;
    let budget = quota ?? Number.POSITIVE_INFINITY;
    const noMeasuring = measureMs === 0;

    /** `from` is when the call's latency clock starts: its intended start, or its actual one if earlier. */
    const startCall = (from: number, record: boolean, done: () => void) => {
      const client = clients[this.#next++ % clients.length]!;
      this.#start(client, p.timeoutMs, (status, backend, messages) => {
        if (record) {
          const end = performance.now();
          lastMeasuredEnd = end;
          this.#measured++;
          if (status.code !== 0) this.#errors++;
          stats.messages += messages;
          const index = Math.max(0, Math.floor((from - this.#origin) / p.intervalMs));
          stats.record((end - from) * 1000, statusName(status.code), backend, index);
        }
        done();
      });
    };

    await new Promise<void>((resolve) => {
      const load = p.load;
      if (load.kind === "closed") {
        let lanes = load.concurrency;
        const next = () => {
          const now = performance.now();
          if (this.#phase === "warm-up" && now >= recordFrom) this.#phase = "measuring";
          const record = now >= recordFrom && !noMeasuring;
          if (
            this.#aborted ||
            now >= recordUntil ||
            (noMeasuring && now >= recordFrom) ||
            (record && budget <= 0)
          ) {
            if (--lanes === 0) resolve();
            return;
          }
          if (record) {
            budget--;
            this.#started[t]!++;
          }
          startCall(now, record, next);
        };
        for (let i = 0; i < load.concurrency; i++) next();
        return;
      }

      // Open loop.
      const interval = 1000 / load.rate;
      let k = 0;
      let due = begin + p.phase * interval;
      let scheduling = true;
      let timer: NodeJS.Timeout | undefined;
      let drainDeadline = Number.POSITIVE_INFINITY;
      const stopAt = noMeasuring ? recordFrom : recordUntil;
      const measured = (at: number) => at >= recordFrom && !noMeasuring;

      const finishIfDrained = () => {
        if (!scheduling && this.#inFlight === 0) {
          this.#wake = undefined;
          resolve();
        }
      };
      const onDone = () => {
        if (scheduling && this.#inFlight < load.maxInFlight && timer === undefined) pump();
        else finishIfDrained();
      };
      const pump = () => {
        timer = undefined;
        const now = performance.now();
        if (this.#phase === "warm-up" && now >= recordFrom) this.#phase = "measuring";
        while (scheduling) {
          if (this.#aborted || due >= stopAt || (measured(due) && budget <= 0)) {
            scheduling = false;
            break;
          }
          if (due > now + EARLY_MS) break;
          if (this.#inFlight >= load.maxInFlight) {
            // Behind: the due calls wait for a free slot, their latency clock already running.
            if (drainDeadline === Number.POSITIVE_INFINITY && now >= stopAt) {
              drainDeadline = now + (p.timeoutMs > 0 ? p.timeoutMs : 30_000) + 1000;
            }
            if (now >= drainDeadline) {
              // Give up on the backlog: count the measured calls never sent.
              for (
                ;
                due < stopAt && !(measured(due) && budget <= 0);
                k++, due = begin + (k + p.phase) * interval
              ) {
                if (measured(due)) {
                  stats.unsent++;
                  budget--;
                }
              }
              scheduling = false;
            }
            break;
          }
          const record = measured(due);
          if (record) {
            budget--;
            this.#started[t]!++;
            stats.recordStartLag(Math.max(0, now - due) * 1000);
          }
          startCall(Math.min(due, now), record, onDone);
          k++;
          due = begin + (k + p.phase) * interval;
        }
        if (!scheduling) {
          finishIfDrained();
          return;
        }
        if (this.#inFlight >= load.maxInFlight) return; // a completion calls pump()
        timer = setTimeout(pump, Math.max(0, Math.floor(due - EARLY_MS - performance.now())));
      };
      this.#wake = () => {
        if (timer !== undefined) clearTimeout(timer);
        pump();
      };
      pump();
    });

    if (measureMs !== 0) {
      const end = measureMs === undefined ? lastMeasuredEnd : Math.min(recordUntil, performance.now());
      stats.measuredMs += Math.max(0, end - recordFrom);
    }
    this.#phase = "draining";
  }

  /**
   * Starts one call of the method on `client`; `done` gets its status, the backend identity (response
   * header, its trailers on a trailers-only answer, or the --backend-field of the first response message)
   * and how many response messages arrived.
   */
  #start(
    client: grpc.Client,
    timeoutMs: number,
    done: (status: CallStatus, backend: string | undefined, messages: number) => void,
  ): void {
    const p = this.#plan;
    const m = this.#method;
    const header = p.backendHeader;
    const field = p.backendField;
    const options: grpc.CallOptions = timeoutMs > 0 ? { deadline: Date.now() + timeoutMs } : {};
    const metadata = this.#metadata.clone();
    let backend: string | undefined;
    let messages = 0;
    let call: grpc.Call | undefined;
    this.#inFlight++;

    const fromMetadata = (md: grpc.Metadata | undefined | null) => {
      if (backend !== undefined || md === undefined || md === null) return;
      const v = md.get(header)[0];
      if (v !== undefined) backend = String(v);
    };
    const fromMessage = (bytes: Buffer) => {
      messages++;
      if (field === undefined || backend !== undefined || messages > 1) return;
      try {
        const v = m.decodeResponse(bytes)[field];
        if (v !== undefined && v !== null && v !== "") backend = String(v);
      } catch {
        // An undecodable message: no identity from it (the status says what went wrong, if anything).
      }
    };
    let finished = false;
    const finish = (code: number, details: string, trailers: grpc.Metadata | undefined | null) => {
      if (finished) return;
      finished = true;
      this.#inFlight--;
      if (call !== undefined) this.#active.delete(call);
      if (field === undefined) fromMetadata(trailers);
      done({ code, details }, backend, messages);
    };
    const writeAll = (
      stream: grpc.ClientWritableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>,
    ) => {
      let i = 0;
      const more = () => {
        while (i < p.streamMessages) {
          i++;
          if (!stream.write(m.request)) {
            stream.once("drain", more);
            return;
          }
        }
        stream.end();
      };
      more();
    };

    switch (m.kind) {
      case "unary": {
        call = client.makeUnaryRequest<Buffer, Buffer>(
          m.path,
          identity,
          identity,
          m.request,
          metadata,
          options,
          (err, value) => {
            if (value !== undefined) fromMessage(value);
            if (err) finish(err.code, err.details, err.metadata);
            else finish(0, "", undefined);
          },
        );
        break;
      }
      case "server-stream": {
        const s = client.makeServerStreamRequest<Buffer, Buffer>(
          m.path,
          identity,
          identity,
          m.request,
          metadata,
          options,
        );
        s.on("data", fromMessage);
        s.on("status", (st: grpc.StatusObject) => finish(st.code, st.details, st.metadata));
        s.on("error", () => {});
        call = s;
        break;
      }
      case "client-stream": {
        const s = client.makeClientStreamRequest<Buffer, Buffer>(
          m.path,
          identity,
          identity,
          metadata,
          options,
          (err, value) => {
            if (value !== undefined) fromMessage(value);
            if (err) finish(err.code, err.details, err.metadata);
            else finish(0, "", undefined);
          },
        );
        s.on("error", () => {});
        writeAll(s);
        call = s;
        break;
      }
      case "bidi": {
        const s = client.makeBidiStreamRequest<Buffer, Buffer>(m.path, identity, identity, metadata, options);
        s.on("data", fromMessage);
        s.on("status", (st: grpc.StatusObject) => finish(st.code, st.details, st.metadata));
        s.on("error", () => {});
        writeAll(s);
        call = s;
        break;
      }
    }
    if (field === undefined) call.on("metadata", fromMetadata);
    if (!finished) this.#active.add(call);
  }
}
