import type http2 from "node:http2";
import type { Balancer, BalancerDeps, PolicySpec } from "../core/balancer.ts";
import { applyUpdate, type Discovery } from "../core/discovery.ts";
import { type Endpoint, formatAddress } from "../core/endpoint.ts";
import {
  createOutlierDetector,
  type OutlierDetectionConfig,
  type OutlierDetector,
} from "../core/health/outlier-detection.ts";
import type { LoadTracker } from "../core/load/load-tracker.ts";
import {
  type Candidate,
  constantPicker,
  type LoadReport,
  type LoadReportCarrier,
  type PickContext,
  type Picker,
  type PickResult,
} from "../core/picker.ts";
import { ResumeBalancer, resume, type SkillCarrier } from "../core/policies/resume.ts";
import { skillsFromNamedMetrics } from "../core/skills.ts";
import { Status } from "../core/status.ts";
import type { Health, HealthChecker } from "../health/health-checker.ts";
import type { OrcaWatcher } from "../health/orca-client.ts";
import type { OrcaLoadReport } from "../health/orca-proto.ts";
import {
  BackendConnection,
  type BackendConnectionOptions,
  type BackendState,
} from "../platform/backend-connection.ts";

/**
 * The single owner of a cluster's mutable state: Discovery → backends (connections + load) →
 * Balancer.update() → Picker. Used by the proxy and (later) the client.
 *
 * Contract: `pick` is synchronous; pickers change only on discovery updates and backend state changes
 * (connection, health, ejection). Callers that get `queue` register with `onPickerChange` and pick again
 * when it fires.
 *
 * A backend is a candidate when its connection is ready, and — when the cluster has a health checker —
 * its health is `serving`, and — when outlier detection is on — it is not ejected. Decisions:
 * - Health `unknown` (no answer yet) is not a candidate but counts as "connecting": calls queue for it
 *   (gRFC A17 keeps such a subchannel CONNECTING). The checker turns `unknown` into an answer within its
 *   timeout, so the queue is short.
 * - No fail-open: when every backend is not-serving or ejected, calls fail at once with UNAVAILABLE
 *   naming each backend's reason, as a gRPC channel in TRANSIENT_FAILURE does. Envoy's "panic mode"
 *   (balance over all hosts below 50% healthy) would send calls to backends that asked for none, e.g.
 *   while draining; the outlier detector's `maxEjectionPercent` already bounds passive ejection.
 * - Outlier detection (gRFC A50) counts the status of every call that reached a backend
 *   (`recordCallEnd`; see `outlierOutcome` for which statuses are failures) and judges them on a timer
 *   every `intervalMs`.
 */
export interface ChannelOptions {
  readonly name: string;
  readonly discovery: Discovery;
  readonly target: string;
  readonly policy: PolicySpec;
  readonly deps: BalancerDeps;
  readonly connection?: Omit<BackendConnectionOptions, "address" | "onStateChange">;
  /** Active health checks of every backend; absent: a connected backend is healthy. */
  readonly healthChecker?: HealthChecker;
  /** Passive outlier ejection (gRFC A50); absent, or with neither algorithm configured: off. */
  readonly outlierDetection?: OutlierDetectionConfig;
  /**
   * ORCA out-of-band reports of every backend (health/orca-client.ts); absent: none are read. Each
   * valid report replaces the backend's `skills` (its `roster.skill.*` named metrics) with a new map,
   * which the `resume` policy reads at every pick, and its `loadReport` (qps, eps, utilizations) with a
   * new object, from which `weighted_round_robin` computes weights.
   */
  readonly orca?: OrcaWatcher;
  /** Most skill classes kept from one backend's report. Default 100 000. */
  readonly maxSkillClasses?: number;
  readonly onEvent?: (event: ChannelEvent) => void;
}

export type ChannelEvent =
  | { kind: "backend-added"; key: string }
  | { kind: "backend-removed"; key: string }
  | { kind: "backend-state"; key: string; state: BackendState }
  | { kind: "backend-health"; key: string; health: Health; previous: Health; detail: string }
  | { kind: "backend-ejected"; key: string }
  | { kind: "backend-returned"; key: string }
  | { kind: "backend-orca-problem"; key: string; detail: string }
  | { kind: "discovery-error"; error: string };

/**
 * How a call's final status counts for outlier detection: a failure when it says the backend failed
 * (UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, DATA_LOSS — the gRPC statuses Envoy maps to 5xx
 * for its outlier detector, less UNIMPLEMENTED); ignored when the caller went away (CANCELLED); a
 * success otherwise. grpc-js counts every non-OK status as a failure, but behind a balancer that would
 * eject healthy backends for their callers' mistakes (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED…),
 * and a call to a method no backend implements (UNIMPLEMENTED) would eject them all up to the cap.
 */
