// weighted_round_robin end to end: a real `roster lb` process in front of three grpc-js backends that
// report fixed load figures over ORCA out-of-band (test/support/orca-backend.ts). With equal qps and CPU
// utilization 0.25 / 0.5 / 1.0 the weights are qps/utilization = 400 : 200 : 100, so after the blackout
// the calls split 4 : 2 : 1; backends without the ORCA service get equal shares.
//
// Tolerance: the reports never change, so after the blackout the balancer's weights are fixed and its
// EDF scheduler gives each backend its exact share of any run of picks to within one pick (the unit tests
// check this on a fake clock). We allow 1 % of the calls per backend, for a transparent retry or a
// picker rebuilt by a backend state change during the run; equal shares would miss by 40 %+.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { EchoClient, waitFor } from "../support/echo-backend.ts";
import { type OrcaBackend, startOrcaBackend } from "../support/orca-backend.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

interface WrrStatus {
  backends: Array<{ key: string; state: string; weight?: number }>;
  balancer?: {
    mode: "weighted" | "equal";
    backends: Array<{ key: string; weight: number; state: string; reportedWeight: number }>;
  };
}

interface RunningLb {
  readonly child: ChildProcess;
  readonly listen: string;
  readonly admin: string;
  readonly log: string[];
  status(): Promise<WrrStatus>;
  /** SIGTERM by pid, then SIGKILL if it has not exited within 5 s. */
  stop(): Promise<void>;
}

async function startRosterLb(
  dir: string,
  backends: readonly OrcaBackend[],
  policy: string,
): Promise<RunningLb> {
  const config = join(dir, `roster-${Date.now()}.yaml`);
  writeFileSync(
    config,
    [
      "listen: 127.0.0.1:0",
      "admin: 127.0.0.1:0",
      `policy: ${policy}`,
      "backends:",
      ...backends.map((b) => `  - ${b.address}`),
      "",
    ].join("\n"),
  );
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "lb", "--config", config], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log: string[] = [];
  child.stderr!.on("data", (d: Buffer) => log.push(...d.toString().split("\n").filter(Boolean)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const pid = child.pid!;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    process.kill(pid, "SIGTERM");
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL");
    }, 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitFor(() => log.some((l) => l.includes("listening on")), 20_000, "roster lb to listen");
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${log.join("\n")}`);
  }
  const started = JSON.parse(log.find((l) => l.includes("listening on"))!) as {
    listen: string;
    admin: string;
  };
  return {
    child,
    listen: started.listen,
    admin: started.admin,
    log,
    status: async () => (await (await fetch(`http://${started.admin}/status`)).json()) as WrrStatus,
    stop,
  };
}

/** Polls `lb`'s /status every 50 ms until `check` says yes; bounded by `timeoutMs`. */
async function statusUntil(
  lb: RunningLb,
  check: (s: WrrStatus) => boolean,
  timeoutMs: number,
  what: string,
  seen?: (s: WrrStatus) => void,
): Promise<WrrStatus> {
  const until = Date.now() + timeoutMs;
  let last: WrrStatus | undefined;
  // Bounded by the clock: at most timeoutMs / 50 turns.
  while (Date.now() < until) {
    last = await lb.status();
    seen?.(last);
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; last /status: ${JSON.stringify(last)}`);
}

/** Makes `total` Echo calls, `concurrency` at a time, and counts them by the backend that served them. */
async function spread(address: string, total: number, concurrency: number): Promise<Map<string, number>> {
  const client = new EchoClient(address);
  const counts = new Map<string, number>();
  let next = 0;
  try {
    const worker = async () => {
      // Bounded by `total`.
      while (next < total) {
        next++;
        const reply = await client.echo({ message: "x" }, { deadlineMs: 10_000 });
        counts.set(reply.served_by, (counts.get(reply.served_by) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    client.close();
  }
  return counts;
}

function assertShares(counts: Map<string, number>, expected: Record<string, number>, total: number): void {
  const sum = Object.values(expected).reduce((a, b) => a + b, 0);
  const summary = JSON.stringify(Object.fromEntries(counts));
  assert.deepEqual([...counts.keys()].sort(), Object.keys(expected).sort(), summary);
  for (const [id, w] of Object.entries(expected)) {
    const want = (total * w) / sum;
    const got = counts.get(id) ?? 0;
    assert.ok(
      Math.abs(got - want) <= total * 0.01,
      `${id}: ${got} calls, expected ${want} ± 1% (${summary})`,
    );
  }
}

describe("weighted_round_robin through roster lb", () => {
  let dir: string;
  const backends: OrcaBackend[] = [];
  let lb: RunningLb | undefined;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "roster-wrr-"));
  });
  afterEach(async () => {
    await lb?.stop();
    lb = undefined;
    for (const b of backends.splice(0)) await b.close();
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("splits calls 4:2:1 by the ORCA-reported qps/utilization, after the blackout", {
    timeout: 60_000,
  }, async () => {
    const utilization = { a: 0.25, b: 0.5, c: 1.0 };
    for (const [id, u] of Object.entries(utilization)) {
      backends.push(await startOrcaBackend({ id, report: { rpsFractional: 100, cpuUtilization: u } }));
    }
    lb = await startRosterLb(
      dir,
      backends,
      "{ name: weighted_round_robin, blackoutPeriod: 2s, weightUpdatePeriod: 100ms, oobReportingPeriod: 200ms }",
    );
    const keyOf = (id: string) => backends.find((b) => b.id === id)!.address;

    // The reports arrive, and are held back for the blackout before they count.
    let sawBlackout = false;
    const weighted = await statusUntil(
      lb,
      (s) => s.balancer?.mode === "weighted",
      20_000,
      "the weights to be in use",
      (s) => {
        const bs = s.balancer?.backends ?? [];
        if (bs.length === 3 && bs.every((b) => b.reportedWeight > 0 && b.state === "blackout"))
          sawBlackout = true;
      },
    );
    assert.ok(sawBlackout, "reported weights were not held back by the blackout");
    const weightOf = (s: WrrStatus, id: string) => s.backends.find((b) => b.key === keyOf(id))?.weight;
    assert.deepEqual(
      ["a", "b", "c"].map((id) => weightOf(weighted, id)),
      [400, 200, 100],
      JSON.stringify(weighted),
    );
    for (const b of backends) assert.ok(b.orca().reports > 0);

    const total = 1400;
    assertShares(await spread(lb.listen, total, 4), { a: 4, b: 2, c: 1 }, total);
  });

  it("spreads calls equally when the backends send no load reports", { timeout: 60_000 }, async () => {
    for (const id of ["a", "b", "c"]) backends.push(await startOrcaBackend({ id }));
    lb = await startRosterLb(
      dir,
      backends,
      "{ name: weighted_round_robin, blackoutPeriod: 0s, weightUpdatePeriod: 100ms, oobReportingPeriod: 200ms }",
    );
    await statusUntil(
      lb,
      (s) => s.backends.length === 3 && s.backends.every((b) => b.state === "ready"),
      20_000,
      "every backend to be ready",
    );
    const total = 900;
    assertShares(await spread(lb.listen, total, 4), { a: 1, b: 1, c: 1 }, total);
    const s = await lb.status();
    assert.equal(s.balancer?.mode, "equal", JSON.stringify(s));
    assert.deepEqual(
      s.backends.map((b) => b.weight),
      [1, 1, 1],
    );
    assert.deepEqual(
      s.balancer?.backends.map((b) => b.state),
      ["no-report", "no-report", "no-report"],
    );
  });
});
