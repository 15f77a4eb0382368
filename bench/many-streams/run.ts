// bench/many-streams — memory of a balancer holding many concurrent streams over many connections.
//
//   ROSTER_FROM_SOURCE=1 node --import tsx bench/many-streams/run.ts [--connections 1000] [--streams 10]
//       [--hold-ms 3000] [--duration 12] [--paths roster,haproxy] [--out FILE.json]
//
// Per path: two grpc-js backends that hold every call `--hold-ms` before answering; the proxy (roster
// lb or HAProxy 2.6 with h2 both sides, as in bench/proxy-overhead) pinned to core 1; h2load on core 0
// opening `--connections` connections × `--streams` streams of 64-byte unary calls for `--duration` s.
// So about connections × streams calls are open at once through the proxy. Measured: the proxy's peak
// resident memory (VmHWM, and the highest VmRSS sampled every 100 ms), its RSS before the load, the
// most calls the backends held at once (summed: how many streams the proxy really carried), and calls
// succeeded / failed. Issue 10's target: 10k streams over 1k connections with roster's RSS ≤ 512 MiB.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";
import { ECHO_PATH, encodeEchoMessage, grpcFrame } from "../proxy-overhead/echo.ts";
import { runH2load } from "../proxy-overhead/h2load.ts";
import { haproxyConfig, LOAD_CORE, PROXY_CORE, REPO_ROOT } from "../proxy-overhead/paths.ts";
import { type Child, ChildRegistry, freePort, lastLines, waitForPort } from "../proxy-overhead/proc.ts";
import type { HoldBackendMessage, HoldParentMessage } from "./backend.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PATHS = ["roster", "haproxy"] as const;
type PathName = (typeof PATHS)[number];
const START_TIMEOUT_MS = 20_000;

function intOption(flag: string, min: number, max: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max)
      throw new InvalidArgumentError(`${flag} must be a whole number from ${min} to ${max}, got "${raw}"`);
    return value;
  };
}

const program = new Command("many-streams")
  .description("Peak memory of a balancer carrying connections × streams concurrent calls")
  .option("--connections <n>", "client connections", intOption("--connections", 1, 20_000), 1000)
  .option("--streams <n>", "concurrent streams per connection", intOption("--streams", 1, 1000), 10)
  .option("--hold-ms <ms>", "how long each backend holds a call", intOption("--hold-ms", 0, 600_000), 3000)
  .option("--duration <s>", "load duration, seconds", intOption("--duration", 1, 3600), 12)
  .option(
    "--paths <list>",
    "comma-separated: roster,haproxy",
    (raw: string) => {
      const list = raw.split(",").filter((p) => p.length > 0);
      for (const p of list)
        if (!(PATHS as readonly string[]).includes(p))
          throw new InvalidArgumentError(`--paths: unknown path "${p}" (known: ${PATHS.join(", ")})`);
      return list as PathName[];
    },
    [...PATHS] as PathName[],
  )
  .option("--roster-bin <file>", "roster CLI entry point", path.join(REPO_ROOT, "bin", "roster.js"))
  .option("--out <file>", "also write the results as JSON")
  .parse(process.argv.slice(2), { from: "user" });
const o = program.opts<{
  connections: number;
  streams: number;
  holdMs: number;
  duration: number;
  paths: PathName[];
  rosterBin: string;
  out?: string;
}>();

const registry = new ChildRegistry();
const tmp = mkdtempSync(path.join(tmpdir(), "roster-many-streams-"));
process.on("exit", () => {
  registry.killAllSync();
  rmSync(tmp, { recursive: true, force: true });
});
process.on("SIGINT", () => process.exit(130));

interface HoldBackend {
  child: Child;
  port: number;
  stats(): Promise<{ served: number; maxInFlight: number }>;
}

async function startBackend(name: string): Promise<HoldBackend> {
  const child = registry.spawn(
    name,
    "taskset",
    [
      "-c",
      String(LOAD_CORE),
      process.execPath,
      "--import",
      "tsx",
      path.join(HERE, "backend.ts"),
      String(o.holdMs),
    ],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe", "ipc"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${name} not ready: ${lastLines(child.tail())}`)),
      START_TIMEOUT_MS,
    );
    child.proc.on("message", (m: HoldBackendMessage) => {
      if (m.type === "ready") {
        clearTimeout(timer);
        resolve(m.port);
      }
    });
    void child.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}): ${lastLines(child.tail())}`));
    });
  });
  const stats = () =>
    new Promise<{ served: number; maxInFlight: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no stats reply`)), 5000);
      const on = (m: HoldBackendMessage) => {
        if (m.type !== "stats") return;
        clearTimeout(timer);
        child.proc.off("message", on);
        resolve({ served: m.served, maxInFlight: m.maxInFlight });
      };
      child.proc.on("message", on);
      child.proc.send({ type: "stats" } satisfies HoldParentMessage);
    });
  return { child, port, stats };
}

