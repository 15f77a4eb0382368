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
import type { BackendLink, BackendState, CreateBackendLink } from "./backend-link.ts";
import { systemTimer, type Timer } from "./timer.ts";

/**
 * The single owner of a cluster's mutable state: Discovery → backends (connections + load) →
 * Balancer.update() → Picker. Used by the proxy and (later) the client.
 *
 * Contract: `pick` is synchronous; pickers change only on discovery updates and backend state changes
 * (connection, health, ejection). Callers that get `queue` register with `onPickerChange` and pick again
 * when it fires.
 *
 * A backend is a candidate when its connection is ready, and — when the cluster has a health checker —
 * its health is `serving`, and — when outlier detection is on — it is not ejected.
 *
 * Readiness. When no backend is a candidate, each backend is one of:
 * - pending: connecting (first time or again), or connected with health `unknown` (no answer yet;
 *   gRFC A17 keeps such a subchannel CONNECTING). It may become a candidate by itself, soon.
 * - asleep: in transient-failure, waiting out a reconnect backoff step — and neither ejected nor
 *   not-serving. It may become a candidate once woken.
 * - blocked: ejected by outlier detection, or health not-serving (whatever its connection does), or
 *   shut down. It becomes a candidate only when its ejection time passes or its health checker says
 *   SERVING — neither of which a call can hasten.
 * The picker is then `queue` while any backend is pending or asleep, else `fail` (UNAVAILABLE naming
 * each backend's reason). A call that gets `queue` wakes every asleep backend (`connectNow`): a backend
 * that comes up is used at once, instead of after the rest of a backoff step that grows to 10 s.
 * Decisions:
 * - Once per backoff step, not per call: a woken backend is connecting, so later picks leave it be;
 *   only the failure of that attempt starts a new step that may be woken. So 1000 calls during one step
 *   make one connection attempt, not 1000.
 * - No sooner than `wakeDelayMs` (20 ms) after the attempt failed: a step is shortened to that, never
 *   skipped, so a dead backend whose port refuses at once gets at most ~50 attempts a second however
 *   fast calls arrive (HAProxy and nginx connect once per request). A pick inside that time schedules
 *   the wake-up for its end instead.
 * - While calls are queued, each new step of an asleep backend is woken the same way even if no new
 *   call arrives, so a queued call is released within about `wakeDelayMs` of its backend coming up.
 *   With no call waiting, backends reconnect on their plain backoff.
 * - The wait is bounded by the call's deadline and the proxy's `queueTimeoutMs` (frame-forward.ts); then
 *   the call fails with `unavailableMessage()` — each backend's reason — as a sticky TRANSIENT_FAILURE
 *   would have failed it at once (gRFC A61: a backend that failed keeps its last error as its reason
 *   while it reconnects, until it is ready again).
 * - Paced release (a slow start clocked by round trips, newest first): when the picker stops queueing,
 *   the newest waiting call picks again at once (in the same turn as the backend became ready), and
 *   each next batch, twice as large (1, 2, 4…: 10 000 calls in 14), only once every ready backend has
 *   acknowledged a round trip sent after the previous batch (`BackendLink.afterRoundTrip`: an HTTP/2
 *   PING behind those calls, so its ack says the backend has read them), or `releaseStepMs` (100 ms)
 *   after it at the latest. FrameBackend sends at most 2 such PINGs per connection per 5 minutes (gRPC
 *   servers close a connection that PINGs more often with none of their data in between) and then
 *   answers on the next turn: on a new connection 1 call, 2 after one round trip, 4 after another,
 *   then twice as many per turn — the first answers come from a backend that read few calls. Why (docs/benchmarks.md, readiness): a grpc-js server reads every stream
 *   that arrived in one socket read before it writes any answer, so ~200 calls queued during an outage
 *   and sent at once to a just-started (cold) backend — or in batches a timer turn apart, which it
 *   still read together — held the first answer back until all had been handled (100–600 ms on 2 busy
 *   cores). Newest first because after an outage the oldest waiters are the ones about to miss their
 *   deadline (with 2 s deadlines the oldest had 0–20 ms left): sent first, they spend the cold
 *   backend's first, slowest work on calls that fail anyway; left last, most of them end in the queue
 *   without costing the backend anything (adaptive LIFO). The whole queue is out within ~log2(n)
 *   round trips, so no waiter starves. A new call meanwhile picks at once (it does not queue behind
 *   them). When the picker queues again the release stops, and starts over at one call; a `fail`
 *   picker releases every waiter at once (failing is not paced). A picker change during the release
 *   does not release more.
 * - Blocked backends are not woken, and when only blocked backends remain calls fail at once with
 *   their reasons: an ejected backend was judged failing by recent calls, a not-serving one said so (or
 *   its health connection cannot reach it); waking its data connection would not make it a candidate,
 *   and queueing would only delay the answer. With health checks on, a backend that was unreachable
 *   returns when its health checker reconnects (its own backoff), not on a call's wake-up.
 * - No fail-open: when every backend is not-serving or ejected, calls fail at once with UNAVAILABLE
 *   naming each backend's reason, as a gRPC channel in TRANSIENT_FAILURE does. Envoy's "panic mode"
 *   (balance over all hosts below 50% healthy) would send calls to backends that asked for none, e.g.
 *   while draining; the outlier detector's `maxEjectionPercent` already bounds passive ejection.
 * - Outlier detection (gRFC A50) counts the status of every call that reached a backend
 *   (`recordCallEnd`; see `outlierOutcome` for which statuses are failures) and judges them on a timer
 *   every `intervalMs`.
 */
