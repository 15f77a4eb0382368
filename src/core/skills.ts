import { ConfigError } from "./errors.ts";

/**
 * Worker-side skill bookkeeping for the `resume` policy (DESIGN.md, "Résumé-based affinity"), after
 * zc.resumelb's `worker.py` (`Worker.handle`, "Update resume"; zopefoundation/zc.resumelb).
 *
 * Per request class the worker keeps a decayed handler time `T` and a decayed count `N`. Decay is
 * counted in requests of *any* class: when a call of class `c` finishes after `k` requests (this one
 * included) since the last call of `c`,
 *
 *     f = decay^k,   T = T·f + elapsed,   N = N·f + 1,   score = N / T
 *
 * with `decay = 1 − 1/history` (zc.resumelb: `self.decay = 1 - 1.0/history`). The score is requests
 * per second of pure handler time — the inverse of a decayed mean handler time, so a worker whose cache
 * is warm for a class (fast calls) shows a high score for it. Decay multiplies `T` and `N` alike, so it
 * never changes a score by itself: it only sets how much the next call weighs against the past.
 *
 * Classes unseen for more than `maxSkillAge` requests are dropped (zc.resumelb: `max_skill_age`,
 * default 10 × history; it checks only when it publishes — we also filter on every read, so what is
 * read never depends on when the last publish happened).
 *
 * Publishing: zc.resumelb sends a résumé every `history` requests. `shouldPublish()` says when that
 * many requests were recorded since `markPublished()`; the "or every few seconds" half of DESIGN.md is
 * a timer outside core, which calls `markPublished()` too.
 *
 * Persistence: `toJSON()` keeps `T`, `N` and the request number each class was last seen at, so a
 * reload is exact — same scores, and the same weight for the next calls. zc.resumelb persists only the
 * scores and reseeds each class as `(generation 0, T = 1/score, N = history)`: the time of one call
 * against the count of `history` calls, so the seeded state means `N/T = history × score`. zc keeps
 * publishing the loaded score until the class's first call after the restart; from then on it reports
 * about `(history + k) / (1 + k)` × the real score after k calls — ~history/2-fold at first (~5000×
 * with its default history of 9999), still ~1.6× after `history` calls — and its balancers pile
 * that class onto the restarted worker. skills.test.ts shows ours round-trip and zc's inflation.
 */
export interface SkillsOptions {
  /**
   * Roughly how many requests (of any class) a skill remembers: decay per request is `1 − 1/history`.
   * Also the publish period, in requests. Whole number ≥ 1. Default 9999 (zc.resumelb's).
   */
  readonly history?: number;
  /** Requests without a call of a class after which it is dropped. Whole number ≥ 1. Default 10 × history. */
  readonly maxSkillAge?: number;
}

export const defaultSkillsOptions = { history: 9999, maxSkillAge: 99_990 } as const;

/** One class as persisted: decayed handler time (ms), decayed count, and the request it was last seen at. */
export interface SkillRecord {
  readonly timeMs: number;
  readonly count: number;
  readonly lastSeen: number;
}

/** What `toJSON()` returns and `skillsFromJSON()` reads. Plain JSON; numbers round-trip exactly. */
export interface SkillsSnapshot {
  readonly format: "roster-skills";
  readonly version: 1;
  /** Requests recorded so far (all classes): the clock decay and expiry are counted on. */
  readonly requests: number;
  readonly classes: Readonly<Record<string, SkillRecord>>;
}

