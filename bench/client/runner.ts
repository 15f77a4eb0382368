// One measured run of bench/client, in a process of its own (so each client starts from the same
// state: no JIT, heap or grpc-js subchannels left over from another configuration):
//   node --import tsx bench/client/runner.ts '<RunSpec as JSON>'
// Builds the client, checks `checkCalls` calls one at a time, then runs `concurrency` closed-loop lanes:
// `warmupMs` of load, the measured window of `durationMs` (the calls that END inside it are counted),
// then stops. Tells the parent {window-start}, {window-end} (it samples CPU there) and {result};
// {failed} with the reason on any error. Exits when the parent goes away.
import * as grpc from "@grpc/grpc-js";
import { encodeHistogram, newHistogram } from "../../src/bench/stats.ts";
import { createClient, presets, type RosterClient, type Unary } from "../../src/client/index.ts";
import {
  ECHO_PROTO,
  ECHO_SERVICE,
  type EchoReply,
  type EchoRequest,
  LOADER_OPTIONS,
  loadEcho,
  PAYLOAD,
} from "./echo.ts";
import type { RunnerMessage, RunResult, RunSpec } from "./protocol.ts";

/** Upper bound of calls per lane, so a lane ends even if the clock misbehaves. */
const MAX_CALLS_PER_LANE = 50_000_000;
/** A failing call makes its lane wait this long, so an unreachable target cannot spin the loop. */
const ERROR_PAUSE_MS = 10;

function tell(message: RunnerMessage): void {
  if (process.send !== undefined) process.send(message);
  else console.log(JSON.stringify(message));
}

interface Subject {
  call(request: EchoRequest): Promise<EchoReply>;
  close(): void;
  pool?(): { size: number; opened: number };
  queued?(): number;
}

type EchoService = { Echo: Unary<EchoRequest, EchoReply> };

function presetOf(spec: RunSpec) {
  const make = presets[spec.preset as keyof typeof presets];
  if (make === undefined)
    throw new Error(`unknown preset ${spec.preset} (known: ${Object.keys(presets).join(", ")})`);
  const fixed = spec.client.fixedChannels;
  return make({
    deadlineMs: spec.deadlineMs,
    ...(fixed !== undefined ? { pool: { min: fixed, max: fixed } } : {}),
    ...(spec.limiterMax > 0 ? { limiter: { maxConcurrent: spec.limiterMax } } : {}),
  });
}

function subjectOf(spec: RunSpec): Subject {
  if (spec.client.kind === "roster") {
    const client: RosterClient<EchoService> = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: ECHO_SERVICE,
      loaderOptions: LOADER_OPTIONS,
      target: spec.target,
      preset: presetOf(spec),
      policy: spec.client.policy,
    });
    return {
      call: (request) => client.Echo(request),
      close: () => client.close(),
      pool: () => client.stats().pool,
      queued: () => client.stats().queued,
    };
  }
  // The peer: grpc-js as users write it, the same policy named in its service config, the same deadline.
  const { Client: Ctor } = loadEcho();
  const client = new Ctor(spec.target, grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ [spec.client.policy]: {} }] }),
  });
  return {
    call: (request) =>
      new Promise((resolve, reject) => {
        client.Echo(request, { deadline: Date.now() + spec.deadlineMs }, (err, reply) =>
          err !== null || reply === undefined ? reject(err ?? new Error("no reply")) : resolve(reply),
        );
      }),
    close: () => client.close(),
  };
}

