// `roster bench` acceptance: against a grpc-js echo server, roster bench and h2load agree on p50 within
// 20% at a load neither saturates (500 calls/s, spaced: roster's open loop, h2load --rps), measured the
// way shared/BENCHMARKING.md describes (h2load's per-request log, third column, not its summary).
//
// The machine is shared and has 2 cores. Both generators get the same 1 s warm-up and 2 s run, in
// alternating order; a round whose figures disagree is repeated, up to 3 rounds, and every round's figures
// are printed with the CPU other processes used meanwhile. As shared/BENCHMARKING.md says, runs where other
// processes used the CPU do not count: a Node client (~1 ms of CPU per call at this spacing, mostly
// wake-ups) suffers far more from a busy machine than h2load (tens of µs). So the test fails when a round
// on a quiet enough machine (other processes < QUIET_CORES) disagreed and none agreed, and is skipped,
// saying why, when every round was too noisy to judge.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as protoLoader from "@grpc/proto-loader";
import type { BenchReport } from "../../src/bench/report.ts";
import { BENCH_ECHO_PROTO, type BenchEchoChild, spawnBenchEcho } from "../support/bench-echo-server.ts";
import { startForeignCpuMeter } from "../support/cpu-noise.ts";
import { expectSuccess, runRoster } from "../support/roster-cli.ts";

const H2LOAD = "/usr/bin/h2load";
const RATE = 500;
const CALL = "roster.benchtest.Echo/Unary";
const DATA = { message: "hello, roster" };
const SECONDS = 2;
/** Rounds where other processes used more CPU than this (in cores) cannot fail the test. */
const QUIET_CORES = 0.5;

const dir = mkdtempSync(join(tmpdir(), "roster-bench-h2load-"));
let server: BenchEchoChild;

before(async () => {
  assert.ok(existsSync(H2LOAD), `${H2LOAD} is missing: apt-get install -y nghttp2-client`);
  server = await spawnBenchEcho(["--id", "agree"]);
  writeFileSync(join(dir, "req.bin"), requestFrame());
  // Warm the server's JIT up (a burst of 5000 calls), so that neither tool's first run pays for it.
  await h2load(["-c1", "-m8", "-n", "5000"]);
});
after(async () => {
  await server.kill();
  rmSync(dir, { recursive: true, force: true });
});

/** A gRPC frame of the request: flag 0, 4-byte big-endian length, the protobuf bytes. */
function requestFrame(): Buffer {
  const def = protoLoader.loadSync(BENCH_ECHO_PROTO, { keepCase: true })["roster.benchtest.EchoRequest"];
  const body = (def as unknown as { serialize(v: object): Buffer }).serialize(DATA);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
}

function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** Runs h2load with `extra` flags on the request frame; resolves with its stdout. */
function h2load(extra: readonly string[], log?: string): Promise<string> {
  const args = [
    ...extra,
    "-d",
    join(dir, "req.bin"),
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    ...(log === undefined ? [] : ["--log-file", log]),
    `http://${server.address}/${CALL}`,
  ];
  return new Promise<string>((resolve, reject) => {
    const child = spawn(H2LOAD, args, { stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    child.stdout.setEncoding("utf8").on("data", (t: string) => {
      text += t;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(text);
      else reject(new Error(`h2load exited ${code}:\n${text}`));
    });
  });
}

/** h2load at RATE requests/s on one connection; p50 in ms from its per-request log (µs, column 3). */
async function h2loadP50(round: number): Promise<{ p50: number; p99: number; n: number }> {
  const log = join(dir, `h2load-${round}.log`);
  const out = await h2load(["-c1", "-m8", `--rps=${RATE}`, "--warm-up-time=1", "-D", String(SECONDS)], log);
  assert.match(out, /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, 0 failed, 0 errored/, out);
  const rows = readFileSync(log, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => l.split(/\s+/));
  assert.ok(
    rows.every((r) => r[1] === "200"),
    "every h2load request got HTTP 200",
  );
  const us = rows.map((r) => Number(r[2])).sort((a, b) => a - b);
  return { p50: percentile(us, 0.5) / 1000, p99: percentile(us, 0.99) / 1000, n: us.length };
}

async function rosterP50(round: number): Promise<{ p50: number; p99: number; n: number; errors: number }> {
  const json = join(dir, `roster-${round}.json`);
  const r = await runRoster(
    [
      "bench",
      "--target",
      server.address,
      "--proto",
      BENCH_ECHO_PROTO,
      "--call",
      CALL,
      "--data",
      JSON.stringify(DATA),
      "--rate",
      String(RATE),
      "--warmup",
      "1s",
      "--duration",
      `${SECONDS}s`,
      "--json",
      json,
    ],
    { timeoutMs: 20_000 },
  );
  expectSuccess(r, "roster bench");
  const t = (JSON.parse(readFileSync(json, "utf8")) as BenchReport).targets[0]!;
  return { p50: t.latencyMs.p50, p99: t.latencyMs.p99, n: t.calls, errors: t.errorCount };
}

describe("roster bench and h2load", { timeout: 60_000 }, () => {
  it("agree on p50 within 20% at 500 calls/s", async (t) => {
    const rounds: string[] = [];
    let agreed = false;
    let quietRounds = 0;
    // Bounded: at most 3 rounds of two 3-second runs.
    for (let round = 1; round <= 3 && !agreed; round++) {
      const meter = startForeignCpuMeter([]);
      const [h, r] =
        round % 2 === 1
          ? [await h2loadP50(round), await rosterP50(round)]
          : await rosterP50(round).then(async (r) => [await h2loadP50(round), r] as const);
      const noise = meter.stop();
      assert.equal(r.errors, 0, "every roster call was OK (h2load sees HTTP status only)");
      const expected = SECONDS * RATE;
      assert.ok(
        h.n >= 0.9 * expected && r.n >= 0.9 * expected,
        `both ran at ${RATE}/s: h2load ${h.n}, roster ${r.n}`,
      );
      const ratio = r.p50 / h.p50;
      agreed = Math.abs(ratio - 1) <= 0.2;
      if (noise.foreignCores < QUIET_CORES) quietRounds++;
      const line =
        `round ${round}: p50 roster ${r.p50.toFixed(3)} ms vs h2load ${h.p50.toFixed(3)} ms (ratio ${ratio.toFixed(2)}); ` +
        `p99 roster ${r.p99.toFixed(3)} vs h2load ${h.p99.toFixed(3)}; calls ${r.n} / ${h.n}; ` +
        `other processes ${noise.foreignCores.toFixed(2)} cores (${noise.top.join(" ")}), steal ${noise.stealCores.toFixed(2)}`;
      rounds.push(line);
      t.diagnostic(line);
    }
    if (!agreed && quietRounds === 0) {
      t.skip(
        `the machine was too busy to compare latencies in every round (other processes ≥ ${QUIET_CORES} cores)`,
      );
      return;
    }
    assert.ok(agreed, `p50 disagreed by more than 20% in every round:\n${rounds.join("\n")}`);
  });
});
