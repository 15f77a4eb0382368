import { Backoff, type BackoffOptions, defaultBackoff } from "../core/backoff.ts";
import type { Endpoint } from "../core/endpoint.ts";
import { Status, statusName } from "../core/status.ts";
import { BackendConnection, type BackendState } from "../platform/backend-connection.ts";
import { systemRandom } from "../platform/system.ts";
import { type Call, startCall } from "./grpc-call.ts";
import {
  DEFAULT_MAX_ENTRIES,
  decodeOrcaLoadReport,
  encodeOrcaRequest,
  frameMessage,
  ORCA_STREAM_PATH,
  type OrcaLoadReport,
} from "./orca-proto.ts";

/**
 * The balancer's ORCA out-of-band client: per backend, one `StreamCoreMetrics` call
 * (xds.service.orca.v3.OpenRcaService) kept open on a small connection of its own, like the health
 * checker's (grpc-health.ts, same reasons), handing every valid report to `onReport`.
 *
 *   waiting ──connection ready──▶ streaming ──report──▶ streaming
 *   streaming ──UNIMPLEMENTED before any report──▶ unsupported ──connection re-made──▶ streaming
 *   streaming ──any other end, or a malformed report──▶ retrying ──backoff──▶ streaming
 *   any ──connection transient-failure──▶ waiting
 *   any ──abort──▶ stopped
 *
 * Reports come from servers we do not control, so they are judged before use:
 * - a message larger than `maxReportBytes`, or with more than `maxEntries` map entries, or that does
 *   not decode, ends the call (a server that sends one sends more) and it is re-opened after backoff;
 * - a report with a non-finite or negative utilization or rate, or a non-finite named metric, is
 *   dropped whole (the previous one stays in force); the stream carries on.
 * Problems go to `onProblem`, at most once per `problemIntervalMs` per backend (with a count of the
 * ones held back), so a hostile server cannot flood the log. Nothing a server sends can throw here.
 *
 * A backend without the service (UNIMPLEMENTED) is not asked again until its connection is re-made.
 */
export interface OrcaClientOptions {
  /** The report interval asked for. Default 1000 ms (Roster workers' minimum). */
  readonly reportIntervalMs?: number;
  /** Largest report accepted, bytes. Default 4 MiB. */
  readonly maxReportBytes?: number;
  /** Most map entries accepted in one report. Default 10 000. */
  readonly maxEntries?: number;
  readonly problemIntervalMs?: number;
  readonly keepaliveMs?: number;
  readonly keepaliveTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  readonly backoff?: BackoffOptions;
}

export interface OrcaWatcher {
  /**
   * Starts following `endpoint`'s reports; returns at once. Stops (sockets and timers released, no
   * more callbacks) when `signal` aborts. Callbacks are asynchronous.
   */
  watch(
    endpoint: Endpoint,
    signal: AbortSignal,
    onReport: (report: OrcaLoadReport) => void,
    onProblem: (detail: string) => void,
  ): void;
}

export const defaultOrcaClient = {
  reportIntervalMs: 1000,
  maxReportBytes: 4 * 1024 * 1024,
  maxEntries: DEFAULT_MAX_ENTRIES,
  problemIntervalMs: 10_000,
} as const;

export function createOrcaClient(options: OrcaClientOptions = {}): OrcaWatcher {
  return {
    watch(endpoint, signal, onReport, onProblem) {
      if (signal.aborted) return;
      new OrcaStream(endpoint, signal, onReport, onProblem, options).start();
    },
  };
}

type Mode =
  | { kind: "waiting" }
  | { kind: "streaming"; call: Call }
  | { kind: "retrying"; timer: NodeJS.Timeout }
  | { kind: "unsupported" }
  | { kind: "stopped" };

/** Why a decoded report is unusable, or undefined when it is fine. */
export function reportProblem(r: OrcaLoadReport): string | undefined {
  const fields: Array<[string, number]> = [
    ["cpu_utilization", r.cpuUtilization],
    ["mem_utilization", r.memUtilization],
    ["application_utilization", r.applicationUtilization],
    ["rps_fractional", r.rpsFractional],
    ["eps", r.eps],
  ];
  for (const [name, v] of fields) {
    if (!Number.isFinite(v) || v < 0) return `${name} is ${v}`;
  }
  for (const [name, v] of Object.entries(r.namedMetrics)) {
    if (!Number.isFinite(v)) return `named metric ${JSON.stringify(name.slice(0, 100))} is ${v}`;
  }
  return undefined;
}

class OrcaStream {
  readonly #signal: AbortSignal;
  readonly #onReport: (report: OrcaLoadReport) => void;
  readonly #onProblem: (detail: string) => void;
  readonly #request: Buffer;
  readonly #maxBytes: number;
  readonly #maxEntries: number;
  readonly #problemIntervalMs: number;
  readonly #backoff: Backoff;
  readonly #connection: BackendConnection;
  #mode: Mode = { kind: "waiting" };
  #lastProblemAt = Number.NEGATIVE_INFINITY;
  #heldProblems = 0;

