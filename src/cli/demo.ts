import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import cliProgress from "cli-progress";
import { serve } from "../server/supervisor.ts";

/**
 * `roster demo`: the example service (examples/echo-service.ts) under `roster serve` with N workers,
 * and the same handler under Node's `cluster` with N workers, each driven from ONE client connection.
 * Prints each worker's share and the latency percentiles side by side: cluster hands out connections,
 * roster balances calls.
 */
export interface DemoOptions {
  workers: number;
  calls: number;
  concurrency: number;
  workUs: number;
}

const protoPath = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));
const clusterScript = fileURLToPath(
  new URL(`./demo-cluster${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url),
);
const exampleModule = fileURLToPath(new URL("../../examples/echo-service.ts", import.meta.url));

interface RunResult {
  label: string;
  shares: Map<string, number>;
  latencies: number[];
  seconds: number;
  errors: number;
}

export async function runDemo(o: DemoOptions): Promise<void> {
  let clusterProc: ChildProcess | undefined;
  process.once("exit", () => clusterProc?.kill("SIGTERM"));
  process.stdout.write(
    `Starting ${o.workers} workers twice: roster serve, and Node cluster (CPU-bound handler of ${o.workUs} µs)…\n`,
  );
  const server = await serve({
    module: exampleModule,
    workers: o.workers,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
  });
  try {
    const port = await freePort();
    clusterProc = await startCluster(port, o.workers);
    const results: RunResult[] = [];
    results.push(await drive("Node cluster (hands out connections)", `127.0.0.1:${port}`, o));
    results.push(await drive("roster serve (balances calls)", server.address, o));
    printReport(results, o);
  } finally {
    clusterProc?.kill("SIGTERM");
    await server.close();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function startCluster(port: number, workers: number): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    // From the TypeScript sources (no build) the child needs tsx too.
    const loader = clusterScript.endsWith(".ts") ? ["--import", "tsx"] : [];
    const child = spawn(process.execPath, [...loader, clusterScript, String(port), String(workers)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const timer = setTimeout(() => reject(new Error("the Node cluster did not start within 30 s")), 30_000);
    child.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("READY")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the Node cluster exited with code ${code} before listening`));
    });
  });
}

async function drive(label: string, target: string, o: DemoOptions): Promise<RunResult> {
  const def = protoLoader.loadSync(protoPath, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    roster: { demo: { Echo: grpc.ServiceClientConstructor } };
  };
  // ONE client, ONE HTTP/2 connection — as a real gRPC client keeps.
  const client = new pkg.roster.demo.Echo(
    target,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    Echo(
      req: unknown,
      opts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: { served_by: string }) => void,
    ): void;
  };
  const shares = new Map<string, number>();
  const latencies: number[] = [];
  let errors = 0;
  let started = 0;
  const bar = new cliProgress.SingleBar(
    {
      format: `  ${label.padEnd(48)} {bar} {value}/{total} calls`,
      hideCursor: true,
      noTTYOutput: false,
      notTTYSchedule: 2000,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(o.calls, 0);
  const t0 = performance.now();
  const payload = Buffer.alloc(64, 1);
  const worker = async () => {
    // Bounded: each loop iteration claims one of o.calls.
    while (started < o.calls) {
      started++;
      const s = performance.now();
      await new Promise<void>((resolve) => {
        client.Echo({ payload, work_us: o.workUs }, { deadline: Date.now() + 30_000 }, (err, res) => {
          if (err || !res) errors++;
          else shares.set(res.served_by, (shares.get(res.served_by) ?? 0) + 1);
          latencies.push(performance.now() - s);
          bar.increment();
          resolve();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  bar.stop();
  client.close();
  return { label, shares, latencies, seconds, errors };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function printReport(results: RunResult[], o: DemoOptions): void {
  const workers = Array.from({ length: o.workers }, (_, i) => `worker-${i + 1}`);
  const lines: string[] = [];
  lines.push("");
  lines.push(`One client connection, ${o.calls} calls, ${o.concurrency} in flight, ${o.workers} workers:`);
  lines.push("");
  lines.push(`| path | ${workers.join(" | ")} | max/min share | calls/s | p50 ms | p99 ms | errors |`);
  lines.push(`|---|${workers.map(() => "---").join("|")}|---|---|---|---|---|`);
  for (const r of results) {
    const counts = workers.map((w) => r.shares.get(w) ?? 0);
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    const max = Math.max(...counts);
    const min = Math.min(...counts);
    const sorted = [...r.latencies].sort((a, b) => a - b);
    lines.push(
      `| ${r.label} | ${counts.map((c) => `${((100 * c) / total).toFixed(1)}%`).join(" | ")} | ${min === 0 ? "∞" : (max / min).toFixed(2)} | ${(o.calls / r.seconds).toFixed(0)} | ${percentile(sorted, 50).toFixed(2)} | ${percentile(sorted, 99).toFixed(2)} | ${r.errors} |`,
    );
  }
  lines.push("");
  lines.push(
    "Node cluster gives the client's one connection to one worker (one core works); roster serve spreads every call.",
  );
  process.stdout.write(`${lines.join("\n")}\n`);
}
