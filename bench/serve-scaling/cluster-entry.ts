// Node's `cluster` module in front of the example service, and the direct baseline:
//   node --import tsx bench/serve-scaling/cluster-entry.ts N
// N ≥ 1: the primary forks N workers, each a grpc-js server with the example's handler on one shared
// 127.0.0.1 port (cluster's default round-robin: the primary accepts connections and hands each one to
// a worker — per connection, never per call). N = 0: no cluster, this process is the grpc-js server
// (the 1-process baseline). Tells its parent {type:"ready", port, workers} over IPC and stops on
// SIGTERM/SIGINT or when its parent goes away.
import cluster, { type Worker } from "node:cluster";
import net from "node:net";
import { startEchoServer } from "./echo-server.ts";
import type { EntryMessage } from "./protocol.ts";

type WorkerReady = { type: "worker-ready"; port: number };

function tell(message: EntryMessage): void {
  if (process.send !== undefined) process.send(message);
  else console.log(JSON.stringify(message));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no free port"))));
    });
  });
}

async function primary(count: number): Promise<void> {
  const port = await freePort();
  const workers: Worker[] = [];
  let stopping = false;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const w of workers) w.process.kill("SIGKILL");
    process.exit(code);
  };
  process.on("SIGTERM", () => stop(0));
  process.on("SIGINT", () => stop(0));
  process.on("disconnect", () => stop(0));
  cluster.on("exit", (w, code, signal) => {
    if (stopping) return;
    tell({ type: "failed", message: `cluster worker ${w.process.pid} exited (${signal ?? `code ${code}`})` });
    stop(1);
  });
  await Promise.all(
    Array.from({ length: count }, (_, i) => {
      const w = cluster.fork({ ROSTER_WORKER_ID: String(i + 1), SERVE_SCALING_PORT: String(port) });
      workers.push(w);
      return new Promise<void>((resolve) =>
        w.on("message", (m: WorkerReady) => {
          if (m.type === "worker-ready") resolve();
        }),
      );
    }),
  );
  tell({ type: "ready", port, workers: workers.map((w) => w.process.pid ?? 0) });
}

async function worker(): Promise<void> {
  const { port } = await startEchoServer(Number(process.env.SERVE_SCALING_PORT));
  process.on("disconnect", () => process.exit(0));
  process.on("SIGINT", () => {}); // the primary stops us
  process.send?.({ type: "worker-ready", port } satisfies WorkerReady);
}

async function direct(): Promise<void> {
  process.env.ROSTER_WORKER_ID = "1"; // served_by "worker-1", read when the module loads
  const { port } = await startEchoServer(0);
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
  process.on("disconnect", () => process.exit(0));
  tell({ type: "ready", port, workers: [process.pid] });
}

const count = Number(process.argv[2] ?? "0");
if (!Number.isInteger(count) || count < 0 || count > 64) {
  console.error(`cluster-entry: bad worker count ${process.argv[2]}`);
  process.exit(2);
}
const main = cluster.isPrimary ? (count > 0 ? primary(count) : direct()) : worker();
main.catch((err: Error) => {
  tell({ type: "failed", message: err.message });
  process.exit(1);
});
