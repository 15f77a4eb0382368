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
 * Scale-up rule (ours; zc.resumelb has none). zc gives an unskilled worker a call only when no skilled
 * worker passes the skip rule; at steady state every class has a skilled worker and, with variance ≥ n,
 * the skip rule cannot fire (a worker's mean backlog never exceeds the pool's), so a worker added to
 * relieve an overloaded pool stayed idle (bench/affinity: 0 calls in 6 s). `skill / backlog` never
 * picks it either: it has no skills, whatever its backlog. So the balancer moves classes to it itself.
 * After the skills choose worker `d` for a call of class `c`, `c` moves to `u` when all of these hold:
 * - `d`'s mean backlog is above the pool's mean per worker (it is busier than average);
 * - `c` is cold: its share of the calls is below `moveClassShare` × a fair share (1/n), so a class
 *   that alone makes a large part of a worker's traffic (a hot class) is never moved;
 * - `u`, the worker with the lowest mean backlog, is under `minShare` × the mean per worker, and its
 *   share of the picks is under `minShare` × a fair share (both: the backlog answers within a few
 *   calls, which stops the moves once `u` is busy; the share over ~`shareHistory` × n picks keeps
 *   a momentary dip of a steady worker from moving anything);
 * - the move does not turn the imbalance round: `u`'s share + `c`'s ≤ `d`'s share − `c`'s (so classes
 *   cannot cycle between two workers).
 * The call goes to `u`, and `c` stays with `u` (its calls go there first) as long as `u` is in the pool
 * and passes the skip rule and the call's exclusions; otherwise `c` competes on skills as before — and
 * when `u` leaves, `c` goes back to its skills (`d`, usually still skilled). Moves must be sticky:
 * `u`'s first calls of `c` are cache misses, so its own score for `c` stays below `d`'s for a long time
 * (N/T with history 9999), and skills alone would send `c` straight back. A class moves wholly, so it
 * keeps its affinity, on one worker; the classes that move are, among the cold ones, those whose calls
 * come first — the warmer cold classes — which brings the new worker its share with the fewest classes
 * and so the fewest cache loads (moving the coldest first would move ten times the classes, each a
 * cold start, for the same traffic). A class's first call never moves it (its share is 1 until its
 * calls say otherwise).
 *
 * Shares count picks, decayed by `e^(−1/H)` per pick with `H = shareHistory · n`, each over the picks
 * since the worker joined or the class was first seen (corrected as DecayedMean corrects its start), so
 * a new worker's share is 0 at once and a young class's share is its plain share so far. One class
 * record per class name (count, last pick, owner), at most MAX_TRACKED_CLASSES; a pick does one map
 * lookup, a few `Math.exp`, and at most one more pass over the workers (only when the cheap tests pass);
 * no allocation but a new class's record. Time is counted in picks, not on the clock: deterministic and
 * as fast at 10 calls/s as at 10 000.
 *
 * Defaults: minShare 0.8 — a new worker is fed classes until it has 80 % of a fair share, leaving
 * room for the uneven shares of a steady pool (bench/affinity's workers sit at 0.84–1.15 of the mean);
 * 0 turns the rule off. shareHistory 200 — at n = 5, shares over ~1000 picks: ±7 % noise on a fair
 * share, so a steady worker is not mistaken for an idle one, and still well under a second at the
 * bench's 2000 calls/s. moveClassShare 0.25 — a class carrying more than a quarter of a worker's fair
 * share stays where it is; raise it (≤ 1 or more) when the workload has a few large classes and no
 * cold ones, or the new worker will find nothing to take. resume.test.ts has the tables and a seeded
 * simulation (a worker added at steady state has ≥ half a fair share within 1000 calls).
 *
 * Skills reach the policy through the candidate (`SkillCarrier`): the channel puts each backend's latest
 * résumé on its Candidate as `skills`. Scores that are not finite numbers > 0 are ignored (a hostile
 * report cannot win every pick with Infinity or poison the math with NaN).
 *
 * Defaults: variance 4 and backlog_history 9 as zc.resumelb's command line has them (its Pool class
 * defaults variance to 1.0), unskilled score 1 request/s (zc's `--unskilled-score`); the scale-up
 * rule's above.
 */
export interface ResumeConfig {
  /** How far (× the mean per-worker backlog) a skilled worker may run ahead of the LRU one. > 0. */
  variance: number;
  /** Roughly how many calls backlog means are averaged over. Whole number ≥ 1. */
  backlogHistory: number;
  /** Score (requests/s) given provisionally to an unskilled worker that takes a class. > 0. */
  unskilledScore: number;
  /**
   * Scale-up rule: a worker whose share of calls is below `minShare` × a fair share (1/n) is given
   * classes from busier workers. 0 turns the rule off (zc.resumelb's behaviour). 0 ≤ minShare ≤ 1.
   */
  minShare: number;
  /** Shares (of workers and of classes) are averaged over about `shareHistory` × n picks. Whole number ≥ 1. */
  shareHistory: number;
  /** Only a class with less than `moveClassShare` × a fair share of the calls may be moved. > 0. */
  moveClassShare: number;
}

export const defaultResumeConfig: Readonly<ResumeConfig> = {
  variance: 4,
  backlogHistory: 9,
  unskilledScore: 1,
  minShare: 0.8,
  shareHistory: 200,
  moveClassShare: 0.25,
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

/**
 * At most this many classes have a share estimate (and maybe a moved-to owner). When full, classes
 * unseen for a share horizon are forgotten, then the oldest-tracked, down to three quarters: made-up
 * class names cannot grow memory, and each sweep is paid for by a quarter of the cap's insertions.
 */
export const MAX_TRACKED_CLASSES = 16_384;

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

/** A class's decayed call count (its share of picks) and the worker it was moved to, if any. */
interface ClassState {
  /** Picks of this class, decayed by `e^(−1/H)` per pick of any class; as of pick `seenAt`. */
  count: number;
  seenAt: number;
  /** The pick count before this class's first call: its age is counted from here. */
  readonly bornAt: number;
  /** The worker the scale-up rule moved this class to (while it is in the pool). */
  owner: WorkerState | undefined;
}

interface WorkerState {
  candidate: Candidate;
  /** Picks of this worker, decayed by `e^(−1/H)` per pick of any worker; as of pick `pickedAt`. */
  picks: number;
  pickedAt: number;
  /** The pool's pick count when this worker joined: its share is counted from here. */
  readonly joinedAt: number;
  /** Classes moved to this worker by the scale-up rule. */
  owned: number;
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
    /** Its share of the picks (decayed over about shareHistory × n picks, counted from when it joined). */
    readonly share: number;
    /** Classes the scale-up rule moved to it that it still holds. */
    readonly movedClasses: number;
  }>;
  /** Classes moved by the scale-up rule since the balancer was created. */
  readonly moves: number;
  /** Classes with a share estimate (at most MAX_TRACKED_CLASSES). */
  readonly classes: number;
}

/** The `resume` balancer. Exported so the channel can change settings live and read `status()`. */
export class ResumeBalancer implements Balancer {
  #config: ResumeConfig;
  #workerDecay = 0;
  #poolDecay = 0;
  /** 1 / H, H = shareHistory · n: the share estimates' decay per pick is `e^(−1/H)`. */
  #shareRate = 0;
  /** Map order is LRU order: first = least recently used. */
  #workers = new Map<string, WorkerState>();
  #backlog = 0;
  readonly #mean = new DecayedMean();
  readonly #picker: Picker;
  /** Picks made so far: the clock share estimates decay on. */
  #picks = 0;
  readonly #classes = new Map<string, ClassState>();
  #moves = 0;

  constructor(config: ResumeConfig, _deps?: BalancerDeps) {
    this.#config = config;
    this.#picker = { pick: (ctx) => this.#pick(ctx) };
    this.#updateDecays();
  }

  /**
   * New settings, keeping LRU order, backlogs, provisional scores and moved classes (zc's
   * `Pool.update_settings`). `minShare` 0 hands every moved class back to its skills. Pass a config
   * from `resume.parseConfig`.
   */
  configure(config: ResumeConfig): void {
    this.#config = config;
    if (config.minShare === 0) for (const c of this.#classes.values()) this.#setOwner(c, undefined);
    this.#updateDecays();
  }

  update(candidates: readonly Candidate[]): Picker {
    const keys = new Set(candidates.map((c) => c.key));
    let removed = false;
    for (const [key, w] of this.#workers) {
      if (keys.has(key)) continue;
      // zc's Pool.remove: the pool drops the worker's backlog at once, with one sample.
      this.#workers.delete(key);
      this.#backlog -= w.backlog;
      this.#mean.sample(this.#backlog, this.#poolDecay);
      removed ||= w.owned > 0;
    }
    if (removed) {
      // Classes moved to a worker that left go back to their skills (or, unskilled, to the LRU worker).
      for (const c of this.#classes.values()) {
        if (c.owner !== undefined && this.#workers.get(c.owner.candidate.key) !== c.owner) {
          this.#setOwner(c, undefined);
        }
      }
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
        picks: 0,
        pickedAt: this.#picks,
        joinedAt: this.#picks,
        owned: 0,
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
        share: this.#workerShare(w, this.#picks),
        movedClasses: w.owned,
      })),
      moves: this.#moves,
      classes: this.#classes.size,
    };
  }

  #updateDecays(): void {
    const h = this.#config.backlogHistory;
    const n = Math.max(1, this.#workers.size);
    this.#workerDecay = 1 - 1 / (2 * h);
    this.#poolDecay = 1 - 1 / (2 * h * n);
    this.#shareRate = 1 / (this.#config.shareHistory * n);
  }

  /**
   * A decayed count's share of the picks made over `age` picks: the count over the decayed number of
   * picks in that time, `Σ e^(−k/H)` for k < age (so a young worker's or class's share is its plain
   * share since it appeared, as DecayedMean corrects its start). Age 0: no evidence, share 0.
   */
  #share(count: number, countAt: number, asOf: number, age: number): number {
    if (age <= 0) return 0;
    const r = this.#shareRate;
    return (count * Math.exp(-(asOf - countAt) * r) * -Math.expm1(-r)) / -Math.expm1(-age * r);
  }

  /** The worker's share of the picks up to pick `asOf` (counted from when it joined). */
  #workerShare(w: WorkerState, asOf: number): number {
    return this.#share(w.picks, w.pickedAt, asOf, asOf - w.joinedAt);
  }

  /**
   * The class's state with this call (pick number `#picks`) counted; created (and the map bounded) on
   * its first call.
   */
  #countClass(className: string): ClassState {
    const now = this.#picks;
    let c = this.#classes.get(className);
    if (c === undefined) {
      if (this.#classes.size >= MAX_TRACKED_CLASSES) this.#forgetClasses();
      c = { count: 0, seenAt: now, bornAt: now - 1, owner: undefined };
      this.#classes.set(className, c);
    }
    c.count = c.count * Math.exp(-(now - c.seenAt) * this.#shareRate) + 1;
    c.seenAt = now;
    return c;
  }

  #forgetClasses(): void {
    const horizon = 1 / this.#shareRate;
    const keep = Math.floor((MAX_TRACKED_CLASSES * 3) / 4);
    for (const [name, c] of this.#classes) {
      if (this.#picks - c.seenAt > horizon) this.#forget(name, c);
    }
    for (const [name, c] of this.#classes) {
      if (this.#classes.size <= keep) break;
      this.#forget(name, c);
    }
  }

  #forget(name: string, c: ClassState): void {
    this.#setOwner(c, undefined);
    this.#classes.delete(name);
  }

  #setOwner(c: ClassState, owner: WorkerState | undefined): void {
    if (c.owner !== undefined) c.owner.owned--;
    c.owner = owner;
    if (owner !== undefined) owner.owned++;
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
    const now = ++this.#picks; // this pick's number
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

    const { variance, unskilledScore, minShare } = this.#config;
    const maxBacklog = Math.max((variance * this.#mean.value) / workers.size, 1);
    const minBacklog = lru.mean.value + 1;
    const cls = this.#countClass(className);
    let best: WorkerState | undefined;
    // A class moved by the scale-up rule goes to its new worker first, unless the skip rule or the
    // call's exclusions say otherwise; then it competes on skills like any other class.
    const owner = cls.owner;
    if (
      owner !== undefined &&
      minShare > 0 &&
      !exclude?.has(owner.candidate.key) &&
      !(owner.mean.value - minBacklog > maxBacklog)
    ) {
      best = owner;
    } else {
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
    } else if (minShare > 0) {
      const to = this.#moveTo(best, cls, exclude);
      if (to !== undefined) {
        this.#setOwner(cls, to);
        this.#moves++;
        best = to;
      }
    }
    // To the most-recently-used end; the call starts: one sample each for the worker and the pool.
    workers.delete(best.candidate.key);
    workers.set(best.candidate.key, best);
    best.backlog++;
    best.mean.sample(best.backlog, this.#workerDecay);
    this.#backlog++;
    this.#mean.sample(this.#backlog, this.#poolDecay);
    best.picks = best.picks * Math.exp(-(now - best.pickedAt) * this.#shareRate) + 1;
    best.pickedAt = now;
    return { kind: "pick", candidate: best.candidate };
  }

  /**
   * The scale-up rule (header comment): the worker this call's class should move to from `from`, the
   * worker the skills chose, or undefined to leave it there. Cheapest tests first; one pass over the
   * workers for the least loaded, no allocation.
   */
  #moveTo(
    from: WorkerState,
    cls: ClassState,
    exclude: ReadonlySet<string> | undefined,
  ): WorkerState | undefined {
    const { minShare, moveClassShare } = this.#config;
    const n = this.#workers.size;
    if (n < 2) return undefined;
    const perWorker = this.#mean.value / n;
    // The donor's queue is above the mean per worker.
    if (!(from.mean.value > perWorker)) return undefined;
    // The class is cold: well under a fair share of the calls by itself.
    const fair = 1 / n;
    const now = this.#picks;
    const classShare = this.#share(cls.count, cls.seenAt, now, now - cls.bornAt);
    if (!(classShare < moveClassShare * fair)) return undefined;
    // The least loaded worker (decayed mean backlog; ties to the less recently used).
    let to: WorkerState | undefined;
    for (const w of this.#workers.values()) {
      if (w === from || exclude?.has(w.candidate.key)) continue;
      if (to === undefined || w.mean.value < to.mean.value) to = w;
    }
    if (to === undefined || !(to.mean.value < minShare * perWorker)) return undefined;
    // Underused over the longer horizon too, and the move must not leave it busier than the donor.
    // Worker shares as of the last pick: this one is not counted yet.
    const toShare = this.#workerShare(to, now - 1);
    if (!(toShare < minShare * fair)) return undefined;
    if (!(toShare + classShare <= this.#workerShare(from, now - 1) - classShare)) return undefined;
    return to;
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
    rejectUnknownKeys(
      r,
      ["variance", "backlogHistory", "unskilledScore", "minShare", "shareHistory", "moveClassShare"],
      "policy",
    );
    return {
      variance: readPositive(r, "variance", defaultResumeConfig.variance),
      backlogHistory: readNumber(
        r,
        "backlogHistory",
        { default: defaultResumeConfig.backlogHistory, min: 1, integer: true },
        "policy",
      ),
      unskilledScore: readPositive(r, "unskilledScore", defaultResumeConfig.unskilledScore),
      minShare: readNumber(
        r,
        "minShare",
        { default: defaultResumeConfig.minShare, min: 0, max: 1 },
        "policy",
      ),
      shareHistory: readNumber(
        r,
        "shareHistory",
        { default: defaultResumeConfig.shareHistory, min: 1, integer: true },
        "policy",
      ),
      moveClassShare: readPositive(r, "moveClassShare", defaultResumeConfig.moveClassShare),
    };
  },
  create: (config, deps) => new ResumeBalancer(config, deps),
  // Skills arrive in ORCA reports: on by default, at the ORCA client's default interval.
  loadReports: () => ({}),
};
