import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConcurrencyLimiter } from "./limiter.ts";

type Step =
  | ["admit", string, number, number] // waiter, now, deadline
  | ["hedge", string, number]
  | ["release", number]
  | ["cancel", string]
  | ["expire", string, number];

/** Runs steps and returns one short line per step: what the limiter answered. */
function run(steps: Step[], maxConcurrent = 2, maxQueue = 2, maxQueueWaitMs = 100): string[] {
  const l = new ConcurrencyLimiter<string>({ maxConcurrent, maxQueue, maxQueueWaitMs });
  return steps.map((s) => {
    switch (s[0]) {
      case "admit": {
        const a = l.admit(s[1], s[2], s[3]);
        return a.kind === "queued" ? `queued until ${a.expiresAt}` : a.kind;
      }
      case "hedge":
        return l.admit(s[1], s[2], Infinity, false).kind;
      case "release":
        return `release → ${l.release(s[1]) ?? "free"} (${l.inFlight} in flight, ${l.queued} queued)`;
      case "cancel":
        return `cancel ${l.cancel(s[1])}`;
      case "expire":
        return l.expire(s[1], s[2]) === undefined ? "expire: no" : "expire: yes";
      default:
        throw new Error("unknown step");
    }
  });
}

describe("ConcurrencyLimiter", () => {
  it("runs calls up to the limit, queues the next in order and hands slots to the oldest waiter", () => {
    assert.deepEqual(
      run([
        ["admit", "a", 0, Infinity],
        ["admit", "b", 0, Infinity],
        ["admit", "c", 1, Infinity],
        ["admit", "d", 2, 50],
        ["admit", "e", 3, Infinity],
        ["release", 10],
        ["release", 11],
        ["release", 12],
        ["release", 13],
      ]),
      [
        "run",
        "run",
        "queued until 101",
        "queued until 50",
        "reject",
        "release → c (2 in flight, 1 queued)",
        "release → d (2 in flight, 0 queued)",
        "release → free (1 in flight, 0 queued)",
        "release → free (0 in flight, 0 queued)",
      ],
    );
  });

  it("expires a waiter at its deadline or its queue wait limit, whichever is first, and not before", () => {
    assert.deepEqual(
      run([
        ["admit", "a", 0, Infinity],
        ["admit", "b", 0, Infinity],
        ["admit", "c", 0, 30],
        ["admit", "d", 0, Infinity],
        ["expire", "c", 29],
        ["expire", "c", 30],
        ["expire", "c", 31],
        ["expire", "d", 99],
        ["release", 100],
        ["expire", "d", 100],
      ]),
      [
        "run",
        "run",
        "queued until 30",
        "queued until 100",
        "expire: no",
        "expire: yes",
        "expire: no",
        "expire: no",
        // d's time is up at 100: the slot is not handed to it; its timer fails it.
        "release → free (1 in flight, 1 queued)",
        "expire: yes",
      ],
    );
  });

  it("forgets a cancelled waiter and refuses a hedge that would have to wait", () => {
    assert.deepEqual(
      run([
        ["admit", "a", 0, Infinity],
        ["hedge", "h1", 0],
        ["hedge", "h2", 0],
        ["admit", "c", 0, Infinity],
        ["cancel", "c"],
        ["cancel", "c"],
        ["release", 1],
      ]),
      [
        "run",
        "run",
        "reject",
        "queued until 100",
        "cancel true",
        "cancel false",
        "release → free (1 in flight, 0 queued)",
      ],
    );
  });

  it("does not let a new call overtake waiters even when a slot is free in between", () => {
    const l = new ConcurrencyLimiter<string>({ maxConcurrent: 1, maxQueue: 5, maxQueueWaitMs: 1000 });
    l.admit("a", 0, Infinity);
    l.admit("b", 0, Infinity);
    assert.equal(l.available, 0);
    assert.equal(l.release(1), "b");
    assert.equal(l.admit("c", 2, Infinity).kind, "queued");
  });

  it("explains a refusal with the limit, the queue and the reason", () => {
    const l = new ConcurrencyLimiter<string>({ maxConcurrent: 1, maxQueue: 0, maxQueueWaitMs: 1000 });
    l.admit("a", 0, Infinity);
    const r = l.admit("b", 0, Infinity);
    assert.equal(r.kind, "reject");
    assert.match(
      r.kind === "reject" ? r.message : "",
      /concurrency limit reached: 1 calls in flight \(limit 1\) and 0 waiting \(queue limit 0\)/,
    );
    const q = new ConcurrencyLimiter<string>({ maxConcurrent: 1, maxQueue: 1, maxQueueWaitMs: 50 });
    q.admit("a", 0, Infinity);
    q.admit("b", 10, Infinity);
    assert.match(
      q.expire("b", 60) ?? "",
      /waited 50 ms for one of 1 call slots and the queue wait limit \(50 ms\)/,
    );
  });

  it("keeps its counts consistent under a seeded random workload", () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const l = new ConcurrencyLimiter<number>({ maxConcurrent: 5, maxQueue: 10, maxQueueWaitMs: 20 });
    let running = 0;
    const queued = new Set<number>();
    for (let t = 0, id = 0; t < 5000; t++) {
      const r = rnd();
      if (r < 0.5) {
        const a = l.admit(++id, t, t + 1 + Math.floor(rnd() * 40));
        if (a.kind === "run") running++;
        else if (a.kind === "queued") queued.add(id);
      } else if (r < 0.8 && running > 0) {
        const next = l.release(t);
        if (next === undefined) running--;
        else queued.delete(next);
      } else {
        for (const w of [...queued]) if (l.expire(w, t) !== undefined) queued.delete(w);
      }
      assert.equal(l.inFlight, running);
      assert.ok(running <= 5);
      assert.equal(l.queued, queued.size);
      assert.ok(queued.size <= 10);
    }
  });
});
