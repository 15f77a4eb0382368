// `roster serve` as a user runs it (the CLI in a child process): SIGTERM drains without failing a call,
// SIGHUP replaces every worker without failing a call.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { afterEach, it } from "node:test";
import { createDemoClient, type DemoClient } from "../support/demo-client.ts";
import { type Running, startServe as startServeProcess } from "../support/serve-process.ts";

let child: ChildProcess | undefined;

afterEach(() => {
  if (child?.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

/** `roster serve` with `workers` workers, remembered for afterEach to kill. */
async function startServe(workers: number): Promise<Running> {
  const running = await startServeProcess(workers);
  child = running.child;
  return running;
}

async function workerPids(admin: string): Promise<number[]> {
  const res = await fetch(`http://${admin}/status`);
  const status = (await res.json()) as { workers: Array<{ pid: number; state: string }> };
  return status.workers.filter((w) => w.state === "ready").map((w) => w.pid);
}

/** Lanes of calls until `stop()`; every call's outcome is kept. */
function load(client: DemoClient, lanes: number, sleepUs: number) {
  let stopped = false;
  const outcomes: string[] = [];
  const done = Promise.all(
    Array.from({ length: lanes }, async () => {
      while (!stopped) {
        try {
          await client.echo("EchoOnce", 0, 10_000, sleepUs);
          outcomes.push("ok");
        } catch (err) {
          outcomes.push((err as Error).message);
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

it("drains on SIGTERM: every call in flight succeeds and the process exits 0", {
  timeout: 60_000,
}, async () => {
  const s = await startServe(2);
  const client = createDemoClient(s.address);
  const l = load(client, 16, 300_000); // 300 ms calls: plenty are in flight at the signal
  await new Promise((r) => setTimeout(r, 1000));
  const stopping = l.stop(); // no new calls from here; the ones in flight must finish
  s.child.kill("SIGTERM");
  await stopping;
  client.close();
  assert.equal(await s.exited, 0, s.log.join("\n"));
  const failed = l.outcomes.filter((o) => o !== "ok");
  assert.ok(l.outcomes.length >= 32, `only ${l.outcomes.length} calls ran`);
  assert.deepEqual(failed, []);
  assert.ok(
    s.log.some((line) => line.includes("draining")),
    "the drain is logged",
  );
});

it("drains on SIGTERM to the whole process group (as systemd sends it) without a failed call or a warning", {
  timeout: 60_000,
}, async () => {
  const s = await startServe(2);
  const workers = await workerPids(s.admin);
  assert.equal(workers.length, 2);
  const client = createDemoClient(s.address);
  const l = load(client, 16, 300_000);
  // A client that keeps calling through the signal, as live ones do: the front keeps dialling workers
  // while they drain. Its calls after the signal may fail (the front is closing); they are not counted.
  const liveClient = createDemoClient(s.address);
  const live = load(liveClient, 4, 1000);
  await new Promise((r) => setTimeout(r, 1000));
  const stopping = l.stop();
  // The workers first: the order in which a group signal is most likely to be handled badly (a worker
  // closing its socket while the front still dials it).
  for (const pid of workers) process.kill(pid, "SIGTERM");
  s.child.kill("SIGTERM");
  await stopping;
  await new Promise((r) => setTimeout(r, 500));
  await live.stop();
  liveClient.close();
  client.close();
  assert.equal(await s.exited, 0, s.log.join("\n"));
  assert.ok(l.outcomes.length >= 32, `only ${l.outcomes.length} calls ran`);
  // Every call that reached a worker finished. On a slow machine a call the client sent just before the
  // signal can reach the front after both workers left it: it fails there without touching a worker
  // ("has no backends"), as any call does once every worker is gone.
  assert.deepEqual(
    l.outcomes.filter((o) => o !== "ok" && !o.includes("has no backends")),
    [],
  );
  const warnings = s.log.filter((line) => /"level":"(warn|error|fatal)"/.test(line));
  assert.deepEqual(warnings, [], "nothing is logged at warn or above");
});

it("replaces every worker on SIGHUP without failing a call", { timeout: 90_000 }, async () => {
  const s = await startServe(3);
  const before = await workerPids(s.admin);
  assert.equal(before.length, 3);
  const client = createDemoClient(s.address);
  const l = load(client, 16, 5000);
  await new Promise((r) => setTimeout(r, 500));
  s.child.kill("SIGHUP");
  // Bounded wait for the rolling restart to finish.
  const deadline = Date.now() + 60_000;
  while (!s.log.some((line) => line.includes("rolling restart done")) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 500));
  await l.stop();
  client.close();
  const after = await workerPids(s.admin);
  s.child.kill("SIGTERM");
  assert.equal(await s.exited, 0);
  assert.ok(
    s.log.some((line) => line.includes("rolling restart done")),
    s.log.join("\n"),
  );
  assert.equal(after.length, 3);
  for (const pid of after) assert.ok(!before.includes(pid), `worker pid ${pid} was not replaced`);
  assert.ok(l.outcomes.length > 200, `only ${l.outcomes.length} calls ran`);
  assert.deepEqual(
    l.outcomes.filter((o) => o !== "ok"),
    [],
  );
});
