// `roster serve` scaled live, as a user does it (the CLI in a child process): SIGTTIN adds a worker that
// joins the balancing, SIGTTOU removes one gracefully — no call fails, idempotent or not — and never
// goes below one worker.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { afterEach, it } from "node:test";
import { createDemoClient, type DemoClient } from "../support/demo-client.ts";
import { type Running, startServe as startServeProcess } from "../support/serve-process.ts";

let child: ChildProcess | undefined;
/** Every worker pid seen through /status, killed after each test in case the supervisor was killed. */
const seenPids = new Set<number>();

afterEach(() => {
  if (child?.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const pid of seenPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  seenPids.clear();
});

/** `roster serve` with `workers` workers, remembered for afterEach to kill. */
async function startServe(workers: number): Promise<Running> {
  const running = await startServeProcess(workers);
  child = running.child;
  return running;
}

interface WorkerRow {
  worker: number;
  pid: number;
  state: string;
}

async function status(admin: string): Promise<WorkerRow[]> {
  const res = await fetch(`http://${admin}/status`);
  const rows = ((await res.json()) as { workers: WorkerRow[] }).workers;
  for (const w of rows) if (typeof w.pid === "number") seenPids.add(w.pid);
  return rows;
}

/** Polls `check` every 100 ms until it returns true; fails with `what` after `ms`. */
async function waitFor(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out after ${ms} ms waiting for ${what}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Outcome {
  method: "Echo" | "EchoOnce";
  ok: boolean;
  servedBy: string;
  error: string;
  endedAt: number;
}

/** Lanes of calls until `stop()`, half idempotent (Echo), half not (EchoOnce); every outcome kept. */
function load(client: DemoClient, lanes: number, sleepUs: number) {
  let stopped = false;
  const outcomes: Outcome[] = [];
  const done = Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      const method = lane % 2 === 0 ? "Echo" : "EchoOnce";
      while (!stopped) {
        try {
          const reply = await client.echo(method, 0, 10_000, sleepUs);
          outcomes.push({ method, ok: true, servedBy: reply.served_by, error: "", endedAt: Date.now() });
        } catch (err) {
          outcomes.push({
            method,
            ok: false,
            servedBy: "",
            error: (err as Error).message,
            endedAt: Date.now(),
          });
        }
      }
    }),
  );
  return {
    outcomes,
    async stop() {
      stopped = true;
      await done;
    },
  };
}

it("SIGTTIN adds a worker that takes calls; SIGTTOU removes workers without failing a call", {
  timeout: 120_000,
}, async () => {
  const s = await startServe(4);
  const initial = await status(s.admin);
  assert.deepEqual(
    initial.map((w) => [w.worker, w.state]),
    [
      [1, "ready"],
      [2, "ready"],
      [3, "ready"],
      [4, "ready"],
    ],
  );
  const client = createDemoClient(s.address);
  // 20 ms calls over 16 lanes: a few calls are in flight on every worker at any moment, so a removal
  // that cut them (instead of letting them finish) would fail EchoOnce calls, which are never retried.
  const l = load(client, 16, 20_000);
  try {
    await new Promise((r) => setTimeout(r, 500));

    s.child.kill("SIGTTIN");
    await waitFor("5 ready workers in /status", 30_000, async () => {
      const rows = await status(s.admin);
      return rows.length === 5 && rows.every((w) => w.state === "ready");
    });
    assert.ok(
      s.log.some((line) => line.includes("worker 5 added (scale 4 → 5)")),
      s.log.join("\n"),
    );
    const added = (await status(s.admin)).find((w) => w.worker === 5)!;
    await waitFor("calls served by worker 5", 10_000, () =>
      l.outcomes.some((o) => o.ok && o.servedBy === "worker-5"),
    );

    // Two removals in a row: the highest-numbered workers (5, then 4) leave, each gracefully.
    const before = await status(s.admin);
    const worker4 = before.find((w) => w.worker === 4)!;
    // One signal at a time: two identical signals sent back to back may reach the process as one.
    s.child.kill("SIGTTOU");
    await waitFor("worker 5's removal in the log", 10_000, () =>
      s.log.some((line) => line.includes("worker 5 removed (scale 5 → 4)")),
    );
    s.child.kill("SIGTTOU");
    await waitFor("3 workers in /status", 30_000, async () => (await status(s.admin)).length === 3);
    const after = await status(s.admin);
    assert.deepEqual(
      after.map((w) => [w.worker, w.state]),
      [
        [1, "ready"],
        [2, "ready"],
        [3, "ready"],
      ],
    );
    for (const w of [added, worker4]) {
      await waitFor(`worker ${w.worker} (pid ${w.pid}) to exit`, 10_000, () => !alive(w.pid));
    }
    assert.ok(
      s.log.some((line) => line.includes("worker 4 removed (scale 4 → 3)")),
      s.log.join("\n"),
    );
    // After the removals, calls go to the remaining workers only.
    const removedAt = Date.now();
    await new Promise((r) => setTimeout(r, 500));
    const late = l.outcomes.filter((o) => o.endedAt > removedAt);
    assert.ok(late.length > 20, `only ${late.length} calls after the removals`);
    assert.deepEqual([...new Set(late.map((o) => o.servedBy))].sort(), ["worker-1", "worker-2", "worker-3"]);
  } finally {
    await l.stop();
    client.close();
  }
  s.child.kill("SIGTERM");
  assert.equal(await s.exited, 0, s.log.join("\n"));
  const failed = l.outcomes.filter((o) => !o.ok);
  assert.deepEqual(
    failed.map((o) => `${o.method}: ${o.error}`),
    [],
  );
  for (const method of ["Echo", "EchoOnce"] as const) {
    const n = l.outcomes.filter((o) => o.method === method).length;
    assert.ok(n > 100, `only ${n} ${method} calls ran`);
  }
  // The "worker N exited" lines of the removed workers say their exits were expected, not crashes.
  assert.ok(!s.log.some((line) => line.includes("died")), s.log.join("\n"));
});

it("SIGTTOU at one worker only logs; the worker keeps serving", { timeout: 60_000 }, async () => {
  const s = await startServe(1);
  const [only] = await status(s.admin);
  assert.ok(only !== undefined && only.state === "ready");
  s.child.kill("SIGTTOU");
  await waitFor("the refusal in the log", 10_000, () => s.log.some((line) => line.includes("not removing")));
  const client = createDemoClient(s.address);
  try {
    const reply = await client.echo("EchoOnce");
    assert.equal(reply.served_by, "worker-1");
  } finally {
    client.close();
  }
  const rows = await status(s.admin);
  assert.deepEqual(
    rows.map((w) => [w.worker, w.pid, w.state]),
    [[1, only.pid, "ready"]],
  );
  assert.ok(!s.log.some((line) => line.includes("removed")), s.log.join("\n"));
  s.child.kill("SIGTERM");
  assert.equal(await s.exited, 0, s.log.join("\n"));
});
