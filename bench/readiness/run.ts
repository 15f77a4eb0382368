// bench/readiness — how soon a backend that comes up is used through a proxy (README.md beside this).
//
//   node --import tsx bench/readiness/run.ts [--runs 3] [--paths roster,haproxy,nginx] [--down-s 8] [--out FILE.json]
//     [--baseline DIR]   also path "baseline": roster run from another checkout (DIR/src/cli/main.ts), for A/B
//
// Per path and run: the proxy starts first with one backend whose port is closed; a grpc-js client
// calls through it every 10 ms (2 s deadline, no wait-for-ready); the backend starts; 3 s later it is
// SIGKILLed, stays down `--down-s` seconds (the client keeps calling), and starts again on the same
// port. Measured each time: backend port accepting → the first call that succeeds (its end, at the
// client), and the calls started once the backend had been up 1 s that failed (over the next 2 s).
import { type ChildProcess, fork } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { loadEcho } from "../proxy-overhead/echo.ts";
import { haproxyConfig, nginxConfig, type PathSettings } from "../proxy-overhead/paths.ts";
import { type Child, ChildRegistry, freePort, lastLines, waitForPort } from "../proxy-overhead/proc.ts";
import type { ReadyMessage } from "./backend.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const PATHS = ["roster", "haproxy", "nginx", "baseline"] as const;
type PathName = (typeof PATHS)[number];
const CALL_EVERY_MS = 10;
const DEADLINE_MS = 2000;
const UP_FOR_MS = 3000;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const runs = Number(arg("runs", "3"));
const downMs = Number(arg("down-s", "8")) * 1000;
const paths = arg("paths", "roster,haproxy,nginx").split(",") as PathName[];
const out = arg("out", "");
const baseline = arg("baseline", "");
if (baseline !== "" && !paths.includes("baseline")) paths.push("baseline");
if (paths.includes("baseline") && baseline === "") throw new Error("--paths baseline needs --baseline DIR");
for (const p of paths) if (!PATHS.includes(p)) throw new Error(`--paths: unknown path ${p}`);

const now = () => performance.timeOrigin + performance.now();
const registry = new ChildRegistry();
const tmp = mkdtempSync(path.join(tmpdir(), "roster-readiness-"));
process.on("exit", () => {
  registry.killAllSync();
  rmSync(tmp, { recursive: true, force: true });
});
process.on("SIGINT", () => process.exit(130));

async function startProxy(name: PathName, backendPort: number): Promise<{ proxy: Child; port: number }> {
  const port = await freePort();
  const settings: PathSettings = {
    concurrency: 1,
    streamsPerConnection: 1,
    tmpDir: tmp,
    rosterBin: "",
    rosterArgs: [],
    nginxKeepalive: undefined,
  };
  let proxy: Child;
  if (name === "roster" || name === "baseline") {
    proxy = registry.spawn(
      "roster",
      process.execPath,
      [
        "--import",
        "tsx",
        "src/cli/main.ts",
        "lb",
        "--listen",
        `127.0.0.1:${port}`,
        "--backend",
        `127.0.0.1:${backendPort}`,
        "--policy",
        "round_robin",
      ],
      { cwd: name === "baseline" ? baseline : ROOT },
    );
  } else if (name === "haproxy") {
    const conf = path.join(tmp, `haproxy-${port}.cfg`);
    writeFileSync(conf, haproxyConfig(tmp, port, [backendPort], settings));
    proxy = registry.spawn("haproxy", "/usr/sbin/haproxy", ["-db", "-f", conf]);
  } else {
    const conf = path.join(tmp, `nginx-${port}.conf`);
    writeFileSync(conf, nginxConfig(tmp, port, [backendPort], settings));
    proxy = registry.spawn("nginx", "/usr/sbin/nginx", [
      "-p",
      tmp,
      "-c",
      conf,
      "-e",
      path.join(tmp, "nginx.log"),
    ]);
  }
  await waitForPort(port, proxy, 20_000);
  return { proxy, port };
}

/** Starts the backend on `port`; resolves with the time its port accepted. */
function startBackend(port: number): Promise<{ child: ChildProcess; upAt: number }> {
  const child = fork(path.join(HERE, "backend.ts"), [String(port)], {
    execArgv: ["--import", "tsx"],
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe", "ipc"],
  });
  let err = "";
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`backend not up in 20 s: ${err}`)), 20_000);
    child.on("message", (m: ReadyMessage) => {
      clearTimeout(timer);
      resolve({ child, upAt: m.at });
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`backend exited (${code}): ${lastLines(err)}`));
    });
  });
}

function killBackend(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
  });
}

interface Call {
  start: number;
  end?: number;
  code?: number;
}

