// `roster bench` acceptance: against a grpc-js echo server that answers each call after 50 ms, roster bench
// and h2load agree on p50 within 20% at a load neither saturates (50 calls/s, spaced: roster's open loop,
// h2load --rps), measured as docs/benchmarks.md's Method says (h2load's per-request log, third column, not
// its summary).
//
// Why 50 ms at 50 calls/s: with an instant server the p50 is a few hundred µs, mostly the client process's
// own wake-ups, and on a shared 2-core machine a Node client (~1 ms of CPU per call) loses far more to
// other processes than h2load (tens of µs): at 500 calls/s on a 10 ms server, roster's p50 was 2x h2load's
// while two other processes kept both cores busy. That measures the machine's load, not roster bench. At
// 50 calls/s the client needs a few % of a core, and 20% of a 50 ms answer (10 ms) is above scheduling
// noise: with both cores kept busy by other processes, the two agreed within 3%. Any measuring error of
// roster bench (a wrong unit, timing the send instead of the reply, counting time before the call was
// due) still shows. Both generators get the same 1 s warm-up and 3 s run, in alternating order; a round
// whose figures disagree is repeated, up to 3 rounds, and every round's figures are printed with the CPU
// other processes used meanwhile. No round agreeing fails the test.
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
const RATE = 50;
const CALL = "roster.benchtest.Echo/Unary";
const DATA = { message: "hello, roster" };
const SECONDS = 3;
/** How long the server takes to answer each call. */
const DELAY_MS = 50;

const dir = mkdtempSync(join(tmpdir(), "roster-bench-h2load-"));
let server: BenchEchoChild;

before(async () => {
  assert.ok(existsSync(H2LOAD), `${H2LOAD} is missing: apt-get install -y nghttp2-client`);
  server = await spawnBenchEcho(["--id", "agree", "--delay-ms", String(DELAY_MS)]);
  writeFileSync(join(dir, "req.bin"), requestFrame());
  // Warm the server's JIT up (a burst of 1000 calls), so that neither tool's first run pays for it.
  await h2load(["-c1", "-m8", "-n", "1000"]);
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
  it("agree on p50 within 20% at 50 calls/s on a server that answers in 50 ms", async (t) => {
    const rounds: string[] = [];
    let agreed = false;
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
      // Both figures include the server's 50 ms, so neither can be below it.
      assert.ok(h.p50 >= DELAY_MS && r.p50 >= DELAY_MS, `p50 below the server's ${DELAY_MS} ms`);
      agreed = Math.abs(ratio - 1) <= 0.2;
      const line =
        `round ${round}: p50 roster ${r.p50.toFixed(3)} ms vs h2load ${h.p50.toFixed(3)} ms (ratio ${ratio.toFixed(2)}); ` +
        `p99 roster ${r.p99.toFixed(3)} vs h2load ${h.p99.toFixed(3)}; calls ${r.n} / ${h.n}; ` +
        `other processes ${noise.foreignCores.toFixed(2)} cores (${noise.top.join(" ")}), steal ${noise.stealCores.toFixed(2)}`;
      rounds.push(line);
      t.diagnostic(line);
    }
    assert.ok(agreed, `p50 disagreed by more than 20% in every round:\n${rounds.join("\n")}`);
  });
});