async function startProxy(name: PathName, backendPorts: number[]): Promise<{ proxy: Child; port: number }> {
  const port = await freePort();
  let proxy: Child;
  if (name === "roster") {
    proxy = registry.spawn(
      "roster",
      "taskset",
      [
        "-c",
        String(PROXY_CORE),
        process.execPath,
        o.rosterBin,
        "lb",
        "--listen",
        `127.0.0.1:${port}`,
        ...backendPorts.flatMap((p) => ["--backend", `127.0.0.1:${p}`]),
        "--policy",
        "round_robin",
      ],
      { cwd: REPO_ROOT },
    );
  } else {
    const dir = path.join(tmp, "haproxy");
    rmSync(dir, { recursive: true, force: true });
    const conf = path.join(tmp, "haproxy.cfg");
    // maxconn counts client connections; proxy-overhead's 4 × concurrency would ask for more fds
    // than this machine allows (20 000).
    writeFileSync(
      conf,
      haproxyConfig(tmp, port, backendPorts, {
        concurrency: o.connections * o.streams,
        streamsPerConnection: o.streams,
        tmpDir: tmp,
        rosterBin: "",
        rosterArgs: [],
        nginxKeepalive: undefined,
      }).replace(/^ {2}maxconn \d+$/m, `  maxconn ${o.connections + 1000}`),
    );
    proxy = registry.spawn("haproxy", "taskset", [
      "-c",
      String(PROXY_CORE),
      "/usr/sbin/haproxy",
      "-db",
      "-f",
      conf,
    ]);
  }
  await waitForPort(port, proxy, START_TIMEOUT_MS);
  return { proxy, port };
}

/** VmRSS and VmHWM of a process, MiB; undefined once it is gone. */
function memory(pid: number): { rss: number; hwm: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? Number.NaN);
  return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
}

interface Result {
  path: PathName;
  idleRssMiB: number;
  peakRssMiB: number;
  hwmMiB: number;
  backendsMaxInFlight: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  total: number;
}

async function measure(name: PathName, requestFile: string): Promise<Result> {
  const backends = [await startBackend(`${name}-backend-1`), await startBackend(`${name}-backend-2`)];
  const { proxy, port } = await startProxy(
    name,
    backends.map((b) => b.port),
  );
  try {
    await sleep(500);
    const idle = memory(proxy.pid);
    if (idle === undefined) throw new Error(`${name} exited before the load: ${lastLines(proxy.tail())}`);
    let peakRss = idle.rss;
    const sampler = setInterval(() => {
      const m = memory(proxy.pid);
      if (m !== undefined && m.rss > peakRss) peakRss = m.rss;
    }, 100);
    let load: Awaited<ReturnType<typeof runH2load>>;
    try {
      load = await runH2load(registry, {
        port,
        urlPath: ECHO_PATH,
        requestFile,
        connections: o.connections,
        streams: o.streams,
        durationS: o.duration,
        core: LOAD_CORE,
        logFile: undefined,
      });
    } finally {
      clearInterval(sampler);
    }
    const end = memory(proxy.pid);
    if (end === undefined) throw new Error(`${name} exited during the load: ${lastLines(proxy.tail())}`);
    const stats = await Promise.all(backends.map((b) => b.stats()));
    return {
      path: name,
      idleRssMiB: idle.rss,
      peakRssMiB: Math.max(peakRss, end.rss),
      hwmMiB: end.hwm,
      backendsMaxInFlight: stats.reduce((sum, s) => sum + s.maxInFlight, 0),
      succeeded: load.succeeded,
      failed: load.failed,
      errored: load.errored,
      timeout: load.timeout,
      total: load.total,
    };
  } finally {
    await registry.kill(proxy);
    for (const b of backends) await registry.kill(b.child);
  }
}

const requestFile = path.join(tmp, "request.bin");
writeFileSync(requestFile, grpcFrame(encodeEchoMessage(Buffer.alloc(64, 1))));
const results: Result[] = [];
for (const name of o.paths) {
  process.stderr.write(
    `${name}: ${o.connections} connections × ${o.streams} streams, calls held ${o.holdMs} ms, ${o.duration} s…\n`,
  );
  const r = await measure(name, requestFile);
  results.push(r);
  process.stderr.write(
    `${name}: peak RSS ${r.peakRssMiB.toFixed(0)} MiB (VmHWM ${r.hwmMiB.toFixed(0)}, idle ${r.idleRssMiB.toFixed(0)}); backends held up to ${r.backendsMaxInFlight} calls at once; ${r.succeeded} ok, ${r.failed} failed, ${r.errored} errored, ${r.timeout} timed out\n`,
  );
}
const peer = results.find((r) => r.path === "haproxy");
console.log(
  `| path | peak RSS MiB (VmHWM) | idle RSS MiB | calls held at once at the backends | calls ok | failed/errored/timeout |${peer ? " peak RSS ÷ HAProxy |" : ""}`,
);
console.log(`| --- | --- | --- | --- | --- | --- |${peer ? " --- |" : ""}`);
for (const r of results)
  console.log(
    `| ${r.path} | ${r.peakRssMiB.toFixed(0)} (${r.hwmMiB.toFixed(0)}) | ${r.idleRssMiB.toFixed(0)} | ${r.backendsMaxInFlight} | ${r.succeeded} | ${r.failed}/${r.errored}/${r.timeout} |${peer ? ` ${(r.peakRssMiB / peer.peakRssMiB).toFixed(2)} |` : ""}`,
  );
if (o.out !== undefined) writeFileSync(o.out, `${JSON.stringify({ options: o, results }, null, 2)}\n`);
const bad = results.filter((r) => r.failed + r.errored + r.timeout > 0 || r.succeeded === 0);
if (bad.length > 0) {
  process.stderr.write(`calls failed on: ${bad.map((r) => r.path).join(", ")}\n`);
  process.exitCode = 1;
}
