import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import cliProgress from "cli-progress";
import { staticEndpoint } from "../core/endpoint.ts";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { startLb } from "../proxy/lb.ts";

/**
 * `roster demo`: four worker processes, and ONE client connection driving them two ways —
 * through a connection-level balancer (what Node cluster, pm2, SO_REUSEPORT and L4 balancers do) and
 * through `roster lb` (per call). Prints each worker's share and the latency percentiles.
 */
export interface DemoOptions {
  workers: number;
  calls: number;
  concurrency: number;
  workUs: number;
}

const protoPath = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));
const backendScript = fileURLToPath(
  new URL(`./demo-backend${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url),
);

interface RunResult {
  label: string;
  shares: Map<string, number>;
  latencies: number[];
  seconds: number;
  errors: number;
}

export async function runDemo(o: DemoOptions): Promise<void> {
  const children: ChildProcess[] = [];
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  };
  process.once("exit", cleanup);
  try {
    process.stdout.write(
      `Starting ${o.workers} worker processes (grpc-js, CPU-bound handler of ${o.workUs} µs)…\n`,
    );
    const ports = await Promise.all(
      Array.from({ length: o.workers }, (_, i) => startWorker(`worker-${i + 1}`, children)),
    );
    const backends = ports.map((port) => staticEndpoint({ kind: "tcp", host: "127.0.0.1", port }));
    const lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends,
      policy: createDefaultRegistry().resolve("least_request", {}),
    });
    const l4 = await startConnectionBalancer(ports);

    const results: RunResult[] = [];
    results.push(await drive("connection-level balancer (like cluster/pm2/L4)", `127.0.0.1:${l4.port}`, o));
    results.push(await drive("roster lb, least_request (per call)", lb.server.address, o));
    printReport(results, o);

    await lb.close(1000);
    l4.close();
  } finally {
    cleanup();
  }
}

function startWorker(name: string, children: ChildProcess[]): Promise<number> {
  return new Promise((resolve, reject) => {
    // From the TypeScript sources (no build) the child needs tsx too.
    const loader = backendScript.endsWith(".ts") ? ["--import", "tsx"] : [];
    const child = spawn(process.execPath, [...loader, backendScript, name], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(child);
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 20 s`)), 20_000);
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with code ${code} before listening`));
    });
  });
}

/** A TCP proxy that hands each new connection to the next worker, as connection-level balancers do. */
function startConnectionBalancer(ports: number[]): Promise<{ port: number; close(): void }> {
  let next = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port: ports[next++ % ports.length]! });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as net.AddressInfo;
      resolve({
        port: address.port,
        close: () => {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    }),
  );
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
    "A connection-level balancer gives the client's one connection to one worker; roster balances each call.",
  );
  process.stdout.write(`${lines.join("\n")}\n`);
}
