import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../test/support/fake-clock.ts";
import { SeededRandom } from "../../test/support/seeded-random.ts";
import { ConfigError } from "./errors.ts";
import {
  createSkills,
  SKILL_METRIC_PREFIX,
  type Skills,
  skillsFromJSON,
  skillsFromNamedMetrics,
  skillsToNamedMetrics,
} from "./skills.ts";

function close(actual: number | undefined, expected: number, what: string, tolerance = 1e-9): void {
  assert.ok(actual !== undefined, `${what}: no score`);
  assert.ok(
    Math.abs(actual - expected) <= tolerance * Math.max(1, Math.abs(expected)),
    `${what}: ${actual} ≠ ${expected}`,
  );
}

/** Runs one call of `className` that keeps the handler busy `ms` on the fake clock, and records it. */
function handle(skills: Skills, clock: FakeClock, className: string, ms: number): void {
  const start = clock.now();
  clock.advance(ms);
  skills.record(className, clock.now() - start);
}

describe("worker skills", () => {
  it("scores a class as requests per second of handler time: N / T", () => {
    const clock = new FakeClock();
    const skills = createSkills({ history: 10 });
    handle(skills, clock, "a", 20);
    assert.deepEqual(skills.scores(), { a: 50 });
    handle(skills, clock, "b", 4);
    assert.equal(skills.score("b"), 250);
    assert.equal(skills.score("c"), undefined);
  });

  it("decays T and N by (1 − 1/history) per request of any class, as an exact sequence", () => {
    const clock = new FakeClock();
    const skills = createSkills({ history: 4 }); // decay 0.75
    // [class, handler ms, expected score of that class after it, why]
    const table: Array<[string, number, number, string]> = [
      ["a", 10, 100, "first call: T = 10, N = 1"],
      ["a", 30, (1000 * 1.75) / 37.5, "f = 0.75: T = 7.5 + 30, N = 0.75 + 1"],
      ["b", 5, 200, "another class: a is left as it was"],
      ["b", 5, 200, "same handler time: the score stays whatever the decay"],
      [
        "a",
        10,
        (1000 * (1.75 * 0.75 ** 3 + 1)) / (37.5 * 0.75 ** 3 + 10),
        "three requests since a: f = 0.75³",
      ],
    ];
    for (const [className, ms, expected, why] of table) {
      handle(skills, clock, className, ms);
      close(skills.score(className), expected, why);
    }
    close(skills.score("b"), 200, "b untouched by a's call");
    assert.equal(skills.requests, 5);
  });

  it("weighs the past by about `history` requests: a class's score follows a change of handler time", () => {
    const clock = new FakeClock();
    const skills = createSkills({ history: 20 });
    for (let i = 0; i < 200; i++) handle(skills, clock, "a", 10); // 100/s, steady
    close(skills.score("a"), 100, "steady");
    handle(skills, clock, "a", 1); // one fast call (cache got warm)
    // Before it: N = Σ 0.95^i over 200 calls (≈ 20, the steady state 1 / (1 − 0.95)), T = 10·N.
    // After: T = 10·N·0.95 + 1, N = N·0.95 + 1.
    const n = (1 - 0.95 ** 200) / (1 - 0.95);
    close(
      skills.score("a"),
      (1000 * (n * 0.95 + 1)) / (10 * n * 0.95 + 1),
      "one fast call moves it by ~1/history",
    );
    for (let i = 0; i < 200; i++) handle(skills, clock, "a", 1);
    close(skills.score("a"), 1000, "after ten histories the old time is gone", 1e-3);
  });

  it("drops a class unseen for more than maxSkillAge requests, and starts it afresh when it returns", () => {
    const clock = new FakeClock();
    const skills = createSkills({ history: 2, maxSkillAge: 3 });
    handle(skills, clock, "a", 10);
    handle(skills, clock, "b", 1);
    handle(skills, clock, "b", 1);
    handle(skills, clock, "b", 1);
    assert.deepEqual(Object.keys(skills.scores()).sort(), ["a", "b"], "3 requests since a: still kept");
    handle(skills, clock, "b", 1);
    assert.deepEqual(Object.keys(skills.scores()), ["b"], "4 requests since a: dropped");
    assert.equal(skills.score("a"), undefined);
    assert.equal(Object.keys(skills.toJSON().classes).join(), "b");
    handle(skills, clock, "a", 40);
    assert.equal(skills.score("a"), 25, "a new start: the old 10 ms call does not weigh in");
  });

  it("asks to publish every `history` requests, counted from the last publish", () => {
    const skills = createSkills({ history: 3 });
    const due: boolean[] = [];
    for (let i = 0; i < 7; i++) {
      skills.record("a", 1);
      due.push(skills.shouldPublish());
      if (skills.shouldPublish()) skills.markPublished();
    }
    assert.deepEqual(due, [false, false, true, false, false, true, false]);
    skills.record("a", 1);
    skills.markPublished(); // the timer published early
    skills.record("a", 1);
    skills.record("a", 1);
    assert.equal(skills.shouldPublish(), false, "the count restarts at a timer publish");
    skills.record("a", 1);
    assert.equal(skills.shouldPublish(), true);
  });

  it("floors a zero handler time at 1 ns and ignores a non-finite one", () => {
    const skills = createSkills({ history: 10 });
    skills.record("a", 0);
    assert.equal(skills.score("a"), 1e9);
    skills.record("b", Number.NaN);
    skills.record("b", Number.POSITIVE_INFINITY);
    assert.equal(skills.score("b"), undefined);
    assert.equal(skills.requests, 1);
  });

  it("defaults history to 9999 and maxSkillAge to ten histories, as zc.resumelb, and names bad settings", () => {
    const skills = createSkills();
    assert.equal(skills.history, 9999);
    assert.equal(skills.maxSkillAge, 99_990);
    assert.equal(createSkills({ history: 5 }).maxSkillAge, 50);
    assert.throws(
      () => createSkills({ history: 0 }),
      /^ConfigError: history: must be a whole number ≥ 1, got 0$/,
    );
    assert.throws(() => createSkills({ history: 2.5 }), /history: must be a whole number/);
    assert.throws(() => createSkills({ maxSkillAge: -1 }), /maxSkillAge: must be a whole number/);
  });
});

