import type { Balancer, BalancerDeps, BalancerFactory } from "../balancer.ts";
import { asRecord, readNumber, rejectUnknownKeys } from "../config.ts";
import { ConfigError } from "../errors.ts";
import type { Candidate, PickContext, Picker, PickResult } from "../picker.ts";

/**
 * resume: résumé-based affinity (DESIGN.md, "Résumé-based affinity"), after zc.resumelb's `lb.py`
 * (`Pool.get`, `Pool.put`, `Pool.remove`, `_decay_backlog`; zopefoundation/zc.resumelb, Jim Fulton,
 * PyCon 2012). Workers learn which request classes they are fast at (core/skills.ts); each call goes
 * to a skilled worker with a short queue, and no worker is let run far ahead of the others.
 *
 * Per call, for the call's class `c` (header CLASS_HEADER; absent → the class ""):
 * - `max_backlog = max(variance · pool_mean / nworkers, 1)` and `min_backlog = LRU worker's mean + 1`;
 * - every worker with a score for `c` (its résumé's, or a provisional one, below) is a candidate unless
 *   `mean − min_backlog > max_backlog` (its queue runs away from the least recently used worker's);
 * - value = `score / backlog` when its current backlog is > 1, else `score`; the highest value wins,
 *   ties to the less recently used;
 * - no skilled worker left: the least recently used worker takes the call, and when it has no score
 *   for `c` it gets `unskilledScore` for it, provisionally (zc: `best_worker.resume[rclass] = score`),
 *   so the next call of `c` finds it skilled. Provisional scores live until the worker's next résumé
 *   (a new `skills` object on the candidate), exactly as zc's résumé replacement drops them.
 * - the chosen worker moves to the most-recently-used end; new workers enter at the LRU end, so they
 *   are tried first (zc: `unskilled.appendleft`).
 *
 * What variance does, in effect: a skilled worker may run up to ~variance × the mean per-worker
 * backlog ahead of the LRU one, so under overload a class spreads to about nworkers / variance (+1)
 * workers and no further — it queues there instead of taking every worker's cache (resume.test.ts,
 * "resume under overload"). Pair the policy with deadlines or a concurrency limit.
 *
 * Backlogs. A worker's backlog is its calls in flight (`candidate.load.inFlight`); the pool's is their
 * sum. Each has an event-sampled decayed mean, sampled after every event that changes it — zc's
 * `_decay_backlog`: `sum = sum·d + backlog; weight = weight·d + 1; mean = sum / weight` (a mean with its
 * start-up bias corrected). A call is two events (start, end), so zc decays a worker over
 * `2 · backlog_history` events (`d = 1 − 1/(2·backlogHistory)`) and the pool, which sees n workers'
 * events, over `2 · backlog_history · n` (`d = 1 − 1/(2·backlogHistory·n)`). We keep those decays.
 *
 * How we see call ends without a hook: the channel reports ends only to the LoadTracker. At each pick
 * we settle every worker — the drop from the backlog we last accounted to `load.inFlight` is that many
 * ends, replayed one by one into the worker's and the pool's means. That gives the very samples zc
 * takes at each `put`: a worker's mean sees only its own events, and between two picks every event is
 * an end, so the pool backlog walks B, B−1, …, B−k whichever worker each end came from. Samples are only
 * taken late, and nothing reads a mean before it is settled. (A tracker that rises without our pick —
 * a call begun elsewhere — is replayed as starts the same way.)
 *
 * Removed workers: their backlog leaves the pool at once with one sample, as zc's `Pool.remove` does;
 * their calls still finishing are not counted again. A worker that comes back starts afresh at the LRU
 * end.
 *
 * State: LRU order, backlogs and provisional scores change on every pick, so they live in the balancer
 * (`ResumeBalancer`), shared by its pickers — like round_robin's cursor, but one object for all
 * snapshots: a picker is a view of the balancer, and an outdated one still picks among the current
 * workers.
 *
 * Skills reach the policy through the candidate (`SkillCarrier`): the channel puts each backend's latest
 * résumé on its Candidate as `skills`. Scores that are not finite numbers > 0 are ignored (a hostile
 * report cannot win every pick with Infinity or poison the math with NaN).
 *
 * Defaults: variance 4 and backlog_history 9 as zc.resumelb's command line has them (its Pool class
 * defaults variance to 1.0), unskilled score 1 request/s (zc's `--unskilled-score`).
 */
