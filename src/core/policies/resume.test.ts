import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { SeededRandom } from "../../../test/support/seeded-random.ts";
import type { Random } from "../clock.ts";
import { staticEndpoint } from "../endpoint.ts";
import type { CallDone } from "../load/load-tracker.ts";
import { PendingRequests } from "../load/pending-requests.ts";
import type { Candidate, PickContext, Picker, PickResult } from "../picker.ts";
import { createSkills } from "../skills.ts";
import { createDefaultRegistry } from "./registry.ts";
import {
  CLASS_HEADER,
  MAX_PROVISIONAL_CLASSES,
  ResumeBalancer,
  type ResumeConfig,
  resume,
} from "./resume.ts";

/** A candidate as the channel would give it: a load tracker and, maybe, a résumé. */
interface Worker extends Candidate {
  skills?: ReadonlyMap<string, number>;
}

function worker(key: string, skills?: Record<string, number>): Worker {
  const w: Worker = {
    key,
    endpoint: { ...staticEndpoint({ kind: "unix", path: `/${key}` }), key },
    load: new PendingRequests(),
  };
  if (skills !== undefined) w.skills = new Map(Object.entries(skills));
  return w;
}

function ctx(className: string | undefined, exclude?: string[]): PickContext {
  return {
    path: "/pkg.Svc/M",
    header: (name) => (name === CLASS_HEADER ? className : undefined),
    ...(exclude ? { exclude: new Set(exclude) } : {}),
  };
}

function keyOf(result: PickResult): string {
  assert.equal(result.kind, "pick");
  return result.kind === "pick" ? result.candidate.key : "";
}

function balancer(config: Partial<ResumeConfig> = {}): ResumeBalancer {
  return resume.create(resume.parseConfig(config), {
    clock: new FakeClock(),
    random: new SeededRandom(1),
  }) as ResumeBalancer;
}

/**
 * Drives a balancer the way the proxy does: "a" picks a call of class a and starts it on the chosen
 * worker (load.begin); "end w0" ends w0's oldest call. Returns the chosen key per pick ("·" for ends).
 */
class Driver {
  readonly #open = new Map<string, CallDone[]>();
  readonly b: ResumeBalancer;
  workers: Worker[];
  #picker: Picker;
  constructor(b: ResumeBalancer, workers: Worker[]) {
    this.b = b;
    this.workers = workers;
    this.#picker = b.update(workers);
  }
  /** The channel's update: a new ready set. */
  set(workers: Worker[]): void {
    this.workers = workers;
    this.#picker = this.b.update(workers);
  }
  run(steps: string[]): string[] {
    return steps.map((step) => {
      if (step.startsWith("end ")) {
        this.end(step.slice(4));
        return "·";
      }
      return this.pick(step);
    });
  }
  pick(className: string, exclude?: string[]): string {
    const result = this.#picker.pick(ctx(className, exclude));
    const key = keyOf(result);
    if (result.kind === "pick") {
      const open = this.#open.get(key) ?? [];
      open.push(result.candidate.load.begin(0));
      this.#open.set(key, open);
    }
    return key;
  }
  end(key: string): void {
    const done = this.#open.get(key)?.shift();
    assert.ok(done, `no call open on ${key}`);
    done(0, "success");
  }
  mean(key: string): number {
    return this.b.status().workers.find((w) => w.key === key)!.meanBacklog;
  }
}

/**
 * zc.resumelb's `_decay_backlog` for expected values: samples of a backlog folded into a decayed sum
 * and weight; each sample is a backlog, or [backlog, decay] to change the decay from there on.
 */
function decayed(samples: Array<number | [number, number]>, decay: number): number {
  let sum = 0;
  let weight = 0;
  let d = decay;
  for (const s of samples) {
    const b = typeof s === "number" ? s : s[0];
    if (typeof s !== "number") d = s[1];
    sum = sum * d + b;
    weight = weight * d + 1;
  }
  return sum / weight;
}

function close(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) < 1e-9, `${what}: ${actual} ≠ ${expected}`);
}