describe("worker skills persisted and reloaded", () => {
  /** A worker's life: seeded classes (Zipf-ish) and handler times on a fake clock. */
  function workload(skills: Skills, clock: FakeClock, calls: number, seed: number): void {
    const random = new SeededRandom(seed);
    for (let i = 0; i < calls; i++) {
      const k = Math.floor(1 / (0.05 + random.next())); // 1…20, small ones common
      handle(skills, clock, `class-${k}`, 1 + k * random.next() * 3);
    }
  }

  it("reloads skills with the scores they had (within 1e-9) and then evolves exactly like the original", () => {
    const clock = new FakeClock();
    const original = createSkills({ history: 50 });
    workload(original, clock, 3000, 1);
    const file = JSON.stringify(original.toJSON());
    const reloaded = skillsFromJSON(JSON.parse(file), { history: 50 });

    const before = original.scores();
    const after = reloaded.scores();
    assert.deepEqual(Object.keys(after).sort(), Object.keys(before).sort());
    assert.ok(Object.keys(before).length >= 10);
    for (const [name, score] of Object.entries(before)) close(after[name], score, name);
    assert.equal(reloaded.requests, original.requests);

    // Same calls after the restart on both: the reloaded one weighs them as the original does.
    workload(original, clock, 500, 2);
    workload(reloaded, clock, 500, 2);
    const a = original.scores();
    const b = reloaded.scores();
    assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
    for (const [name, score] of Object.entries(a)) close(b[name], score, `${name} after more calls`);
  });

  it("does not inflate scores on reload as zc.resumelb's seeding (T = 1/score, N = history) does", () => {
    // zc.resumelb persists only the scores and reseeds each class as perf_data = (0, 1.0/rpm, history):
    // N/T = history × score. Here is that seeding beside ours, after one more call of the class.
    const history = 100;
    const clock = new FakeClock();
    const original = createSkills({ history });
    for (let i = 0; i < 1000; i++) handle(original, clock, "a", 10); // 100 req/s
    const real = original.score("a")!;
    close(real, 100, "steady score");

    const ours = skillsFromJSON(JSON.parse(JSON.stringify(original.toJSON())), { history });
    handle(ours, clock, "a", 10);
    close(ours.score("a"), 100, "ours after reload and one call");

    // zc's state after the same call: T = (1/score)·decay + 0.01 s, N = history·decay + 1. The seeded
    // state alone says N/T = history × score; one call of typical length halves that: (history + 1)/2.
    const decay = 1 - 1 / history;
    let zcTime = 1 / real;
    let zcCount = history;
    const inflation: number[] = [];
    for (let k = 1; k <= 3; k++) {
      zcTime = zcTime * decay + 0.01;
      zcCount = zcCount * decay + 1;
      inflation.push(zcCount / zcTime / real);
    }
    // After k calls about (history + k) / (1 + k): 50.5, 34, 25.75 here; ~5000-fold at zc's default 9999.
    const expected = [1, 2, 3].map((k) => (history + k) / (1 + k));
    for (let k = 0; k < 3; k++)
      close(inflation[k], expected[k]!, `zc's inflation after ${k + 1} calls`, 0.02);
    close(ours.score("a"), 100, "ours stays 100");
  });

  it("rejects a damaged file with the field at fault, and never makes up scores", () => {
    const good = createSkills({ history: 5 });
    good.record("a", 10);
    const snapshot = good.toJSON();
    const table: Array<[unknown, RegExp]> = [
      [null, /^skills: must be an object/],
      [{ ...snapshot, format: "other" }, /^skills\.format: must be "roster-skills"/],
      [{ ...snapshot, version: 2 }, /^skills\.version: unsupported version 2/],
      [{ ...snapshot, requests: -1 }, /^skills\.requests: must be a whole number ≥ 0/],
      [{ ...snapshot, classes: [] }, /^skills\.classes: must be an object/],
      [
        { ...snapshot, classes: { a: { timeMs: 0, count: 1, lastSeen: 1 } } },
        /^skills\.classes\["a"\]\.timeMs: must be a number > 0/,
      ],
      [
        { ...snapshot, classes: { a: { timeMs: 1, count: "1", lastSeen: 1 } } },
        /^skills\.classes\["a"\]\.count/,
      ],
      [
        { ...snapshot, classes: { a: { timeMs: 1, count: 1, lastSeen: 2 } } },
        /^skills\.classes\["a"\]\.lastSeen: must be a whole number from 0 to requests \(1\)/,
      ],
    ];
    for (const [raw, message] of table) {
      assert.throws(
        () => skillsFromJSON(raw),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
        JSON.stringify(raw),
      );
    }
  });

  it("drops classes that aged out while saved, under the settings of the reload", () => {
    const saved = createSkills({ history: 10, maxSkillAge: 100 });
    saved.record("old", 5);
    for (let i = 0; i < 50; i++) saved.record("new", 5);
    const reloaded = skillsFromJSON(saved.toJSON(), { history: 10, maxSkillAge: 20 });
    assert.deepEqual(Object.keys(reloaded.scores()), ["new"]);
  });
});