export interface ResumeConfig {
  /** How far (× the mean per-worker backlog) a skilled worker may run ahead of the LRU one. > 0. */
  variance: number;
  /** Roughly how many calls backlog means are averaged over. Whole number ≥ 1. */
  backlogHistory: number;
  /** Score (requests/s) given provisionally to an unskilled worker that takes a class. > 0. */
  unskilledScore: number;
}

export const defaultResumeConfig: Readonly<ResumeConfig> = {
  variance: 4,
  backlogHistory: 9,
  unskilledScore: 1,
};

/**
 * The request header that carries a call's class. The proxy's classifier sets it (replacing any value
 * the client sent) before picking, so `ctx.header(CLASS_HEADER)` answers the class, and forwards it to
 * the worker, whose skills record handler time under it.
 */
export const CLASS_HEADER = "x-roster-class";

/**
 * What the channel may add to a Candidate for `resume`: the backend's latest résumé, class → score
 * (requests per second of handler time, see core/skills.ts). Read at every pick, so a new résumé takes
 * effect at once without a new picker. Replace the map when a résumé arrives (don't mutate it): a new
 * object is how the policy knows its provisional scores for that worker are superseded. Absent or
 * undefined: the backend has no résumé yet; it still gets calls (LRU, provisional scores).
 */
export interface SkillCarrier {
  readonly skills?: ReadonlyMap<string, number> | undefined;
}

/** The résumé carried by `candidate`, if any. */
export function skillsOf(candidate: Candidate): ReadonlyMap<string, number> | undefined {
  const skills = (candidate as Candidate & SkillCarrier).skills;
  return typeof skills?.get === "function" ? skills : undefined;
}

/**
 * Per worker, at most this many provisional classes are remembered (oldest dropped first), so a stream
 * of made-up class names to a backend that never sends résumés cannot grow memory without bound.
 */
export const MAX_PROVISIONAL_CLASSES = 4096;

/** zc.resumelb's `_decay_backlog` state: a decayed sum and weight. */
class DecayedMean {
  #sum = 0;
  #weight = 0;
  sample(value: number, decay: number): void {
    this.#sum = this.#sum * decay + value;
    this.#weight = this.#weight * decay + 1;
  }
  get value(): number {
    return this.#weight > 0 ? this.#sum / this.#weight : 0;
  }
}

interface WorkerState {
  candidate: Candidate;
  /** In-flight calls as last accounted (zc's `worker.backlog`). */
  backlog: number;
  readonly mean: DecayedMean;
  /** Class → provisional score, given when this worker took a class it had no score for. */
  readonly provisional: Map<string, number>;
  /** The résumé object the provisional scores were given against. */
  resume: ReadonlyMap<string, number> | undefined;
}

/** A snapshot for /status. */
export interface ResumeStatus {
  /** Calls in flight over all workers, as last accounted, and its decayed mean. */
  readonly backlog: number;
  readonly meanBacklog: number;
  /** Least recently used first. */
  readonly workers: ReadonlyArray<{
    readonly key: string;
    readonly backlog: number;
    readonly meanBacklog: number;
    /** Classes this worker holds a provisional score for. */
    readonly provisional: readonly string[];
  }>;
}

/** The `resume` balancer. Exported so the channel can change settings live and read `status()`. */
export class ResumeBalancer implements Balancer {
  #config: ResumeConfig;
  #workerDecay = 0;
  #poolDecay = 0;
  /** Map order is LRU order: first = least recently used. */
  #workers = new Map<string, WorkerState>();
  #backlog = 0;
  readonly #mean = new DecayedMean();
  readonly #picker: Picker;