describe("resume: config", () => {
  const registry = createDefaultRegistry();

  it("fills zc.resumelb's defaults and validates each field by name", () => {
    assert.deepEqual(resume.parseConfig({}), { variance: 4, backlogHistory: 9, unskilledScore: 1 });
    assert.deepEqual(resume.parseConfig({ variance: 2.5, backlogHistory: 3, unskilledScore: 0.5 }), {
      variance: 2.5,
      backlogHistory: 3,
      unskilledScore: 0.5,
    });
    const table: Array<[unknown, RegExp]> = [
      [{ variance: 0 }, /: policy\.variance: must be greater than 0/],
      [{ variance: "4" }, /: policy\.variance: must be a number/],
      [{ backlogHistory: 0 }, /: policy\.backlogHistory: must be at least 1/],
      [{ backlogHistory: 2.5 }, /: policy\.backlogHistory: must be a whole number/],
      [{ unskilledScore: 0 }, /: policy\.unskilledScore: must be greater than 0/],
      [{ unskilledScore: Number.NaN }, /: policy\.unskilledScore: must be a number/],
      [{ classifier: { header: "x-tenant" } }, /: policy\.classifier: the classifier is set on the cluster/],
      [{ backlog_history: 9 }, /: policy\.backlog_history: unknown setting/],
      [[1], /: policy: must be an object/],
    ];
    for (const [raw, message] of table) {
      assert.throws(() => registry.resolve("resume", raw), message, JSON.stringify(raw));
    }
    assert.throws(
      () => registry.resolve("resume", { variance: -1 }, "clusters.web.policy"),
      /^ConfigError: clusters\.web\.policy\.variance/,
    );
  });

  it("reads the class from the x-roster-class header", () => {
    assert.equal(CLASS_HEADER, "x-roster-class");
  });
});