describe("skills as ORCA named metrics", () => {
  it("round-trips scores under the documented prefix", () => {
    const named = skillsToNamedMetrics({ a: 12.5, "shop.example": 3 });
    assert.deepEqual(named, { "roster.skill.a": 12.5, "roster.skill.shop.example": 3 });
    assert.equal(SKILL_METRIC_PREFIX, "roster.skill.");
    assert.deepEqual(
      [...skillsFromNamedMetrics(named)],
      [
        ["a", 12.5],
        ["shop.example", 3],
      ],
    );
  });

  it("ignores other metrics, bad values and entries past the cap in an untrusted report", () => {
    const report: Record<string, unknown> = {
      "roster.skill.a": 1,
      "roster.skill.nan": Number.NaN,
      "roster.skill.inf": Number.POSITIVE_INFINITY,
      "roster.skill.zero": 0,
      "roster.skill.neg": -3,
      "roster.skill.text": "9",
      queue_depth: 7,
      "roster.skill.b": 2,
      "roster.skill.c": 3,
    };
    assert.deepEqual(
      [...skillsFromNamedMetrics(report)],
      [
        ["a", 1],
        ["b", 2],
        ["c", 3],
      ],
    );
    assert.deepEqual(
      [...skillsFromNamedMetrics(report, 2)],
      [
        ["a", 1],
        ["b", 2],
      ],
    );
  });
});
