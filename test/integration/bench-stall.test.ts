// `roster bench` acceptance: the open loop shows a 1 s server stall in its tail (latency measured from each
// call's intended start), while a closed loop hides it (its lanes stall with the server, so the calls that
// would have been sent are never sent: coordinated omission). The server is a child process paused with
// SIGSTOP / SIGCONT.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { BenchReport } from "../../src/bench/report.ts";
import { BENCH_ECHO_PROTO, type BenchEchoChild, spawnBenchEcho } from "../support/bench-echo-server.ts";
import { expectSuccess, runRoster } from "../support/roster-cli.ts";

const dir = mkdtempSync(join(tmpdir(), "roster-bench-stall-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const WARMUP_MS = 500;
const STALL_MS = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a bench with `load` flags and pauses the server for 1 s, 1 s into the measured window. */
async function benchWithStall(name: string, load: readonly string[]): Promise<BenchReport> {
  const server: BenchEchoChild = await spawnBenchEcho(["--id", name]);
  try {
    const json = join(dir, `${name}.json`);
    const run = runRoster(
      [
        "bench",
        "--target",
        server.address,
        "--proto",
        BENCH_ECHO_PROTO,
        "--call",
        "roster.benchtest.Echo/Unary",
        "--data",
        '{"message":"stall"}',
        "--warmup",
        `${WARMUP_MS}ms`,
        "--duration",
        "3s",
        "--json",
        json,
        ...load,
      ],
      { timeoutMs: 25_000 },
    );
    // The bench's first (probe) call marks its start; measuring begins WARMUP_MS later.
    await Promise.race([server.firstCall(), run.then(() => undefined)]);
    await sleep(WARMUP_MS + 1000);
    process.kill(server.pid, "SIGSTOP");
    await sleep(STALL_MS);
    process.kill(server.pid, "SIGCONT");
    const r = await run;
    expectSuccess(r, `${name} bench`);
    return JSON.parse(readFileSync(json, "utf8")) as BenchReport;
  } finally {
    try {
      process.kill(server.pid, "SIGCONT");
    } catch {
      // already gone
    }
    await server.kill();
  }
}

describe("roster bench under a 1 s server stall", { timeout: 50_000 }, () => {
  it("shows the stall in the open loop's tail and hides it in the closed loop's", async (t) => {
    const open = await benchWithStall("open", ["--rate", "200"]);
    const closed = await benchWithStall("closed", ["--concurrency", "2"]);
    const o = open.targets[0]!;
    const c = closed.targets[0]!;
    const figures =
      `open loop: ${o.calls} calls, p50 ${o.latencyMs.p50} p99 ${o.latencyMs.p99} p99.9 ${o.latencyMs.p999} ` +
      `max ${o.latencyMs.max} ms; closed loop: ${c.calls} calls, p50 ${c.latencyMs.p50} p99 ${c.latencyMs.p99} ` +
      `p99.9 ${c.latencyMs.p999} max ${c.latencyMs.max} ms`;
    t.diagnostic(figures);

    assert.equal(o.errorCount + c.errorCount, 0, figures);
    // The open loop kept its schedule through the stall: ~200/s × 3 s, none skipped.
    assert.ok(o.calls >= 0.95 * 600 && o.calls <= 601, figures);
    // ...so the calls due during the stall waited up to the whole second, and the tail shows it.
    assert.ok(o.latencyMs.p999 >= 0.9 * STALL_MS, `open-loop p99.9 should show the stall; ${figures}`);
    assert.ok(o.latencyMs.max >= 0.9 * STALL_MS, figures);
    assert.ok(o.latencyMs.p99 >= 0.5 * STALL_MS, `about 1 in 4 calls fell in the stall; ${figures}`);
    // The closed loop's 2 lanes simply waited: only 2 calls saw the stall, its p99 stays far below it.
    assert.ok(c.latencyMs.max >= 0.9 * STALL_MS, `the stall is there, in the max only; ${figures}`);
    assert.ok(c.latencyMs.p99 < 0.25 * STALL_MS, `closed-loop p99 should hide the stall; ${figures}`);
    assert.ok(o.latencyMs.p999 > 4 * c.latencyMs.p99, figures);
  });
});