export function outlierOutcome(code: number): "success" | "failure" | "ignored" {
  switch (code) {
    case Status.UNAVAILABLE:
    case Status.INTERNAL:
    case Status.UNKNOWN:
    case Status.DEADLINE_EXCEEDED:
    case Status.DATA_LOSS:
      return "failure";
    case Status.CANCELLED:
      return "ignored";
    default:
      return "success";
  }
}

/** Per-backend counters kept as plain numbers (cheap on the hot path); metrics read them on scrape. */
export interface BackendStats {
  calls: number;
  failures: number;
  retries: number;
}

/** The parts of a backend's last ORCA report kept for /status. */
export interface OrcaSummary {
  readonly cpuUtilization: number;
  readonly applicationUtilization: number;
  readonly rps: number;
  /** Date.now() when it arrived. */
  readonly at: number;
}

/** A backend as the channel owns it. It is the Candidate handed to the balancer. */
export class Backend implements Candidate, SkillCarrier, LoadReportCarrier {
  readonly key: string;
  readonly endpoint: Endpoint;
  readonly load: LoadTracker;
  readonly connection: BackendConnection;
  readonly stats: BackendStats = { calls: 0, failures: 0, retries: 0 };
  /** Sticky failure (gRFC A61): once failed, counts as failed until it is ready again. */
  failedSinceReady = false;
  /** The health checker's last word; "unchecked" when the cluster has no health checks. */
  health: Health | "unchecked" = "unchecked";
  healthDetail = "";
  /** Ends this backend's health watch. */
  readonly healthAbort = new AbortController();
  /** Its latest résumé (class → score), from ORCA; a new map per report, never mutated. */
  skills: ReadonlyMap<string, number> | undefined;
  /** Its latest ORCA report's load figures. */
  orca: OrcaSummary | undefined;
  /** The same for policies (`at` on the balancer's clock); a new object per report, never mutated. */
  loadReport: LoadReport | undefined;
  /** Ends this backend's ORCA stream. */
  readonly orcaAbort = new AbortController();

  constructor(endpoint: Endpoint, connection: BackendConnection, load: LoadTracker) {
    this.key = endpoint.key;
    this.endpoint = endpoint;
    this.connection = connection;
    this.load = load;
  }

  request(headers: http2.OutgoingHttpHeaders): http2.ClientHttp2Stream {
    return this.connection.request(headers);
  }
}

export interface BackendStatus {
  key: string;
  address: string;
  state: BackendState["kind"];
  error?: string;
  sessions: number;
  inFlight: number;
  calls: number;
  failures: number;
  retries: number;
  /** Present when the cluster has health checks. */
  health?: Health;
  healthDetail?: string;
  /** Present when outlier detection is on. */
  ejected?: boolean;
  /** Present once an ORCA report arrived: its load figures and the top skills (highest score first). */
  orca?: OrcaSummary & { classes: number; topSkills: Record<string, number> };
  /** Its weight in the current picker, when the policy weighs backends (weighted_round_robin). */
  weight?: number;
}

/** How many skills /status shows per backend. */
export const STATUS_TOP_SKILLS = 20;

function topSkills(skills: ReadonlyMap<string, number>, n: number): Record<string, number> {
  const top = [...skills].sort((a, b) => b[1] - a[1]).slice(0, n);
  return Object.fromEntries(top);
}

export class Channel {
  readonly name: string;
  readonly #o: ChannelOptions;
  readonly #balancer: Balancer;
  readonly #backends = new Map<string, Backend>();
  #endpoints = new Map<string, Endpoint>();
  #picker: Picker;
  #notFound = false;
  #discovered = false;
  readonly #waiters = new Set<() => void>();
  readonly #abort = new AbortController();
  readonly #outliers: OutlierDetector | undefined;
  #outlierTimer: NodeJS.Timeout | undefined;

  constructor(options: ChannelOptions) {
    this.name = options.name;
    this.#o = options;
    this.#balancer = options.policy.create(options.deps);
    this.#picker = constantPicker({ kind: "queue" });
    const od = options.outlierDetection;
    const detector = od === undefined ? undefined : createOutlierDetector(od, options.deps);
    this.#outliers = detector?.enabled ? detector : undefined;
  }

  /** Starts watching discovery (and the outlier detection timer). Returns at once. */
  start(): void {
    const outliers = this.#outliers;
    if (outliers !== undefined && this.#outlierTimer === undefined && !this.#abort.signal.aborted) {
      this.#outlierTimer = setInterval(() => this.#tickOutliers(outliers), outliers.config.intervalMs);
      this.#outlierTimer.unref();
    }
    void this.#watch();
  }