export interface Skills {
  readonly history: number;
  readonly maxSkillAge: number;
  /** Requests recorded so far, all classes. */
  readonly requests: number;
  /**
   * Records one finished call of `className` that spent `elapsedMs` in the handler. A negative or
   * zero time counts as 1 ns (zc.resumelb floors at 1e-9 s), so a coarse clock cannot make a score
   * infinite; a non-finite time (a clock contract breach) is ignored and not counted.
   */
  record(className: string, elapsedMs: number): void;
  /** The current score of one class, requests per second, or undefined when it has none. */
  score(className: string): number | undefined;
  /** Every class still remembered → score in requests per second. A fresh object each time. */
  scores(): Record<string, number>;
  /** True once `history` requests were recorded since the last `markPublished()` (or creation/reload). */
  shouldPublish(): boolean;
  /** Call whenever a résumé was published (by request count or by the timer). */
  markPublished(): void;
  /** The state to persist; `skillsFromJSON(JSON.parse(JSON.stringify(s.toJSON())))` continues exactly. */
  toJSON(): SkillsSnapshot;
}

/** Handler times below this (ms) count as this: zc.resumelb's `max(elapsed, 1e-9)` seconds. */
const MIN_ELAPSED_MS = 1e-6;

interface Entry {
  timeMs: number;
  count: number;
  lastSeen: number;
}

class SkillBook implements Skills {
  readonly history: number;
  readonly maxSkillAge: number;
  readonly #decay: number;
  readonly #classes = new Map<string, Entry>();
  #requests: number;
  #publishedAt: number;

  constructor(options: SkillsOptions, requests = 0, classes?: Iterable<[string, Entry]>) {
    this.history = readWhole(options.history, "history", defaultSkillsOptions.history);
    this.maxSkillAge = readWhole(options.maxSkillAge, "maxSkillAge", this.history * 10);
    this.#decay = 1 - 1 / this.history;
    this.#requests = requests;
    this.#publishedAt = requests;
    if (classes !== undefined) for (const [name, entry] of classes) this.#classes.set(name, entry);
    this.#prune();
  }

  get requests(): number {
    return this.#requests;
  }

  record(className: string, elapsedMs: number): void {
    if (!Number.isFinite(elapsedMs)) return;
    const elapsed = Math.max(elapsedMs, MIN_ELAPSED_MS);
    const known = this.#classes.get(className);
    // A class already past its age starts over, whether or not a sweep has removed it yet.
    const entry = known !== undefined && !this.#expired(known) ? known : undefined;
    const now = ++this.#requests;
    if (entry === undefined) {
      this.#classes.set(className, { timeMs: elapsed, count: 1, lastSeen: now });
    } else {
      // Requests since this class was last seen, this one included (zc: generation − rgen).
      const f = this.#decay ** (now - entry.lastSeen);
      entry.timeMs = entry.timeMs * f + elapsed;
      entry.count = entry.count * f + 1;
      entry.lastSeen = now;
    }
    // Bounded memory: sweep expired classes once per `history` requests, as zc.resumelb does.
    if (now % this.history === 0) this.#prune();
  }