function statusName(err: unknown): string {
  const code = (err as grpc.ServiceError | undefined)?.code;
  return typeof code === "number" ? (grpc.status[code] ?? `code ${code}`) : "non-grpc error";
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(spec: RunSpec): Promise<RunResult> {
  const subject = subjectOf(spec);
  try {
    const request: EchoRequest = { payload: PAYLOAD };
    for (let i = 0; i < spec.checkCalls; i++) {
      let reply: EchoReply;
      try {
        reply = await subject.call(request);
      } catch (err) {
        throw new Error(`check call ${i + 1} failed: ${(err as Error).message}`);
      }
      if (!PAYLOAD.equals(reply.payload)) throw new Error(`check call ${i + 1}: payload not echoed`);
    }

    let phase: "warmup" | "measure" | "stop" = "warmup";
    const histogram = newHistogram();
    let calls = 0;
    let badPayloads = 0;
    let firstError: string | undefined;
    const errors: Record<string, number> = {};
    const servedBy: Record<string, number> = {};
    const lane = async (): Promise<void> => {
      for (let i = 0; i < MAX_CALLS_PER_LANE && phase !== "stop"; i++) {
        const t0 = performance.now();
        try {
          const reply = await subject.call(request);
          if (phase !== "measure") continue;
          histogram.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
          calls++;
          servedBy[reply.served_by] = (servedBy[reply.served_by] ?? 0) + 1;
          if (!PAYLOAD.equals(reply.payload)) badPayloads++;
        } catch (err) {
          if (phase === "measure") {
            const name = statusName(err);
            errors[name] = (errors[name] ?? 0) + 1;
            firstError ??= `${name}: ${(err as Error).message}`;
          }
          await sleep(ERROR_PAUSE_MS);
        }
      }
    };
    const lanes = Promise.all(Array.from({ length: spec.concurrency }, lane));
    await sleep(spec.warmupMs);

    // The pool's size, sampled every 100 ms in the window (the timer runs between calls, so under
    // full load it samples less often; the mean weights each sample by the time it covers).
    let poolMax = 0;
    let weighted = 0;
    let weightMs = 0;
    let last = performance.now();
    const samplePool = () => {
      if (subject.pool === undefined) return;
      const now = performance.now();
      const size = subject.pool().size;
      poolMax = Math.max(poolMax, size);
      weighted += size * (now - last);
      weightMs += now - last;
      last = now;
    };
    tell({ type: "window-start" });
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    last = start;
    phase = "measure";
    const sampler = setInterval(samplePool, 100);
    await sleep(spec.durationMs);
    samplePool();
    clearInterval(sampler);
    phase = "stop";
    const elapsedS = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const poolEnd = subject.pool?.();
    const queuedAtEnd = subject.queued?.();
    tell({ type: "window-end" });
    await lanes; // each lane ends after its call in flight: bounded by the deadline

    const ms = (p: number) => histogram.getValueAtPercentile(p) / 1000;
    const result: RunResult = {
      elapsedS,
      calls,
      errors,
      firstError,
      badPayloads,
      servedBy,
      p50Ms: ms(50),
      p99Ms: ms(99),
      p999Ms: ms(99.9),
      maxMs: histogram.maxValue / 1000,
      histogram: encodeHistogram(histogram),
      clientCpuUs: cpu.user + cpu.system,
    };
    if (poolEnd !== undefined) {
      result.pool = {
        end: poolEnd.size,
        max: poolMax,
        mean: weightMs > 0 ? weighted / weightMs : poolEnd.size,
        opened: poolEnd.opened,
      };
    }
    if (queuedAtEnd !== undefined) result.queuedAtEnd = queuedAtEnd;
    return result;
  } finally {
    subject.close();
  }
}

/** Sends the last message, then exits (grpc-js timers and the IPC channel would keep the process up). */
function finish(message: RunnerMessage, code: number): void {
  const exit = () => process.exit(code);
  setTimeout(exit, 2000); // the parent is gone or not reading: exit anyway
  if (process.send !== undefined) process.send(message, undefined, {}, exit);
  else {
    console.log(JSON.stringify(message));
    exit();
  }
}

process.on("disconnect", () => process.exit(0));

const raw = process.argv[2];
try {
  if (raw === undefined) throw new Error("usage: runner.ts '<RunSpec JSON>'");
  const spec = JSON.parse(raw) as RunSpec;
  finish({ type: "result", result: await run(spec) }, 0);
} catch (err) {
  finish({ type: "failed", message: (err as Error).message }, 1);
}
