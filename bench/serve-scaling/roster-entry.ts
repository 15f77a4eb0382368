// `roster serve` of the example service, through the library API:
//   node --import tsx bench/serve-scaling/roster-entry.ts N [--bare-front]
// This process is the supervisor (it runs serve(): the front, balancing every call, and the
// supervision of N worker processes, its children). By default the front gets the same per-call hooks
// as the `roster serve` CLI (Prometheus metrics, a logger at "warn"); --bare-front leaves them out.
// Tells its parent {type:"ready", port, workers} over IPC and stops on SIGTERM/SIGINT or when its
// parent goes away.
import { lbHooks } from "../../src/cli/wiring.ts";
import { createLogger } from "../../src/observe/log.ts";
import { createProxyMetrics } from "../../src/observe/metrics.ts";
import { type RosterServer, serve } from "../../src/server/supervisor.ts";
import { SERVICE_MODULE } from "./echo-server.ts";
import type { EntryMessage } from "./protocol.ts";

function tell(message: EntryMessage): void {
  if (process.send !== undefined) process.send(message);
  else console.log(JSON.stringify(message));
}

const count = Number(process.argv[2] ?? "1");
if (!Number.isInteger(count) || count < 1 || count > 64) {
  console.error(`roster-entry: bad worker count ${process.argv[2]}`);
  process.exit(2);
}
const bare = process.argv.includes("--bare-front");

let server: RosterServer | undefined;
let stopping = false;
const stop = (code: number) => {
  if (stopping) return;
  stopping = true;
  const hard = setTimeout(() => process.exit(code), 5000);
  hard.unref();
  void (server?.close() ?? Promise.resolve()).finally(() => process.exit(code));
};
process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));
process.on("disconnect", () => stop(0));

try {
  const log = createLogger({ name: "serve-scaling", level: "warn" });
  server = await serve({
    module: SERVICE_MODULE,
    workers: count,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    drainGraceMs: 2000,
    ...(bare ? {} : { lb: lbHooks(log, createProxyMetrics()) }),
  });
  const port = server.lb.server.port;
  if (port === undefined) throw new Error(`no TCP port in ${server.address}`);
  tell({ type: "ready", port, workers: server.workers().map((w) => w.pid ?? 0) });
} catch (err) {
  tell({ type: "failed", message: (err as Error).message });
  process.exit(1);
}