export interface ChannelOptions<L extends BackendLink = BackendLink> {
  readonly name: string;
  readonly discovery: Discovery;
  readonly target: string;
  readonly policy: PolicySpec;
  readonly deps: BalancerDeps;
  /** Makes the link to one backend (the proxy's: platform's FrameBackend). */
  readonly createConnection: CreateBackendLink<L>;
  /** The channel's timers (outlier interval, wake-ups, discovery retry). Default: node's, unref'd. */
  readonly timer?: Timer;
  /**
   * How soon after a failed connection attempt a backend in backoff may be woken by a queued call
   * (see Readiness above). Default `defaultReadiness.wakeDelayMs`.
   */
  readonly wakeDelayMs?: number;
  /**
   * Longest wait between two batches of the paced release when the backends do not acknowledge the
   * round trip sooner (see Readiness). Default `defaultReadiness.releaseStepMs`.
   */
  readonly releaseStepMs?: number;
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

/** Defaults of the channel's readiness (see the Channel's header). */
export const defaultReadiness = { wakeDelayMs: 20, releaseStepMs: 100 } as const;

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
export class Backend<L extends BackendLink = BackendLink>
  implements Candidate, SkillCarrier, LoadReportCarrier
{
  readonly key: string;
  readonly endpoint: Endpoint;
  readonly load: LoadTracker;
  readonly connection: L;
  readonly stats: BackendStats = { calls: 0, failures: 0, retries: 0 };
  /** Sticky failure (gRFC A61): once failed, its last error is its reason until it is ready again. */
  failedSinceReady = false;
  lastError = "";
  /** Channel clock time of its last transient-failure (the start of its backoff step). */
  failedAt = 0;
  /** How many times a queued call woke it (`connectNow`), for tests and /status. */
  wakeUps = 0;
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

  constructor(endpoint: Endpoint, connection: L, load: LoadTracker) {
    this.key = endpoint.key;
    this.endpoint = endpoint;
    this.connection = connection;
    this.load = load;
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

/** The one `queue` picker, so a rebuild that still queues does not wake the waiting calls. */
const QUEUE: Picker = constantPicker({ kind: "queue" });

/** Queued calls released at once (newest first) when the picker stops queueing; doubles per round trip. */
export const RELEASE_FIRST = 1;

/** What the current picker answers: the ready backends' picks, `queue`, or `fail`. */
type PickerKind = "ready" | "queue" | "fail";

/** A batch of the paced release whose round trip is awaited. */
interface ReleaseStep {
  cancelTimer: (() => void) | undefined;
}

export class Channel<L extends BackendLink = BackendLink> {
  readonly name: string;
  readonly #o: ChannelOptions<L>;
  readonly #balancer: Balancer;
  readonly #backends = new Map<string, Backend<L>>();
  #endpoints = new Map<string, Endpoint>();
  #picker: Picker;
  #pickerKind: PickerKind = "queue";
  /** The candidates the picker was built from (when it is `ready`). */
  #ready: Backend<L>[] = [];
  #notFound = false;
  #discovered = false;
  readonly #waiters = new Set<() => void>();
  readonly #abort = new AbortController();
  readonly #outliers: OutlierDetector | undefined;
  readonly #timer: Timer;
  readonly #createLink: CreateBackendLink<L>;
  readonly #wakeDelayMs: number;
  readonly #releaseStepMs: number;
  #cancelOutlierTimer: (() => void) | undefined;
  /** Backends in backoff that a queued call may wake (neither ejected nor not-serving). */
  #asleep: Backend<L>[] = [];
  #cancelWakeTimer: (() => void) | undefined;
  #releaseStep: ReleaseStep | undefined;
  #releaseSize = RELEASE_FIRST;
  #wakeTimerAt = Number.POSITIVE_INFINITY;

  constructor(options: ChannelOptions<L>) {
    this.name = options.name;
    this.#o = options;
    this.#balancer = options.policy.create(options.deps);
    this.#picker = QUEUE;
    this.#timer = options.timer ?? systemTimer;
    this.#wakeDelayMs = options.wakeDelayMs ?? defaultReadiness.wakeDelayMs;
    this.#releaseStepMs = options.releaseStepMs ?? defaultReadiness.releaseStepMs;
    this.#createLink = options.createConnection;
    const od = options.outlierDetection;
    const detector = od === undefined ? undefined : createOutlierDetector(od, options.deps);
    this.#outliers = detector?.enabled ? detector : undefined;
  }

  /** Starts watching discovery (and the outlier detection timer). Returns at once. */
  start(): void {
    const outliers = this.#outliers;
    if (outliers !== undefined && this.#cancelOutlierTimer === undefined && !this.#abort.signal.aborted) {
      this.#cancelOutlierTimer = this.#timer.setInterval(
        () => this.#tickOutliers(outliers),
        outliers.config.intervalMs,
      );
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

  /**
   * Synchronous. A `queue` answer also wakes the backends asleep in backoff (at most once per backoff
   * step each; see Readiness above); a woken backend's state change may build a new picker, and so run
   * `onPickerChange` callbacks, before this returns.
   */
  pick(ctx: PickContext): PickResult {
    const result = this.#picker.pick(ctx);
    if (result.kind === "queue" && this.#asleep.length > 0) this.#wake();
    return result;
  }

  /**
   * Why no backend is ready: "cluster NAME: no backend is ready (KEY: reason; …)", naming up to five
   * backends. What a call waiting in the queue fails with when its wait ends.
   */
  unavailableMessage(): string {
    if (this.#backends.size === 0) {
      if (!this.#discovered) return `cluster ${this.name}: discovery has not answered yet`;
      return this.#notFound
        ? `cluster ${this.name}: target ${this.#o.target} was not found by discovery`
        : `cluster ${this.name} has no backends`;
    }
    const reasons: string[] = [];
    for (const b of this.#backends.values()) {
      if (reasons.length === 5) {
        reasons.push(`and ${this.#backends.size - 5} more`);
        break;
      }
      reasons.push(`${b.key}: ${this.#reasonOf(b)}`);
    }
    return `cluster ${this.name}: no backend is ready (${reasons.join("; ")})`;
  }

  /** Why `b` is not a candidate now (or "ready"). */
  #reasonOf(b: Backend<L>): string {
    const s = b.connection.state;
    if (this.#outliers?.isEjected(b.key)) return "ejected by outlier detection";
    if (b.health === "not-serving") return `not serving (${b.healthDetail})`;
    switch (s.kind) {
      case "ready":
        return b.health === "unknown" ? "no health check answer yet" : "ready";
      case "transient-failure":
        return s.error;
      case "idle":
      case "connecting":
        return b.failedSinceReady ? `${b.lastError} (reconnecting)` : "connecting";
      case "shutdown":
        return "shut down";
    }
  }

  /** Runs `fn` once at the next picker change. Returns a function that cancels the wait. */
  onPickerChange(fn: () => void): () => void {
    this.#waiters.add(fn);
    return () => this.#waiters.delete(fn);
  }

  /** The channel's backend behind a candidate its picker returned. */
  backendOf(candidate: Candidate): Backend<L> {
    return candidate as Backend<L>;
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
   * (`resume`'s variance, backlogHistory, unskilledScore, minShare, shareHistory, moveClassShare). Returns false when a restart is needed
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

  backends(): Iterable<Backend<L>> {
    return this.#backends.values();
  }

  /** Stops discovery and closes backend sessions gracefully (open streams finish). */
  close(): void {
    this.#abort.abort();
    this.#cancelOutlierTimer?.();
    this.#cancelWakeTimer?.();
    this.#cancelWakeTimer = undefined;
    this.#asleep = [];
    this.#endRelease();
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
      "fail",
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
        await new Promise<void>((r) => this.#timer.setTimeout(r, 1000));
      }
    }
  }

  #setEndpoints(next: Map<string, Endpoint>): void {
    this.#endpoints = next;
    for (const [key, backend] of this.#backends) {
      const e = next.get(key);
      if (e === undefined || formatAddress(e.address) !== formatAddress(backend.endpoint.address)) {
        this.#backends.delete(key);
        backend.healthAbort.abort();
        backend.orcaAbort.abort();
        backend.connection.close();
        this.#o.onEvent?.({ kind: "backend-removed", key });
      }
    }
    for (const [key, endpoint] of next) {
      if (this.#backends.has(key)) continue;
      let backend: Backend<L> | undefined;
      const connection = this.#createLink({
        address: endpoint.address,
        // Only while it is this key's backend: a link closed by a removal may still report.
        onStateChange: (state) => {
          if (backend !== undefined && this.#backends.get(key) === backend)
            this.#onBackendState(backend, state);
        },
      });
      // The policy chooses how load is measured (in-flight calls, peak-EWMA latency…).
      backend = new Backend(endpoint, connection, this.#o.policy.createLoadTracker(this.#o.deps));
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

  #onHealth(backend: Backend<L>, health: Health, detail: string): void {
    if (this.#backends.get(backend.key) !== backend || backend.health === "unchecked") return;
    const previous = backend.health;
    backend.health = health;
    backend.healthDetail = detail;
    this.#o.onEvent?.({ kind: "backend-health", key: backend.key, health, previous, detail });
    if (health !== previous) this.#rebuild();
  }

  #onOrcaReport(backend: Backend<L>, report: OrcaLoadReport): void {
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

  #onBackendState(backend: Backend<L>, state: BackendState): void {
    if (state.kind === "ready") backend.failedSinceReady = false;
    if (state.kind === "transient-failure") {
      backend.failedSinceReady = true;
      backend.lastError = state.error;
      backend.failedAt = this.#o.deps.clock.now();
    }
    this.#o.onEvent?.({ kind: "backend-state", key: backend.key, state });
    this.#rebuild();
    // Calls are waiting: this new backoff step is woken too (after wakeDelayMs), not slept through.
    if (state.kind === "transient-failure" && this.#waiters.size > 0 && this.#asleep.length > 0) this.#wake();
  }

  /**
   * Asks every asleep backend to connect now, or schedules that for `wakeDelayMs` after its failure.
   * A woken backend is connecting, so it is not asked again in this backoff step.
   */
  #wake(): void {
    const now = this.#o.deps.clock.now();
    let next = Number.POSITIVE_INFINITY;
    // A copy: connectNow() reports synchronously, which rebuilds #asleep.
    for (const b of [...this.#asleep]) {
      if (this.#backends.get(b.key) !== b || b.connection.state.kind !== "transient-failure") continue;
      const at = b.failedAt + this.#wakeDelayMs;
      if (at <= now) {
        b.wakeUps++;
        b.connection.connectNow();
      } else if (at < next) next = at;
    }
    if (next < this.#wakeTimerAt) {
      this.#cancelWakeTimer?.();
      this.#wakeTimerAt = next;
      this.#cancelWakeTimer = this.#timer.setTimeout(() => {
        this.#cancelWakeTimer = undefined;
        this.#wakeTimerAt = Number.POSITIVE_INFINITY;
        // Only for calls still waiting; a new call would wake them itself.
        if (this.#waiters.size > 0 && this.#asleep.length > 0) this.#wake();
      }, next - now);
    }
  }

  #rebuild(): void {
    const ready: Backend<L>[] = [];
    const asleep: Backend<L>[] = [];
    let pending = 0;
    for (const b of this.#backends.values()) {
      const s = b.connection.state;
      // Blocked (ejected, not serving, shut down): neither a candidate nor worth waiting for.
      if (this.#outliers?.isEjected(b.key) || b.health === "not-serving") continue;
      if (s.kind === "ready") {
        if (b.health === "unknown") pending++;
        else ready.push(b);
      } else if (s.kind === "transient-failure") asleep.push(b);
      else if (s.kind === "connecting" || s.kind === "idle") pending++;
    }
    this.#asleep = asleep;
    this.#ready = ready;
    if (ready.length > 0) {
      this.#setPicker(this.#balancer.update(ready), "ready");
      return;
    }
    if (!this.#discovered || pending > 0 || asleep.length > 0) {
      this.#setPicker(QUEUE, "queue");
      return;
    }
    this.#setPicker(
      constantPicker({
        kind: "fail",
        status: { code: Status.UNAVAILABLE, message: this.unavailableMessage() },
      }),
      "fail",
    );
  }

  #setPicker(picker: Picker, kind: PickerKind): void {
    this.#picker = picker;
    this.#pickerKind = kind;
    switch (kind) {
      case "queue":
        // A waiting call would only queue again: it is not woken. A paced release stops, and starts
        // over (one call) when a backend is ready again.
        this.#endRelease();
        return;
      case "fail": {
        // Every waiting call fails now; failing is not paced.
        this.#endRelease();
        const all = [...this.#waiters];
        this.#waiters.clear();
        for (const w of all) w();
        return;
      }
      case "ready":
        // A paced release in progress goes on, its next batch picking from the new picker.
        if (this.#releaseStep !== undefined || this.#waiters.size === 0) return;
        this.#releaseSize = RELEASE_FIRST;
        this.#releaseWaiters();
        return;
    }
  }

  #endRelease(): void {
    this.#releaseStep?.cancelTimer?.();
    this.#releaseStep = undefined;
  }

  /**
   * Paced release (see Readiness): runs the `#releaseSize` newest waiters now, and the next batch,
   * twice as large, once every ready backend has acknowledged a round trip sent after this one (it has
   * read these calls), or `releaseStepMs` after it at the latest.
   */
  #releaseWaiters(): void {
    // Newest first (the set keeps arrival order).
    const batch = [...this.#waiters].slice(-this.#releaseSize).reverse();
    this.#releaseSize *= 2;
    for (const w of batch) this.#waiters.delete(w);
    // Set before the batch runs: a picker change it causes does not start another release.
    const step: ReleaseStep | undefined = this.#waiters.size > 0 ? { cancelTimer: undefined } : undefined;
    this.#releaseStep = step;
    for (const w of batch) w();
    if (step === undefined || this.#releaseStep !== step) return;
    const next = () => {
      if (this.#releaseStep !== step) return;
      this.#endRelease();
      if (this.#pickerKind === "ready" && this.#waiters.size > 0) this.#releaseWaiters();
    };
    step.cancelTimer = this.#timer.setTimeout(next, this.#releaseStepMs);
    // After the batch: each backend's PING follows the calls just sent to it.
    let left = this.#ready.length;
    for (const b of this.#ready) {
      b.connection.afterRoundTrip(() => {
        if (--left === 0) next();
      });
    }
  }
}