  constructor(config: ResumeConfig, _deps?: BalancerDeps) {
    this.#config = config;
    this.#picker = { pick: (ctx) => this.#pick(ctx) };
    this.#updateDecays();
  }

  /**
   * New settings, keeping LRU order, backlogs and provisional scores (zc's `Pool.update_settings`).
   * Pass a config from `resume.parseConfig`.
   */
  configure(config: ResumeConfig): void {
    this.#config = config;
    this.#updateDecays();
  }

  update(candidates: readonly Candidate[]): Picker {
    const keys = new Set(candidates.map((c) => c.key));
    for (const [key, w] of this.#workers) {
      if (keys.has(key)) continue;
      // zc's Pool.remove: the pool drops the worker's backlog at once, with one sample.
      this.#workers.delete(key);
      this.#backlog -= w.backlog;
      this.#mean.sample(this.#backlog, this.#poolDecay);
    }
    const added: WorkerState[] = [];
    for (const c of candidates) {
      const w = this.#workers.get(c.key);
      if (w !== undefined) {
        w.candidate = c;
        continue;
      }
      if (added.some((a) => a.candidate.key === c.key)) continue;
      // Calls still in flight from an earlier life count from now on, without a sample (zc starts a
      // new worker at backlog 0; ours may not be idle).
      const backlog = inFlightOf(c, 0);
      this.#backlog += backlog;
      added.push({
        candidate: c,
        backlog,
        mean: new DecayedMean(),
        provisional: new Map(),
        resume: undefined,
      });
    }
    if (added.length > 0) {
      // New workers at the LRU end, in candidate order: the first new one is tried first.
      const order = new Map<string, WorkerState>();
      for (const w of added) order.set(w.candidate.key, w);
      for (const [key, w] of this.#workers) order.set(key, w);
      this.#workers = order;
    }
    this.#updateDecays();
    return this.#picker;
  }

  status(): ResumeStatus {
    for (const w of this.#workers.values()) this.#settle(w);
    return {
      backlog: this.#backlog,
      meanBacklog: this.#mean.value,
      workers: [...this.#workers.values()].map((w) => ({
        key: w.candidate.key,
        backlog: w.backlog,
        meanBacklog: w.mean.value,
        provisional: [...w.provisional.keys()],
      })),
    };
  }

