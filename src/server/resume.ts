import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import type * as grpc from "@grpc/grpc-js";
import { CLASS_HEADER } from "../core/policies/resume.ts";
import {
  createSkills,
  type Skills,
  type SkillsOptions,
  skillsFromJSON,
  skillsToNamedMetrics,
} from "../core/skills.ts";
import {
  decodeOrcaRequest,
  encodeOrcaLoadReport,
  encodeOrcaRequest,
  ORCA_STREAM_PATH,
  type OrcaLoadReportRequest,
} from "../health/orca-proto.ts";

/**
 * A `roster serve` worker's résumé (DESIGN.md, "Résumé-based affinity"): it times every call's handler
 * under the call's class (the `x-roster-class` request header the balancer's classifier sets; absent →
 * the class ""), keeps the skills (core/skills.ts), and publishes them on the standard ORCA out-of-band
 * stream `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`, which it serves on its own grpc-js
 * server next to the user's services.
 *
 * Each stream gets a report at once, then another after every `history` calls (to every stream) or
 * after its report interval without one (the interval the balancer asked for, at least 1 s; 1 s when
 * it asked for none), whichever comes first. A report carries
 * - `named_metrics`: `roster.skill.<class>` → score (requests per second of handler time), at most
 *   MAX_REPORTED_CLASSES of them (the most recently seen first);
 * - `cpu_utilization` and `application_utilization`: this process's CPU time over wall time since the
 *   previous report (1.0 = one core);
 * - `rps_fractional` (and the deprecated integer `rps`): calls finished per second over the same time;
 * - `eps`: of those, the calls that failed (answered with a non-OK status; a call the client cancelled
 *   is not counted) per second — weighted_round_robin's error penalty.
 *
 * Persistence (`skillsFile`): the skills are written (to a temporary file, then renamed over the old
 * one, so a crash never leaves half a file) when a report is published, at most once a second, and when
 * the worker drains; a new worker reloads them, so a restarted worker keeps its résumé. A file that
 * cannot be read or is not a snapshot is logged and ignored: the worker starts with no skills.
 */
export interface WorkerResumeOptions extends SkillsOptions {
  /** Where the skills persist; absent: they live as long as the process. */
  readonly skillsFile?: string;
  /** A line for the worker's log (stderr). */
  readonly log?: (message: string) => void;
}

/** Reports carry at most this many classes, so a report stays well under the balancer's size cap. */
export const MAX_REPORTED_CLASSES = 10_000;
/** The shortest report interval a stream gets on its timer. */
export const MIN_REPORT_INTERVAL_MS = 1000;
const PERSIST_EVERY_MS = 1000;

interface OrcaStream {
  readonly call: grpc.ServerWritableStream<OrcaLoadReportRequest, Buffer>;
  readonly intervalMs: number;
  timer: NodeJS.Timeout | undefined;
}

export class WorkerResume {
  readonly skills: Skills;
  readonly #o: WorkerResumeOptions;
  readonly #streams = new Set<OrcaStream>();
  #lastAt = performance.now();
  #lastCpu = process.cpuUsage();
  #lastRequests = 0;
  #errors = 0;
  #lastErrors = 0;
  #persistedAt = 0;
  #writing = false;
  #dirty = false;
  #closed = false;

  constructor(o: WorkerResumeOptions = {}) {
    this.#o = o;
    this.skills = loadSkills(o);
    this.#lastRequests = this.skills.requests;
  }

  /**
   * Records one call of `className` that spent `elapsedMs` in its handler (and `failed`: ended with a
   * non-OK status); publishes when due.
   */
  record(className: string, elapsedMs: number, failed = false): void {
    if (failed) this.#errors++;
    this.skills.record(className, elapsedMs);
    if (this.skills.shouldPublish()) {
      this.skills.markPublished();
      if (this.#streams.size > 0) {
        const report = this.#report();
        for (const s of this.#streams) this.#send(s, report);
      }
      this.#persistSoon();
    }
  }

  /**
   * Times a handler: call at its start with the call's metadata, and the result once it has answered
   * (with true when it answered with an error).
   */
  begin(metadata: grpc.Metadata | undefined): (failed?: boolean) => void {
    const value = metadata?.get(CLASS_HEADER)[0];
    const className = typeof value === "string" ? value : "";
    const started = performance.now();
    let done = false;
    return (failed = false) => {
      if (done) return;
      done = true;
      this.record(className, performance.now() - started, failed);
    };
  }

  /** Adds the ORCA service to `server`. */
  addToServer(server: grpc.Server): void {
    server.addService(orcaServiceDefinition, {
      StreamCoreMetrics: (call: grpc.ServerWritableStream<OrcaLoadReportRequest, Buffer>) => this.#open(call),
    });
  }

  /** Ends every ORCA stream (so the server can shut down) and writes the skills one last time. */
  close(): void {
    this.#closed = true;
    for (const s of this.#streams) {
      clearTimeout(s.timer);
      s.call.end();
    }
    this.#streams.clear();
    this.persistNow();
  }

