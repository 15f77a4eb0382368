// bench/slow-backend: 4 capacity-limited backends, one 10× slower; the same open-loop offered load
// through `roster lb` under round_robin, least_request and peak_ewma. Latency is measured from each
// call's intended start (no coordinated omission). Issue 3's goal: p99 under peak_ewma ≤ 1/5 of
// round_robin's, least_request in between.
//
// usage: node --import tsx bench/slow-backend/run.ts [--rate 1000] [--duration 8] [--warmup 2] [--runs 3]
//        [--service-ms 1,1,1,10] [--policies round_robin,least_request,peak_ewma] [--out FILE.json]
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";

const root = fileURLToPath(new URL("../../", import.meta.url));
const opts = new Command()
  .option("--rate <n>", "calls per second, open loop", Number, 1000)
  .option("--duration <s>", "measured seconds per run", Number, 8)
  .option("--warmup <s>", "seconds of the same load before measuring", Number, 2)
  .option("--runs <n>", "runs per policy (medians reported)", Number, 3)
  .option("--service-ms <list>", "service time of each backend", "1,1,1,10")
  .option("--policies <list>", "policies to compare", "round_robin,least_request,peak_ewma")
  .option("--out <file>", "write every run as JSON")
  .parse()
  .opts<{
    rate: number;
    duration: number;
    warmup: number;
    runs: number;
    serviceMs: string;
    policies: string;
    out?: string;
  }>();

const children = new Set<ChildProcess>();
const killAll = () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
};
process.on("exit", killAll);
process.on("SIGINT", () => process.exit(130));

function startChild(
  args: string[],
  ready: RegExp,
  stream: "stdout" | "stderr",
): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    child.once("exit", () => children.delete(child));
    let buffered = "";
    const timer = setTimeout(
      () => reject(new Error(`${args.join(" ")} did not start:\n${buffered}`)),
      30_000,
    );
    child[stream]!.on("data", (d: Buffer) => {
      buffered += d.toString();
      const m = ready.exec(buffered);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(" ")} exited with ${code}:\n${buffered}`));
    });
  });
}

interface RunResult {
  policy: string;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  calls: number;
  errors: number;
  shares: Record<string, number>;
}

async function oneRun(policy: string): Promise<RunResult> {
  // Fresh backends every run: a queue left on the slow backend would carry over.
  const backends = await startChild(
    ["--import", "tsx", "bench/slow-backend/backends.ts", opts.serviceMs],
    /PORTS ([\d,]+)\n/,
    "stdout",
  );
  const ports = backends.match[1]!.split(",");
  const lb = await startChild(
    [
      "bin/roster.js",
      "lb",
      "--listen",
      "127.0.0.1:0",
      "--policy",
      policy,
      ...ports.flatMap((p) => ["--backend", `127.0.0.1:${p}`]),
    ],
    /"listen":"([^"]+)"/,
    "stderr",
  );
  // The load: `roster bench`, open loop (latency from each call's intended start), shares by the
  // reply's served_by field.
  const dir = mkdtempSync(join(tmpdir(), "roster-slow-backend-"));
  const jsonFile = join(dir, "report.json");
  try {
    const bench = spawn(
      process.execPath,
      [
        "bin/roster.js",
        "bench",
        "--target",
        lb.match[1]!,
        "--proto",
        "proto/roster/demo/echo.proto",
        "--call",
        "roster.demo.Echo/Echo",
        "--payload-size",
        "64",
        "--rate",
        String(opts.rate),
        "--duration",
        `${opts.duration}s`,
        "--warmup",
        `${opts.warmup}s`,
        "--timeout",
        "120s",
        "--backend-field",
        "served_by",
        "--no-progress",
        "--json",
        jsonFile,
      ],
      { cwd: root, stdio: ["ignore", "ignore", "inherit"] },
    );
    children.add(bench);
    const code = await new Promise<number | null>((r) => bench.once("exit", (c) => r(c)));
    children.delete(bench);
    if (code !== 0) throw new Error(`roster bench exited with ${code}`);
    const report = JSON.parse(readFileSync(jsonFile, "utf8")) as {
      targets: Array<{
        calls: number;
        errorCount: number;
        latencyMs: { p50: number; p99: number; p999: number; max: number };
        backends: Array<{ backend: string; calls: number }>;
      }>;
    };
    const t = report.targets[0]!;
    return {
      policy,
      p50: t.latencyMs.p50,
      p99: t.latencyMs.p99,
      p999: t.latencyMs.p999,
      max: t.latencyMs.max,
      calls: t.calls,
      errors: t.errorCount,
      shares: Object.fromEntries(t.backends.map((b) => [b.backend, b.calls])),
    };
  } finally {
    lb.child.kill("SIGTERM");
    backends.child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const policies = opts.policies.split(",");
const all: RunResult[] = [];
for (let r = 0; r < opts.runs; r++) {
  // Alternate policies within each round so drift reaches all of them alike.
  for (const policy of r % 2 === 0 ? policies : [...policies].reverse()) {
    const res = await oneRun(policy);
    all.push(res);
    process.stderr.write(`run ${r + 1} ${policy}: p99 ${res.p99.toFixed(1)} ms, errors ${res.errors}\n`);
  }
}
const slowName = Object.keys(all[0]!.shares).find((k) =>
  k.includes(`(${Math.max(...opts.serviceMs.split(",").map(Number))} ms)`),
);
const rows = policies.map((policy) => {
  const runs = all.filter((x) => x.policy === policy);
  const slowShare = median(runs.map((x) => (x.shares[slowName ?? ""] ?? 0) / Math.max(1, x.calls)));
  return {
    policy,
    p50: median(runs.map((x) => x.p50)),
    p99: median(runs.map((x) => x.p99)),
    p999: median(runs.map((x) => x.p999)),
    slowShare,
    errors: runs.reduce((a, x) => a + x.errors, 0),
  };
});
const rr = rows.find((x) => x.policy === "round_robin");
const lines = [
  `Offered load ${opts.rate} calls/s open loop, ${opts.duration} s measured after ${opts.warmup} s, backends ${opts.serviceMs} ms (FIFO, one at a time), medians of ${opts.runs} runs:`,
  "",
  "| policy | p50 ms | p99 ms | p99.9 ms | share to the slow backend | p99 ÷ round_robin | errors |",
  "|---|---|---|---|---|---|---|",
  ...rows.map(
    (x) =>
      `| ${x.policy} | ${x.p50.toFixed(1)} | ${x.p99.toFixed(1)} | ${x.p999.toFixed(1)} | ${(100 * x.slowShare).toFixed(1)} % | ${rr ? (x.p99 / rr.p99).toFixed(3) : "—"} | ${x.errors} |`,
  ),
];
process.stdout.write(`${lines.join("\n")}\n`);
if (opts.out) writeFileSync(opts.out, JSON.stringify({ options: opts, runs: all, rows }, null, 2));
killAll();