describe("resume: picks (exact sequences)", () => {
  it("skips a skilled worker whose mean backlog runs more than max_backlog past the LRU worker's", () => {
    // backlogHistory 1: worker decay 1 − 1/2, pool decay 1 − 1/(2·1·2) = 0.75. Nothing ends.
    // pick 1: max_backlog = max(1·0/2, 1) = 1, min = LRU w0's 0 + 1; w0: 0 − 1 ≤ 1 → w0 (mean → 1)
    // pick 2: LRU is w1 (mean 0): w0: 1 − 1 = 0 ≤ 1 → w0 (mean 5/3); pool mean 11/7
    // pick 3: max_backlog = max(11/14, 1) = 1; w0: 5/3 − 1 ≤ 1 → w0 (mean 17/7); pool mean 2.189
    // pick 4: max_backlog = 1.095; w0: 17/7 − 1 = 1.43 > 1.095 → skipped; nobody else is skilled →
    //         the LRU worker w1 (unskilled: provisional score 1)
    // pick 5: w0 is now the LRU worker, so min = 17/7 + 1 and w0 is back: 10/3 (3 in flight) beats w1's 1
    const d = new Driver(balancer({ variance: 1, backlogHistory: 1 }), [
      worker("w0", { a: 10 }),
      worker("w1"),
    ]);
    assert.deepEqual(d.run(["a", "a", "a", "a", "a"]), ["w0", "w0", "w0", "w1", "w0"]);
    close(d.b.status().meanBacklog, decayed([1, 2, 3, 4, 5], 0.75), "pool mean");

    // With variance 4 the same calls stay on w0: pick 4 has max_backlog = 4·2.189/2 = 4.38.
    const wide = new Driver(balancer({ variance: 4, backlogHistory: 1 }), [
      worker("w0", { a: 10 }),
      worker("w1"),
    ]);
    assert.deepEqual(wide.run(["a", "a", "a", "a", "a"]), ["w0", "w0", "w0", "w0", "w0"]);
  });

  it("counts ends between picks exactly as zc.resumelb's put does, one sample each", () => {
    const d = new Driver(balancer({ variance: 1, backlogHistory: 1 }), [
      worker("w0", { a: 10 }),
      worker("w1"),
    ]);
    // w0's backlog: 1, 2, 3 (picks), 2, 1 (ends), 2 (pick). The pool's the same (w1 is idle).
    assert.deepEqual(d.run(["a", "a", "a", "end w0", "end w0", "a"]), ["w0", "w0", "w0", "·", "·", "w0"]);
    close(d.mean("w0"), decayed([1, 2, 3, 2, 1, 2], 0.5), "w0's mean");
    close(d.b.status().meanBacklog, decayed([1, 2, 3, 2, 1, 2], 0.75), "pool mean");
  });

  it("gives an unskilled worker a provisional score, so the next call of the class finds it skilled", () => {
    const w = [worker("w0"), worker("w1"), worker("w2")];
    const d = new Driver(balancer(), w);
    // No résumés: each new class goes to the LRU worker, which keeps it.
    // [class → worker, why]
    const table: Array<[string, string, string]> = [
      ["a", "w0", "LRU of w0 w1 w2; a becomes w0's (provisional 1)"],
      ["b", "w1", "LRU of w1 w2 w0"],
      ["a", "w0", "w0 is skilled in a now, though w2 is less recently used"],
      ["c", "w2", "LRU of w2 w1 w0"],
      ["b", "w1", "w1 keeps b"],
    ];
    for (const [className, expected, why] of table) assert.equal(d.pick(className), expected, why);
    assert.deepEqual(
      d.b.status().workers.map((x) => [x.key, x.provisional]),
      [
        ["w0", ["a"]],
        ["w2", ["c"]],
        ["w1", ["b"]],
      ],
    );

    // w0's first résumé arrives without a (its call had not finished): the provisional score is gone,
    // as zc's new résumé replaces the old; a goes to the LRU worker again.
    w[0]!.skills = new Map([["x", 5]]);
    assert.equal(d.pick("a"), "w0", "LRU of w0 w2 w1, and unskilled in a again: provisional anew");
    w[2]!.skills = new Map([["a", 50]]);
    assert.equal(d.pick("a"), "w2", "a real score of 50 beats a provisional 1");
    assert.deepEqual(
      d.b.status().workers.find((x) => x.key === "w2")!.provisional,
      [],
      "w2's c went with its résumé",
    );
  });

  it("tries a new worker first: it enters at the least-recently-used end", () => {
    const w = [worker("w0", { a: 5 }), worker("w1", { a: 5 })];
    const d = new Driver(balancer(), w);
    assert.deepEqual(d.run(["a", "a", "x"]), ["w0", "w1", "w0"], "x, unknown to all, to the LRU");
    d.set([...w, worker("w2"), worker("w3")]);
    assert.deepEqual(d.run(["y", "z", "v"]), ["w2", "w3", "w1"], "new workers first, in candidate order");

    // A worker that leaves and comes back is new again: LRU end, fresh mean, no provisional scores.
    d.set(d.workers.filter((x) => x.key !== "w0")); // w0 leaves
    assert.equal(d.pick("q"), "w2");
    const w0 = worker("w0");
    w0.load.begin(0); // a call of its earlier life still running
    d.set([...d.workers, w0]);
    assert.equal(d.pick("r"), "w0");
    const back = d.b.status().workers.find((x) => x.key === "w0")!;
    assert.deepEqual([back.backlog, back.provisional], [2, ["r"]]);
  });

  it("releases a removed worker's backlog from the pool at once, and never counts its later ends", () => {
    // Pool decay with two workers 1 − 1/(2·9·2) = 35/36; with one, 1 − 1/18.
    const w = [worker("w0", { a: 10 }), worker("w1", { b: 10 })];
    const d = new Driver(balancer(), w);
    assert.deepEqual(d.run(["a", "b", "b", "b"]), ["w0", "w1", "w1", "w1"]);
    assert.equal(d.b.status().backlog, 4);
    d.set([w[0]!]); // w1 goes, with 3 calls in flight
    const status = d.b.status();
    assert.equal(status.backlog, 1, "only w0's call is left");
    close(
      status.meanBacklog,
      decayed([1, 2, 3, 4, 1], 35 / 36),
      "one sample of the drop, as zc's Pool.remove",
    );
    d.end("w1");
    d.end("w1");
    assert.equal(d.b.status().backlog, 1, "w1's calls ending later change nothing");
    d.end("w0");
    assert.equal(d.b.status().backlog, 0);
    close(
      d.b.status().meanBacklog,
      decayed([1, 2, 3, 4, 1, [0, 1 - 1 / 18]], 35 / 36),
      "then one worker's decay",
    );
  });
});