  /**
   * Reports the final status of a call that reached `backend` (the proxy calls it once per call), for
   * outlier detection. Cheap and a no-op when detection is off.
   */
  recordCallEnd(backend: Backend, code: number): void {
    const outliers = this.#outliers;
    if (outliers === undefined || this.#backends.get(backend.key) !== backend) return;
    const outcome = outlierOutcome(code);
    if (outcome !== "ignored") outliers.record(backend.key, outcome === "success");
  }

  pick(ctx: PickContext): PickResult {
    return this.#picker.pick(ctx);
  }

  /** Runs `fn` once at the next picker change. Returns a function that cancels the wait. */
  onPickerChange(fn: () => void): () => void {
    this.#waiters.add(fn);
    return () => this.#waiters.delete(fn);
  }

  /** The channel's backend behind a candidate its picker returned. */
  backendOf(candidate: Candidate): Backend {
    return candidate as Backend;
  }

  status(): BackendStatus[] {
    const weights = this.#balancer.weights?.();
    return [...this.#backends.values()].map((b) => {
      const state = b.connection.state;
      const weight = weights?.get(b.key);
      return {
        key: b.key,
        address: formatAddress(b.endpoint.address),
        state: state.kind,
        ...(state.kind === "transient-failure" ? { error: state.error } : {}),
        sessions: b.connection.sessionCount,
        inFlight: b.load.inFlight,
        ...b.stats,
        ...(b.health !== "unchecked" ? { health: b.health, healthDetail: b.healthDetail } : {}),
        ...(this.#outliers !== undefined ? { ejected: this.#outliers.isEjected(b.key) } : {}),
        ...(b.orca !== undefined
          ? {
              orca: {
                ...b.orca,
                classes: b.skills?.size ?? 0,
                topSkills: b.skills === undefined ? {} : topSkills(b.skills, STATUS_TOP_SKILLS),
              },
            }
          : {}),
        ...(weight !== undefined ? { weight } : {}),
      };
    });
  }

  /** What the balancer tells about itself (resume: its backlogs and LRU order), when it has a `status()`. */
  /**
   * Applies changed settings of the running policy without losing its state, when the policy can
   * (`resume`'s variance, backlogHistory, unskilledScore). Returns false when a restart is needed
   * (another policy, or one without live settings). Throws ConfigError for invalid settings.
   */
  reconfigurePolicy(name: string, raw: unknown): boolean {
    if (name !== this.#o.policy.name || !(this.#balancer instanceof ResumeBalancer)) return false;
    this.#balancer.configure(resume.parseConfig(raw));
    return true;
  }

  /** Whether `reconfigurePolicy(name, …)` would apply settings live; changes nothing. */
  canReconfigurePolicy(name: string): boolean {
    return name === this.#o.policy.name && this.#balancer instanceof ResumeBalancer;
  }

  policyStatus(): unknown {
    const b = this.#balancer as Balancer & { status?: () => unknown };
    return typeof b.status === "function" ? b.status() : undefined;
  }

  backends(): Iterable<Backend> {
    return this.#backends.values();
  }

  /** Stops discovery and closes backend sessions gracefully (open streams finish). */
  close(): void {
    this.#abort.abort();
    clearInterval(this.#outlierTimer);
    for (const b of this.#backends.values()) {
      b.healthAbort.abort();
      b.orcaAbort.abort();
      b.connection.close();
    }
    this.#backends.clear();
    this.#setPicker(
      constantPicker({
        kind: "fail",
        status: { code: Status.UNAVAILABLE, message: `cluster ${this.name} is shut down` },
      }),
    );
  }

  async #watch(): Promise<void> {
    const signal = this.#abort.signal;
    // Bounded by the abort signal; a failing discovery is retried after a pause.
    while (!signal.aborted) {
      try {
        for await (const update of this.#o.discovery.watch(this.#o.target, signal)) {
          this.#notFound = update.kind === "not-found";
          this.#discovered = true;
          this.#setEndpoints(applyUpdate(this.#endpoints, update));
        }
        return;
      } catch (err) {
        this.#o.onEvent?.({ kind: "discovery-error", error: (err as Error).message });
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
    }
  }

  #setEndpoints(next: Map<string, Endpoint>): void {
    this.#endpoints = next;
    for (const [key, backend] of this.#backends) {
      const e = next.get(key);
      if (e === undefined || formatAddress(e.address) !== formatAddress(backend.endpoint.address)) {
        backend.healthAbort.abort();
        backend.orcaAbort.abort();
        backend.connection.close();
        this.#backends.delete(key);
        this.#o.onEvent?.({ kind: "backend-removed", key });
      }
    }
    for (const [key, endpoint] of next) {
      if (this.#backends.has(key)) continue;
      const connection = new BackendConnection({
        ...this.#o.connection,
        address: endpoint.address,
        onStateChange: (state) => this.#onBackendState(key, state),
      });
      // The policy chooses how load is measured (in-flight calls, peak-EWMA latency…).
      const backend = new Backend(endpoint, connection, this.#o.policy.createLoadTracker(this.#o.deps));
      this.#backends.set(key, backend);
      this.#o.onEvent?.({ kind: "backend-added", key });
      connection.start();
      const checker = this.#o.healthChecker;
      if (checker !== undefined) {
        backend.health = "unknown";
        checker.watch(endpoint, backend.healthAbort.signal, (health, detail) =>
          this.#onHealth(backend, health, detail),
        );
      }
      this.#o.orca?.watch(
        endpoint,
        backend.orcaAbort.signal,
        (report) => this.#onOrcaReport(backend, report),
        (detail) => {
          if (this.#backends.get(key) === backend)
            this.#o.onEvent?.({ kind: "backend-orca-problem", key, detail });
        },
      );
    }
    this.#outliers?.setEndpoints(next.keys());
    this.#rebuild();
  }

  #onHealth(backend: Backend, health: Health, detail: string): void {
    if (this.#backends.get(backend.key) !== backend || backend.health === "unchecked") return;
    const previous = backend.health;
    backend.health = health;
    backend.healthDetail = detail;
    this.#o.onEvent?.({ kind: "backend-health", key: backend.key, health, previous, detail });
    if (health !== previous) this.#rebuild();
  }

  #onOrcaReport(backend: Backend, report: OrcaLoadReport): void {
    if (this.#backends.get(backend.key) !== backend) return;
    // A new map per report: the resume policy drops its provisional scores when the object changes.
    backend.skills = skillsFromNamedMetrics(report.namedMetrics, this.#o.maxSkillClasses);
    backend.orca = {
      cpuUtilization: report.cpuUtilization,
      applicationUtilization: report.applicationUtilization,
      rps: report.rpsFractional,
      at: Date.now(),
    };
    backend.loadReport = {
      at: this.#o.deps.clock.now(),
      // rps_fractional, or the deprecated integer rps from a server that sends only that.
      qps: report.rpsFractional > 0 ? report.rpsFractional : report.rps,
      eps: report.eps,
      cpuUtilization: report.cpuUtilization,
      applicationUtilization: report.applicationUtilization,
    };
  }

  #tickOutliers(outliers: OutlierDetector): void {
    const { ejected, returned } = outliers.tick(this.#o.deps.clock.now());
    for (const key of ejected) this.#o.onEvent?.({ kind: "backend-ejected", key });
    for (const key of returned) this.#o.onEvent?.({ kind: "backend-returned", key });
    if (ejected.length > 0 || returned.length > 0) this.#rebuild();
  }

  #onBackendState(key: string, state: BackendState): void {
    const backend = this.#backends.get(key);
    if (backend === undefined) return;
    if (state.kind === "ready") backend.failedSinceReady = false;
    if (state.kind === "transient-failure") backend.failedSinceReady = true;
    this.#o.onEvent?.({ kind: "backend-state", key, state });
    this.#rebuild();
  }

  #rebuild(): void {
    const ready: Backend[] = [];
    let connecting = 0;
    const errors: string[] = [];
    for (const b of this.#backends.values()) {
      const s = b.connection.state;
      if (s.kind === "ready") {
        if (b.health === "unknown") connecting++;
        else if (b.health === "not-serving") errors.push(`${b.key}: not serving (${b.healthDetail})`);
        else if (this.#outliers?.isEjected(b.key)) errors.push(`${b.key}: ejected by outlier detection`);
        else ready.push(b);
      } else if (b.failedSinceReady) {
        errors.push(`${b.key}: ${s.kind === "transient-failure" ? s.error : "reconnecting"}`);
      } else if (s.kind === "connecting" || s.kind === "idle") connecting++;
    }
    if (ready.length > 0) {
      this.#setPicker(this.#balancer.update(ready));
      return;
    }
    if (!this.#discovered || connecting > 0) {
      this.#setPicker(constantPicker({ kind: "queue" }));
      return;
    }
    const message =
      this.#backends.size === 0
        ? this.#notFound
          ? `cluster ${this.name}: target ${this.#o.target} was not found by discovery`
          : `cluster ${this.name} has no backends`
        : `cluster ${this.name}: no backend is ready (${errors.slice(0, 5).join("; ")})`;
    this.#setPicker(constantPicker({ kind: "fail", status: { code: Status.UNAVAILABLE, message } }));
  }

  #setPicker(picker: Picker): void {
    this.#picker = picker;
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}