  constructor(
    endpoint: Endpoint,
    signal: AbortSignal,
    onReport: (report: OrcaLoadReport) => void,
    onProblem: (detail: string) => void,
    o: OrcaClientOptions,
  ) {
    this.#signal = signal;
    this.#onReport = onReport;
    this.#onProblem = onProblem;
    this.#request = frameMessage(
      encodeOrcaRequest({ reportIntervalMs: o.reportIntervalMs ?? defaultOrcaClient.reportIntervalMs }),
    );
    this.#maxBytes = o.maxReportBytes ?? defaultOrcaClient.maxReportBytes;
    this.#maxEntries = o.maxEntries ?? defaultOrcaClient.maxEntries;
    this.#problemIntervalMs = o.problemIntervalMs ?? defaultOrcaClient.problemIntervalMs;
    this.#backoff = new Backoff(systemRandom, o.backoff ?? defaultBackoff);
    this.#connection = new BackendConnection({
      address: endpoint.address,
      onStateChange: (state) => this.#onConnection(state),
      keepaliveMs: o.keepaliveMs ?? 20_000,
      keepaliveTimeoutMs: o.keepaliveTimeoutMs ?? 10_000,
      connectTimeoutMs: o.connectTimeoutMs ?? 5000,
      maxSessions: 1,
      // Reports can be large (one entry per class): a window that holds a few of them.
      windowSize: 1024 * 1024,
      ...(o.backoff ? { backoff: o.backoff } : {}),
    });
  }

  start(): void {
    this.#signal.addEventListener("abort", () => this.#stop(), { once: true });
    this.#connection.start();
  }

  #stop(): void {
    this.#endMode();
    this.#mode = { kind: "stopped" };
    this.#connection.destroy();
  }

  #endMode(): void {
    const m = this.#mode;
    if (m.kind === "streaming") m.call.cancel();
    else if (m.kind === "retrying") clearTimeout(m.timer);
  }

  #problem(detail: string): void {
    if (this.#mode.kind === "stopped") return;
    const now = performance.now();
    if (now - this.#lastProblemAt < this.#problemIntervalMs) {
      this.#heldProblems++;
      return;
    }
    this.#lastProblemAt = now;
    const held = this.#heldProblems;
    this.#heldProblems = 0;
    this.#onProblem(held > 0 ? `${detail} (and ${held} earlier problems not logged)` : detail);
  }

  #onConnection(state: BackendState): void {
    if (this.#mode.kind === "stopped") return;
    switch (state.kind) {
      case "ready":
        if (this.#mode.kind === "waiting" || this.#mode.kind === "unsupported") this.#open();
        return;
      case "transient-failure":
        this.#endMode();
        this.#mode = { kind: "waiting" };
        return;
      case "idle":
      case "connecting":
      case "shutdown":
        return;
    }
  }

  #open(): void {
    if (this.#connection.state.kind !== "ready") {
      this.#mode = { kind: "waiting" };
      return;
    }
    let reports = 0;
    let call: Call | undefined;
    const ended = (code: number, message: string) => {
      if (this.#mode.kind !== "streaming" || this.#mode.call !== call) return;
      if (code === Status.UNIMPLEMENTED && reports === 0) {
        // The backend has no ORCA service: leave it alone until it is a new connection.
        this.#mode = { kind: "unsupported" };
        return;
      }
      if (reports > 0) this.#backoff.reset();
      if (code !== Status.OK && code !== Status.CANCELLED) {
        this.#problem(`ORCA stream ended: ${statusName(code)}${message ? ` (${message})` : ""}`);
      }
      const timer = setTimeout(() => this.#open(), this.#backoff.next());
      timer.unref();
      this.#mode = { kind: "retrying", timer };
    };
    call = startCall(this.#connection, ORCA_STREAM_PATH, this.#request, {
      maxMessageBytes: this.#maxBytes,
      userAgent: "roster-orca",
      message: (body) => {
        let report: OrcaLoadReport;
        try {
          report = decodeOrcaLoadReport(body, this.#maxEntries);
        } catch (err) {
          // A server that sends one bad message will send more: end the call, re-open after backoff.
          call?.cancel();
          this.#problem(`malformed ORCA report ignored: ${(err as Error).message}`);
          ended(Status.CANCELLED, "");
          return;
        }
        const problem = reportProblem(report);
        if (problem !== undefined) {
          this.#problem(`ORCA report ignored: ${problem}`);
          return;
        }
        reports++;
        this.#onReport(report);
      },
      end: ended,
    });
    this.#mode = { kind: "streaming", call };
  }
}