describe("resume: against zc.resumelb's pool", () => {
  /**
   * zc.resumelb's `Pool.get` / `Pool.put` written out plainly, with every start and end applied the
   * moment it happens (ties broken in LRU order, as ours). The policy under test sees ends only
   * through the trackers, at its next pick; its picks and means must come out the same.
   */
  class ReferencePool {
    readonly lru: Array<{
      key: string;
      resume: Map<string, number>;
      backlog: number;
      sum: number;
      weight: number;
    }>;
    backlog = 0;
    sum = 0;
    weight = 0;
    constructor(
      keys: string[],
      readonly config: ResumeConfig,
    ) {
      this.lru = keys.map((key) => ({ key, resume: new Map(), backlog: 0, sum: 0, weight: 0 }));
    }
    get mean(): number {
      return this.weight > 0 ? this.sum / this.weight : 0;
    }
    #sample(w: { backlog: number; sum: number; weight: number }, decay: number): void {
      w.sum = w.sum * decay + w.backlog;
      w.weight = w.weight * decay + 1;
    }
    #decays(): [number, number] {
      const h = this.config.backlogHistory;
      return [1 - 1 / (2 * h), 1 - 1 / (2 * h * this.lru.length)];
    }
    get(className: string): string {
      const [workerDecay, poolDecay] = this.#decays();
      const meanOf = (w: { sum: number; weight: number }) => (w.weight > 0 ? w.sum / w.weight : 0);
      const maxBacklog = Math.max((this.config.variance * this.mean) / this.lru.length, 1);
      const minBacklog = meanOf(this.lru[0]!) + 1;
      let best: (typeof this.lru)[number] | undefined;
      let bestScore = 0;
      for (const w of this.lru) {
        let score = w.resume.get(className);
        if (score === undefined || meanOf(w) - minBacklog > maxBacklog) continue;
        if (w.backlog > 1) score /= w.backlog;
        if (score > bestScore) {
          best = w;
          bestScore = score;
        }
      }
      if (best === undefined) {
        best = this.lru[0]!;
        if (!best.resume.has(className)) best.resume.set(className, this.config.unskilledScore);
      }
      this.lru.splice(this.lru.indexOf(best), 1);
      this.lru.push(best);
      best.backlog++;
      this.#sample(best, workerDecay);
      this.backlog++;
      this.#sample(this, poolDecay);
      return best.key;
    }
    put(key: string): void {
      const [workerDecay, poolDecay] = this.#decays();
      const w = this.lru.find((x) => x.key === key)!;
      this.backlog--;
      this.#sample(this, poolDecay);
      w.backlog--;
      this.#sample(w, workerDecay);
    }
  }

  it("picks the same workers and keeps the same means over a seeded run of starts, ends and résumés", () => {
    const config = resume.parseConfig({ variance: 1.5, backlogHistory: 3 });
    const keys = ["w0", "w1", "w2", "w3", "w4"];
    const classes = ["a", "b", "c", "d", "e", "f", "g"];
    const random = new SeededRandom(11);
    const workers = keys.map((k) => worker(k));
    const d = new Driver(new ResumeBalancer(config), workers);
    const ref = new ReferencePool(keys, config);
    const open: string[] = [];
    let picks = 0;
    for (let step = 0; step < 5000; step++) {
      const r = random.next();
      if (r < 0.02) {
        // A new résumé for one worker: random scores for some classes.
        const i = Math.floor(random.next() * keys.length);
        const skills = new Map(
          classes.filter(() => random.next() < 0.4).map((c) => [c, 1 + random.next() * 20]),
        );
        workers[i]!.skills = skills;
        ref.lru.find((x) => x.key === keys[i])!.resume = new Map(skills);
      } else if (r < 0.55 || open.length === 0) {
        const className = classes[Math.floor(random.next() * classes.length)]!;
        const key = d.pick(className);
        assert.equal(key, ref.get(className), `pick ${picks}`);
        open.push(key);
        picks++;
      } else {
        const key = open.splice(Math.floor(random.next() * open.length), 1)[0]!;
        d.end(key);
        ref.put(key);
      }
    }
    const status = d.b.status();
    close(status.meanBacklog, ref.mean, "pool mean");
    assert.equal(status.backlog, ref.backlog);
    for (const w of ref.lru) close(d.mean(w.key), w.sum / w.weight, `${w.key}'s mean`);
    assert.deepEqual(
      status.workers.map((w) => w.key),
      ref.lru.map((w) => w.key),
      "LRU order",
    );
    assert.ok(picks > 2500 && new Set(open).size > 1);
  });
});

