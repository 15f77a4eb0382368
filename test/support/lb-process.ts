// `roster lb` in a child process, for tests that measure the balancer apart from the test process (its
// memory under a large transfer, say).
//
//   node --import tsx test/support/lb-process.ts --policy round_robin --backend 127.0.0.1:PORT [--backend …]
//
// Prints "PORT <n>" once listening, then "RSS <bytes>" every 200 ms (and at once on SIGUSR2). Exits on
// SIGTERM or when its stdin closes, so it never outlives the test process.
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseAddress, staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { startLb } from "../../src/proxy/lb.ts";
import { stopWhenParentGoes } from "./child-lifetime.ts";
import { argValue, type ChildScript, spawnScript } from "./echo-backend.ts";

export const LB_PROCESS_SCRIPT = fileURLToPath(import.meta.url);

/** Starts this script as a child process; its RSS reports arrive through `onRss`. */
export async function spawnLbProcess(
  policy: string,
  backends: readonly string[],
  onRss: (bytes: number) => void,
): Promise<ChildScript> {
  const child = await spawnScript(LB_PROCESS_SCRIPT, [
    "--policy",
    policy,
    ...backends.flatMap((b) => ["--backend", b]),
  ]);
  child.onLine((line) => {
    const m = /^RSS (\d+)$/.exec(line);
    if (m !== null) onRss(Number(m[1]));
  });
  return child;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const backends: string[] = [];
  // Bounded by argv's length.
  for (let i = 0; i < argv.length; i++)
    if (argv[i] === "--backend" && argv[i + 1]) backends.push(argv[i + 1]!);
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: backends.map((b, i) => staticEndpoint(parseAddress(b, `backend[${i}]`))),
    policy: createDefaultRegistry().resolve(argValue(argv, "--policy") ?? "round_robin", {}),
  });
  process.stdout.write(`PORT ${lb.server.port}\n`);
  const report = () => process.stdout.write(`RSS ${process.memoryUsage().rss}\n`);
  const timer = setInterval(report, 200);
  process.on("SIGUSR2", report);
  const stop = () => {
    clearInterval(timer);
    void lb.close(500).then(() => process.exit(0));
  };
  stopWhenParentGoes(stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