  #updateDecays(): void {
    const h = this.#config.backlogHistory;
    this.#workerDecay = 1 - 1 / (2 * h);
    this.#poolDecay = 1 - 1 / (2 * h * Math.max(1, this.#workers.size));
  }

  /** Replays the starts/ends the tracker saw since we last looked (see the header comment). */
  #settle(w: WorkerState): void {
    const actual = inFlightOf(w.candidate, w.backlog);
    while (w.backlog > actual) {
      w.backlog--;
      w.mean.sample(w.backlog, this.#workerDecay);
      this.#backlog--;
      this.#mean.sample(this.#backlog, this.#poolDecay);
    }
    while (w.backlog < actual) {
      w.backlog++;
      w.mean.sample(w.backlog, this.#workerDecay);
      this.#backlog++;
      this.#mean.sample(this.#backlog, this.#poolDecay);
    }
  }

  /** The worker's score for `className`: its résumé's, else a provisional one. */
  #scoreOf(w: WorkerState, className: string): number | undefined {
    const skills = skillsOf(w.candidate);
    if (skills !== w.resume) {
      // A new résumé supersedes the provisional scores (zc: `worker.resume = resume`).
      w.resume = skills;
      w.provisional.clear();
    }
    const real = skills?.get(className);
    if (typeof real === "number" && Number.isFinite(real) && real > 0) return real;
    return w.provisional.get(className);
  }

  #pick(ctx: PickContext): PickResult {
    const workers = this.#workers;
    let lru: WorkerState | undefined;
    for (const w of workers.values()) {
      lru ??= w;
      this.#settle(w);
    }
    if (lru === undefined) return { kind: "queue" }; // not reached: update() is never given no candidates
    const className = ctx.header(CLASS_HEADER) ?? "";
    let exclude = ctx.exclude;
    if (exclude !== undefined && exclude.size > 0) {
      let anyLeft = false;
      for (const key of workers.keys()) if (!exclude.has(key)) anyLeft = true;
      if (!anyLeft) exclude = undefined; // every worker tried: pick as if none were
    } else {
      exclude = undefined;
    }

    const { variance, unskilledScore } = this.#config;
    const maxBacklog = Math.max((variance * this.#mean.value) / workers.size, 1);
    const minBacklog = lru.mean.value + 1;
    let best: WorkerState | undefined;
    let bestValue = 0;
    // LRU order, strict ">": ties go to the less recently used worker.
    for (const w of workers.values()) {
      if (exclude?.has(w.candidate.key)) continue;
      const score = this.#scoreOf(w, className);
      if (score === undefined) continue;
      if (w.mean.value - minBacklog > maxBacklog) continue;
      const value = w.backlog > 1 ? score / w.backlog : score;
      if (value > bestValue) {
        best = w;
        bestValue = value;
      }
    }
    if (best === undefined) {
      best = lru;
      if (exclude !== undefined) {
        for (const w of workers.values()) {
          if (!exclude.has(w.candidate.key)) {
            best = w;
            break;
          }
        }
      }
      if (this.#scoreOf(best, className) === undefined) {
        if (best.provisional.size >= MAX_PROVISIONAL_CLASSES) {
          const oldest = best.provisional.keys().next();
          if (oldest.done !== true) best.provisional.delete(oldest.value);
        }
        best.provisional.set(className, unskilledScore);
      }
    }
    // To the most-recently-used end; the call starts: one sample each for the worker and the pool.
    workers.delete(best.candidate.key);
    workers.set(best.candidate.key, best);
    best.backlog++;
    best.mean.sample(best.backlog, this.#workerDecay);
    this.#backlog++;
    this.#mean.sample(this.#backlog, this.#poolDecay);
    return { kind: "pick", candidate: best.candidate };
  }
}

/** `load.inFlight` as a whole number ≥ 0; `fallback` when a tracker reports something else. */
function inFlightOf(c: Candidate, fallback: number): number {
  const n = c.load.inFlight;
  return Number.isFinite(n) && n >= 0 ? Math.floor(n) : fallback;
}

function readPositive(r: Record<string, unknown>, key: string, dflt: number): number {
  const v = readNumber(r, key, { default: dflt, min: 0 }, "policy");
  if (v <= 0) throw new ConfigError(`policy.${key}`, `must be greater than 0, got ${v}`);
  return v;
}

export const resume: BalancerFactory<ResumeConfig> = {
  name: "resume",
  parseConfig(raw) {
    const r = asRecord(raw, "policy");
    if (r.classifier !== undefined) {
      throw new ConfigError(
        "policy.classifier",
        `the classifier is set on the cluster, not the policy; resume reads the class from ${CLASS_HEADER}`,
      );
    }
    rejectUnknownKeys(r, ["variance", "backlogHistory", "unskilledScore"], "policy");
    return {
      variance: readPositive(r, "variance", defaultResumeConfig.variance),
      backlogHistory: readNumber(
        r,
        "backlogHistory",
        { default: defaultResumeConfig.backlogHistory, min: 1, integer: true },
        "policy",
      ),
      unskilledScore: readPositive(r, "unskilledScore", defaultResumeConfig.unskilledScore),
    };
  },
  create: (config, deps) => new ResumeBalancer(config, deps),
  // Skills arrive in ORCA reports: on by default, at the ORCA client's default interval.
  loadReports: () => ({}),
};