describe("resume: edge cases", () => {
  it("never picks an excluded worker while another remains, and picks anyway when all are excluded", () => {
    const d = new Driver(balancer(), [worker("w0", { a: 100 }), worker("w1"), worker("w2")]);
    assert.equal(d.pick("a", ["w0"]), "w1", "skilled w0 excluded: the LRU among the rest");
    assert.equal(d.pick("a", ["w0", "w1"]), "w2");
    assert.equal(d.pick("a", ["w0", "w1", "w2"]), "w0", "all tried: the best again");
    assert.equal(d.pick("b", ["w1", "w2"]), "w0", "the LRU worker w1 excluded: the next one");
  });

  it("ignores résumé scores that are not finite numbers above zero", () => {
    const bad = worker("w0");
    bad.skills = new Map<string, number>([
      ["a", Number.POSITIVE_INFINITY],
      ["b", Number.NaN],
      ["c", -5],
      ["d", 0],
    ]);
    const good = worker("w1", { a: 1, b: 1, c: 1, d: 1 });
    const d = new Driver(balancer(), [bad, good]);
    assert.deepEqual(d.run(["a", "end w1", "b", "end w1", "c", "end w1", "d"]), [
      "w1",
      "·",
      "w1",
      "·",
      "w1",
      "·",
      "w1",
    ]);
  });

  it("puts calls without a class header in one class, the empty one", () => {
    const d = new Driver(balancer(), [worker("w0"), worker("w1", { "": 3 })]);
    assert.equal(keyOf(d.b.update(d.workers).pick({ path: "/p.S/M", header: () => undefined })), "w1");
  });

  it("remembers at most MAX_PROVISIONAL_CLASSES provisional classes per worker, dropping the oldest", () => {
    const d = new Driver(balancer(), [worker("w0")]);
    for (let i = 0; i <= MAX_PROVISIONAL_CLASSES; i++) {
      d.pick(`class-${i}`);
      d.end("w0");
    }
    const provisional = d.b.status().workers[0]!.provisional;
    assert.equal(provisional.length, MAX_PROVISIONAL_CLASSES);
    assert.equal(provisional[0], "class-1");
  });

  it("takes new settings live, keeping LRU order, backlogs and provisional scores", () => {
    const d = new Driver(balancer({ variance: 4, backlogHistory: 1 }), [
      worker("w0", { a: 10 }),
      worker("w1"),
    ]);
    assert.deepEqual(d.run(["a", "a", "a"]), ["w0", "w0", "w0"]);
    d.b.configure(resume.parseConfig({ variance: 1, backlogHistory: 1 }));
    assert.equal(d.pick("a"), "w1", "variance 1 now: the fourth call skips w0, as in the first table");
    const status = d.b.status();
    assert.deepEqual(
      status.workers.map((w) => [w.key, w.backlog, w.provisional]),
      [
        ["w0", 3, []],
        ["w1", 1, ["a"]],
      ],
    );
  });
});