  score(className: string): number | undefined {
    const entry = this.#classes.get(className);
    if (entry === undefined || this.#expired(entry)) return undefined;
    return scoreOf(entry);
  }

  scores(): Record<string, number> {
    this.#prune();
    const out: Record<string, number> = {};
    for (const [name, entry] of this.#classes) out[name] = scoreOf(entry);
    return out;
  }

  shouldPublish(): boolean {
    return this.#requests - this.#publishedAt >= this.history;
  }

  markPublished(): void {
    this.#publishedAt = this.#requests;
  }

  toJSON(): SkillsSnapshot {
    this.#prune();
    const classes: Record<string, SkillRecord> = {};
    for (const [name, e] of this.#classes) {
      classes[name] = { timeMs: e.timeMs, count: e.count, lastSeen: e.lastSeen };
    }
    return { format: "roster-skills", version: 1, requests: this.#requests, classes };
  }

  #expired(entry: Entry): boolean {
    return this.#requests - entry.lastSeen > this.maxSkillAge;
  }

  #prune(): void {
    for (const [name, entry] of this.#classes) if (this.#expired(entry)) this.#classes.delete(name);
  }
}

/** N/T with T in ms → requests per second. */
function scoreOf(entry: Entry): number {
  return (1000 * entry.count) / entry.timeMs;
}

function readWhole(value: number | undefined, field: string, dflt: number): number {
  if (value === undefined) return dflt;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new ConfigError(field, `must be a whole number ≥ 1, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Fresh, empty skills. Throws ConfigError naming `history` or `maxSkillAge`. */
export function createSkills(options: SkillsOptions = {}): Skills {
  return new SkillBook(options);
}

/**
 * Skills as `toJSON()` left them (parse the file first). `options` are the current settings: they may
 * differ from the ones the snapshot was made with (a changed history applies from the next call).
 * Throws ConfigError naming the bad field (`skills.classes["a"].count`, …) for anything that is not a
 * snapshot; the caller logs it and starts empty — a bad file never yields made-up scores.
 */
export function skillsFromJSON(raw: unknown, options: SkillsOptions = {}): Skills {
  const root = "skills";
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(root, "must be an object written by Skills.toJSON()");
  }
  const r = raw as Record<string, unknown>;
  if (r.format !== "roster-skills") throw new ConfigError(`${root}.format`, `must be "roster-skills"`);
  if (r.version !== 1)
    throw new ConfigError(`${root}.version`, `unsupported version ${JSON.stringify(r.version)}`);
  const requests = r.requests;
  if (typeof requests !== "number" || !Number.isSafeInteger(requests) || requests < 0) {
    throw new ConfigError(`${root}.requests`, "must be a whole number ≥ 0");
  }
  const classes = r.classes;
  if (typeof classes !== "object" || classes === null || Array.isArray(classes)) {
    throw new ConfigError(`${root}.classes`, "must be an object");
  }
  const entries: Array<[string, Entry]> = [];
  for (const [name, value] of Object.entries(classes)) {
    const field = `${root}.classes[${JSON.stringify(name)}]`;
    if (typeof value !== "object" || value === null) throw new ConfigError(field, "must be an object");
    const { timeMs, count, lastSeen } = value as Record<string, unknown>;
    if (typeof timeMs !== "number" || !Number.isFinite(timeMs) || timeMs <= 0) {
      throw new ConfigError(`${field}.timeMs`, "must be a number > 0");
    }
    if (typeof count !== "number" || !Number.isFinite(count) || count <= 0) {
      throw new ConfigError(`${field}.count`, "must be a number > 0");
    }
    if (
      typeof lastSeen !== "number" ||
      !Number.isSafeInteger(lastSeen) ||
      lastSeen < 0 ||
      lastSeen > requests
    ) {
      throw new ConfigError(`${field}.lastSeen`, `must be a whole number from 0 to requests (${requests})`);
    }
    entries.push([name, { timeMs, count, lastSeen }]);
  }
  return new SkillBook(options, requests, entries);
}

/**
 * Résumés travel as ORCA `named_metrics` (xds.service.orca.v3 OrcaLoadReport): one entry per class,
 * `<prefix><class>` → score in requests per second.
 */
export const SKILL_METRIC_PREFIX = "roster.skill.";

/** Scores → ORCA named metrics under SKILL_METRIC_PREFIX. */
export function skillsToNamedMetrics(scores: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, score] of Object.entries(scores)) out[SKILL_METRIC_PREFIX + name] = score;
  return out;
}

/**
 * ORCA named metrics (from any server, so untrusted) → class → score, for a candidate's `skills`.
 * Keeps only prefixed entries whose value is a finite number > 0, and at most `maxClasses` of them
 * (extra entries are ignored, never an error); other metrics are not ours and are skipped.
 */
export function skillsFromNamedMetrics(
  named: Readonly<Record<string, unknown>>,
  maxClasses = 100_000,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of Object.entries(named)) {
    if (out.size >= maxClasses) break;
    if (!key.startsWith(SKILL_METRIC_PREFIX)) continue;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) continue;
    out.set(key.slice(SKILL_METRIC_PREFIX.length), value);
  }
  return out;
}