interface Phase {
  /** Backend up → first call succeeding (ms); undefined if none did. */
  firstOkMs: number | undefined;
  /** Calls started ≥ 1 s after up (for 2 s) that failed, of how many. */
  failedAfter1s: number;
  callsAfter1s: number;
  /** Calls that failed between up and up + 1 s (for the record). */
  failedFirstSecond: number;
}

function phase(calls: readonly Call[], from: number, upAt: number): Phase {
  let first: number | undefined;
  let failedAfter1s = 0;
  let callsAfter1s = 0;
  let failedFirstSecond = 0;
  for (const c of calls) {
    if (c.start < from) continue;
    if (c.code === grpc.status.OK && c.end !== undefined && c.end >= upAt)
      first = Math.min(first ?? Number.POSITIVE_INFINITY, c.end - upAt);
    if (c.start >= upAt + 1000 && c.start < upAt + UP_FOR_MS) {
      callsAfter1s++;
      if (c.code !== grpc.status.OK) failedAfter1s++;
    }
    if (c.start >= upAt && c.start < upAt + 1000 && c.code !== grpc.status.OK) failedFirstSecond++;
  }
  return { firstOkMs: first, failedAfter1s, callsAfter1s, failedFirstSecond };
}

async function measure(name: PathName): Promise<{ first: Phase; afterDown: Phase }> {
  const backendPort = await freePort();
  const { proxy, port } = await startProxy(name, backendPort);
  const { Client } = loadEcho();
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const calls: Call[] = [];
  const payload = Buffer.alloc(64, 1);
  const timer = setInterval(() => {
    const call: Call = { start: now() };
    calls.push(call);
    client.Echo({ payload }, { deadline: Date.now() + DEADLINE_MS }, (error) => {
      call.end = now();
      call.code = error === null ? grpc.status.OK : error.code;
    });
  }, CALL_EVERY_MS);
  try {
    await sleep(1000); // the client calls a proxy whose backend is not there yet
    const from1 = now();
    const b1 = await startBackend(backendPort);
    await sleep(UP_FOR_MS + DEADLINE_MS - (now() - b1.upAt));
    const first = phase(calls, from1, b1.upAt);
    await killBackend(b1.child);
    await sleep(downMs);
    const from2 = now();
    const b2 = await startBackend(backendPort);
    await sleep(UP_FOR_MS + DEADLINE_MS - (now() - b2.upAt));
    const afterDown = phase(calls, from2, b2.upAt);
    await killBackend(b2.child);
    return { first, afterDown };
  } finally {
    clearInterval(timer);
    client.close();
    await registry.kill(proxy);
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const results: Record<string, { first: Phase; afterDown: Phase }[]> = {};
for (let run = 1; run <= runs; run++) {
  // Rotate the order so drift reaches every path alike.
  const order = paths.map((_, i) => paths[(i + run - 1) % paths.length]!);
  for (const name of order) {
    try {
      const r = await measure(name);
      const list = results[name] ?? [];
      list.push(r);
      results[name] = list;
      console.error(
        `run ${run} ${name}: first start ${r.first.firstOkMs?.toFixed(1)} ms, after ${downMs / 1000} s down ${r.afterDown.firstOkMs?.toFixed(1)} ms; failed once up 1 s: ${r.first.failedAfter1s}/${r.first.callsAfter1s} + ${r.afterDown.failedAfter1s}/${r.afterDown.callsAfter1s}`,
      );
    } catch (err) {
      console.error(`run ${run} ${name}: not available (${(err as Error).message})`);
    }
  }
}

const fmt = (xs: (number | undefined)[]) =>
  `${median(xs.map((x) => x ?? Number.POSITIVE_INFINITY)).toFixed(0)} (${xs.map((x) => (x === undefined ? "none" : x.toFixed(0))).join(", ")})`;
const lines = [
  `| path | up → first OK, first start, ms: median (runs) | up → first OK, after ${downMs / 1000} s down, ms | calls failed once up 1 s | calls failed in the first second up |`,
  "| --- | --- | --- | --- | --- |",
];
for (const name of paths) {
  const rs = results[name];
  if (rs === undefined) {
    lines.push(`| ${name} | not available | | | |`);
    continue;
  }
  const failed = rs.reduce((n, r) => n + r.first.failedAfter1s + r.afterDown.failedAfter1s, 0);
  const of = rs.reduce((n, r) => n + r.first.callsAfter1s + r.afterDown.callsAfter1s, 0);
  const early = rs.map((r) => `${r.first.failedFirstSecond}+${r.afterDown.failedFirstSecond}`).join(", ");
  lines.push(
    `| ${name} | ${fmt(rs.map((r) => r.first.firstOkMs))} | ${fmt(rs.map((r) => r.afterDown.firstOkMs))} | ${failed} of ${of} | ${early} |`,
  );
}
console.log(lines.join("\n"));
if (out !== "") writeFileSync(out, JSON.stringify({ runs, downMs, results, table: lines }, null, 2));
process.exit(0);