  /** Writes the skills file synchronously (at drain); errors are logged. */
  persistNow(): void {
    const file = this.#o.skillsFile;
    if (file === undefined) return;
    try {
      const tmp = `${file}.${process.pid}.tmp`;
      // Synchronous: the worker is about to exit.
      writeFileSync(tmp, JSON.stringify(this.skills.toJSON()));
      renameSync(tmp, file);
    } catch (err) {
      this.#o.log?.(`roster worker: could not write skills to ${file}: ${(err as Error).message}`);
    }
  }

  #open(call: grpc.ServerWritableStream<OrcaLoadReportRequest, Buffer>): void {
    if (this.#closed) {
      call.end();
      return;
    }
    const asked = call.request?.reportIntervalMs ?? 0;
    const stream: OrcaStream = {
      call,
      intervalMs: Math.max(asked > 0 ? asked : MIN_REPORT_INTERVAL_MS, MIN_REPORT_INTERVAL_MS),
      timer: undefined,
    };
    this.#streams.add(stream);
    const forget = () => {
      clearTimeout(stream.timer);
      this.#streams.delete(stream);
    };
    call.on("cancelled", forget);
    call.on("close", forget);
    call.on("error", forget);
    this.#send(stream, this.#report());
  }

  #send(s: OrcaStream, report: Buffer): void {
    clearTimeout(s.timer);
    if (!this.#streams.has(s)) return;
    s.call.write(report);
    s.timer = setTimeout(() => {
      this.#send(s, this.#report());
      this.#persistSoon();
    }, s.intervalMs);
    s.timer.unref();
  }

  /** An encoded report of the skills now and the CPU and call rate since the previous report. */
  #report(): Buffer {
    const now = performance.now();
    const cpu = process.cpuUsage();
    const seconds = Math.max((now - this.#lastAt) / 1000, 1e-3);
    const cpuSeconds = (cpu.user - this.#lastCpu.user + cpu.system - this.#lastCpu.system) / 1e6;
    const requests = this.skills.requests;
    const rps = (requests - this.#lastRequests) / seconds;
    const eps = (this.#errors - this.#lastErrors) / seconds;
    this.#lastAt = now;
    this.#lastCpu = cpu;
    this.#lastRequests = requests;
    this.#lastErrors = this.#errors;
    const utilization = Math.max(cpuSeconds / seconds, 0);
    return encodeOrcaLoadReport({
      cpuUtilization: utilization,
      applicationUtilization: utilization,
      rpsFractional: rps,
      rps: Math.round(rps),
      eps,
      namedMetrics: skillsToNamedMetrics(topClasses(this.skills, MAX_REPORTED_CLASSES)),
    });
  }

  #persistSoon(): void {
    const file = this.#o.skillsFile;
    if (file === undefined || this.#closed) return;
    if (this.#writing) {
      this.#dirty = true;
      return;
    }
    const now = performance.now();
    if (now - this.#persistedAt < PERSIST_EVERY_MS) return;
    this.#persistedAt = now;
    this.#writing = true;
    const tmp = `${file}.${process.pid}.tmp`;
    writeFile(tmp, JSON.stringify(this.skills.toJSON()))
      .then(() => rename(tmp, file))
      .catch((err: Error) =>
        this.#o.log?.(`roster worker: could not write skills to ${file}: ${err.message}`),
      )
      .finally(() => {
        this.#writing = false;
        if (this.#dirty) {
          this.#dirty = false;
          this.#persistedAt = 0;
          this.#persistSoon();
        }
      });
  }
}

/** The most recently seen `max` classes' scores (all of them when there are fewer). */
function topClasses(skills: Skills, max: number): Record<string, number> {
  const scores = skills.scores();
  const names = Object.keys(scores);
  if (names.length <= max) return scores;
  const recent = skills.toJSON().classes;
  names.sort((a, b) => recent[b]!.lastSeen - recent[a]!.lastSeen);
  const out: Record<string, number> = {};
  for (const name of names.slice(0, max)) out[name] = scores[name]!;
  return out;
}

function loadSkills(o: WorkerResumeOptions): Skills {
  const options: SkillsOptions = {
    ...(o.history !== undefined ? { history: o.history } : {}),
    ...(o.maxSkillAge !== undefined ? { maxSkillAge: o.maxSkillAge } : {}),
  };
  const file = o.skillsFile;
  if (file === undefined) return createSkills(options);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOENT")
      o.log?.(`roster worker: cannot read skills file ${file} (${code}); starting with none`);
    return createSkills(options);
  }
  try {
    return skillsFromJSON(JSON.parse(text), options);
  } catch (err) {
    o.log?.(`roster worker: skills file ${file} is unusable (${(err as Error).message}); starting with none`);
    return createSkills(options);
  }
}

/** The ORCA service as grpc-js sees it; reports are encoded once and written as they are. */
export const orcaServiceDefinition: grpc.ServiceDefinition = {
  StreamCoreMetrics: {
    path: ORCA_STREAM_PATH,
    requestStream: false,
    responseStream: true,
    requestSerialize: (r: OrcaLoadReportRequest) => encodeOrcaRequest(r),
    requestDeserialize: (b: Buffer) => decodeOrcaRequest(b),
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};