describe("resume under overload (seeded simulation)", () => {
  interface SimResult {
    /** Distinct workers serving the hot class in each window of 100 of its calls. */
    spreads: number[];
    /** Share of calls that missed the worker's cache. */
    missRate: number;
  }

  /**
   * Eight workers, each serving one call at a time in FIFO order with a small cache of 3 classes: a
   * hit takes 1 ms, a miss 5 ms (a database load). Eleven classes, one hot with ten times the traffic
   * of each of the ten others (half of all calls). Poisson arrivals at 8 calls/ms — the pool's capacity
   * when every call hits, so there is overload whatever the policy does. Each worker keeps real skills
   * (core/skills.ts, history 100) and publishes them on its candidate every 100 calls.
   */
  function simulate(policy: string, config: unknown, seed: number, calls = 12_000): SimResult {
    const clock = new FakeClock();
    const deps = { clock, random: new SeededRandom(seed) as Random };
    const spec = createDefaultRegistry().resolve(policy, config);
    const workers = Array.from({ length: 8 }, (_, i) => {
      const w = worker(`w${i}`);
      const candidate: Worker = { ...w, load: spec.createLoadTracker(deps) };
      return {
        candidate,
        skills: createSkills({ history: 100 }),
        cache: [] as string[],
        freeAt: 0,
        queue: [] as Array<{ finish: number; className: string; serviceMs: number; done: CallDone }>,
      };
    });
    const picker = spec.create(deps).update(workers.map((w) => w.candidate));
    const random = new SeededRandom(seed + 1000);
    const drawClass = () => {
      const r = random.next() * 20; // hot: 10 of 20
      return r < 10 ? "hot" : `cold-${Math.floor(r - 10)}`;
    };
    const spreads: number[] = [];
    let window = new Set<string>();
    let windowCalls = 0;
    let misses = 0;
    let nextArrival = 0;
    for (let sent = 0; sent < calls; ) {
      let first: (typeof workers)[number] | undefined;
      for (const w of workers) {
        if (w.queue.length > 0 && (first === undefined || w.queue[0]!.finish < first.queue[0]!.finish))
          first = w;
      }
      if (first !== undefined && first.queue[0]!.finish <= nextArrival) {
        const call = first.queue.shift()!;
        clock.advance(call.finish - clock.now());
        call.done(clock.now(), "success");
        first.skills.record(call.className, call.serviceMs);
        if (first.skills.shouldPublish()) {
          first.skills.markPublished();
          first.candidate.skills = new Map(Object.entries(first.skills.scores()));
        }
        continue;
      }
      clock.advance(nextArrival - clock.now());
      const className = drawClass();
      const result = picker.pick(ctx(className));
      assert.equal(result.kind, "pick");
      const w = workers.find((x) => result.kind === "pick" && x.candidate === result.candidate)!;
      const hit = w.cache.includes(className);
      if (!hit) misses++;
      w.cache = [className, ...w.cache.filter((c) => c !== className)].slice(0, 3);
      const serviceMs = hit ? 1 : 5;
      w.freeAt = Math.max(clock.now(), w.freeAt) + serviceMs;
      w.queue.push({ finish: w.freeAt, className, serviceMs, done: w.candidate.load.begin(clock.now()) });
      sent++;
      if (className === "hot") {
        window.add(w.candidate.key);
        if (++windowCalls === 100) {
          spreads.push(window.size);
          window = new Set();
          windowCalls = 0;
        }
      }
      nextArrival = clock.now() - Math.log(1 - random.next()) / 8;
    }
    return { spreads, missRate: misses / calls };
  }

  it("keeps a class with ten times the traffic on no more than ceil(8 / variance) + 1 of 8 workers, and on more than one", (t) => {
    for (const variance of [2, 4, 8]) {
      const bound = Math.ceil(8 / variance) + 1;
      for (const seed of [1, 2]) {
        const r = simulate("resume", { variance }, seed);
        const spreads = [...r.spreads].sort((a, b) => a - b);
        const report = `variance ${variance}, seed ${seed}: hot class over ${spreads[0]}–${spreads.at(-1)} workers per 100 calls (bound ${bound}), cache misses ${(r.missRate * 100).toFixed(2)}%`;
        t.diagnostic(report);
        assert.ok(spreads.length >= 50, report);
        // Every window after the first few (the hot class finds its workers) stays within the bound.
        const late = r.spreads.slice(5);
        assert.ok(
          late.every((s) => s <= bound),
          report,
        );
        // And the skip does its work: one worker does not keep half the traffic (a few windows may, while
        // résumés arrive and one worker briefly looks far better than the rest).
        const alone = late.filter((s) => s < 2).length;
        assert.ok(alone <= late.length / 10, `one worker held the hot class in ${alone} windows: ${report}`);
        assert.ok(r.missRate < 0.01, `the hot class does not evict the others: ${report}`);
      }
    }
  });

  it("spreads the hot class over every worker under least_request, so the same check would fail there", (t) => {
    const r = simulate("least_request", {}, 1);
    const report = `least_request: hot class over ${Math.min(...r.spreads)}–${Math.max(...r.spreads)} workers, misses ${(r.missRate * 100).toFixed(1)}%`;
    t.diagnostic(report);
    assert.ok(
      r.spreads.slice(5).every((s) => s === 8),
      report,
    );
    assert.ok(r.missRate > 0.3, report);
  });
});
