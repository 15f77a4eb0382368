// The backends and the paths under test for bench/proxy-overhead: direct, roster, nginx, haproxy.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { BackendMessage, ParentMessage } from "./backend.ts";
import { type Child, type ChildRegistry, freePort, lastLines, waitForPort } from "./proc.ts";

export const PATH_NAMES = ["direct", "roster", "nginx", "haproxy"] as const;
export type PathName = (typeof PATH_NAMES)[number];

/** Cores of a 2-core machine: the proxy alone on one, load generator and backends on the other. */
export const PROXY_CORE = 1;
export const LOAD_CORE = 0;

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "..", "..");
const BACKEND_SCRIPT = path.join(HERE, "backend.ts");
const START_TIMEOUT_MS = 20_000;

export class Backend {
  readonly child: Child;
  readonly port: number;
  #waiters: ((served: number) => void)[] = [];

  private constructor(child: Child, port: number) {
    this.child = child;
    this.port = port;
    child.proc.on("message", (message: BackendMessage) => {
      if (message.type === "count") for (const waiter of this.#waiters.splice(0)) waiter(message.served);
    });
  }

  static async start(registry: ChildRegistry, name: string): Promise<Backend> {
    const child = registry.spawn(
      name,
      "taskset",
      ["-c", String(LOAD_CORE), process.execPath, "--import", "tsx", BACKEND_SCRIPT, "0"],
      { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe", "ipc"] },
    );
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${name} not ready in ${START_TIMEOUT_MS} ms: ${lastLines(child.tail())}`)),
        START_TIMEOUT_MS,
      );
      child.proc.on("message", (message: BackendMessage) => {
        if (message.type === "ready") {
          clearTimeout(timer);
          resolve(message.port);
        }
      });
      void child.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code}): ${lastLines(child.tail())}`));
      });
    });
    return new Backend(child, port);
  }

  /** Echo calls this backend has answered since it started. */
  served(timeoutMs = 5000): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.child.name}: no count reply`)), timeoutMs);
      this.#waiters.push((served) => {
        clearTimeout(timer);
        resolve(served);
      });
      const message: ParentMessage = { type: "count" };
      this.child.proc.send(message);
    });
  }
}

export interface Target {
  name: PathName;
  port: number;
  /** The proxy's process, whose CPU is charged to the path; absent for direct. */
  proxy: Child | undefined;
  /** The backends this path sends calls to. */
  backends: Backend[];
  /** Proxy log file, if any, to quote when something goes wrong. */
  logFile: string | undefined;
}

export interface PathSettings {
  /** Concurrent calls the load generator keeps in flight (connections × streams). */
  concurrency: number;
  streamsPerConnection: number;
  tmpDir: string;
  rosterBin: string;
  rosterArgs: string[];
  /** nginx upstream `keepalive` (idle connections cached); undefined: 4 × concurrency. */
  nginxKeepalive: number | undefined;
  /**
   * A command the proxy runs under, put between `taskset` and the proxy's own command (e.g.
   * `valgrind --tool=callgrind …`); empty: none.
   */
  wrapper?: readonly string[];
  /** How long a proxy may take to listen; default 20 s (under valgrind node needs minutes). */
  startTimeoutMs?: number;
}

/** Starts the proxy of one path, or throws with the reason it is not available. */
export async function startTarget(
  name: PathName,
  registry: ChildRegistry,
  backends: readonly [Backend, Backend],
  settings: PathSettings,
): Promise<Target> {
  switch (name) {
    case "direct":
      return { name, port: backends[0].port, proxy: undefined, backends: [backends[0]], logFile: undefined };
    case "roster":
      return startRoster(registry, backends, settings);
    case "nginx":
      return startNginx(registry, backends, settings);
    case "haproxy":
      return startHaproxy(registry, backends, settings);
  }
}

async function startRoster(
  registry: ChildRegistry,
  backends: readonly [Backend, Backend],
  settings: PathSettings,
): Promise<Target> {
  if (!existsSync(settings.rosterBin)) throw new Error(`${settings.rosterBin} does not exist`);
  const help = registry.spawn("roster lb --help", process.execPath, [settings.rosterBin, "lb", "--help"], {
    cwd: REPO_ROOT,
  });
  const helpExit = await Promise.race([help.exited, sleep(15_000).then(() => "timeout")]);
  if (helpExit === "timeout") await registry.kill(help);
  if (helpExit !== 0)
    throw new Error(`"roster lb --help" failed (${helpExit}): ${lastLines(help.tail(), 2)}`);

  const port = await freePort();
  const args = [
    "-c",
    String(PROXY_CORE),
    ...(settings.wrapper ?? []),
    process.execPath,
    settings.rosterBin,
    "lb",
    "--listen",
    `127.0.0.1:${port}`,
    ...backends.flatMap((backend) => ["--backend", `127.0.0.1:${backend.port}`]),
    "--policy",
    "round_robin",
    ...settings.rosterArgs,
  ];
  const proxy = registry.spawn("roster", "taskset", args, { cwd: REPO_ROOT });
  await stopOnFailure(registry, proxy, waitForPort(port, proxy, settings.startTimeoutMs ?? START_TIMEOUT_MS));
  return { name: "roster", port, proxy, backends: [...backends], logFile: undefined };
}

export function nginxConfig(tmpDir: string, port: number, backendPorts: readonly number[], s: PathSettings) {
  // Pitfalls (BENCHMARKING.md): grpc_pass opens one upstream connection per in-flight call, so the
  // keepalive pool must cover the concurrency, and keepalive_requests (default 1000) must be high on
  // both sides or the run measures connection churn.
  const pool = s.nginxKeepalive ?? Math.max(4 * s.concurrency, 16);
  return `# written by bench/proxy-overhead/run.ts
daemon off;
master_process off;
worker_processes 1;
pid ${tmpDir}/nginx.pid;
error_log ${tmpDir}/nginx-error.log warn;
events {
  worker_connections ${Math.max(4096, 4 * s.concurrency)};
}
http {
  access_log off;
  client_body_temp_path ${tmpDir}/nginx-body;
  proxy_temp_path ${tmpDir}/nginx-proxy;
  fastcgi_temp_path ${tmpDir}/nginx-fastcgi;
  uwsgi_temp_path ${tmpDir}/nginx-uwsgi;
  scgi_temp_path ${tmpDir}/nginx-scgi;
  client_max_body_size 0;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  http2_max_concurrent_streams ${Math.max(128, s.streamsPerConnection)};
  upstream backends {
${backendPorts.map((p) => `    server 127.0.0.1:${p};`).join("\n")}
    keepalive ${pool};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${port} http2;
    location / {
      grpc_pass grpc://backends;
      grpc_read_timeout 300s;
      grpc_send_timeout 300s;
    }
  }
}
`;
}

async function startNginx(
  registry: ChildRegistry,
  backends: readonly [Backend, Backend],
  settings: PathSettings,
): Promise<Target> {
  const dir = path.join(settings.tmpDir, "nginx");
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = path.join(dir, "nginx.conf");
  writeFileSync(
    conf,
    nginxConfig(
      dir,
      port,
      backends.map((backend) => backend.port),
      settings,
    ),
  );
  const logFile = path.join(dir, "nginx-error.log");
  const proxy = registry.spawn("nginx", "taskset", [
    "-c",
    String(PROXY_CORE),
    ...(settings.wrapper ?? []),
    "/usr/sbin/nginx",
    "-p",
    dir,
    "-c",
    conf,
    "-e",
    logFile,
  ]);
  await stopOnFailure(
    registry,
    proxy,
    waitForPort(port, proxy, settings.startTimeoutMs ?? START_TIMEOUT_MS),
    logFile,
  );
  return { name: "nginx", port, proxy, backends: [...backends], logFile };
}

export function haproxyConfig(
  tmpDir: string,
  port: number,
  backendPorts: readonly number[],
  s: PathSettings,
) {
  return `# written by bench/proxy-overhead/run.ts
global
  nbthread 1
  maxconn ${Math.max(1024, 4 * s.concurrency)}
  pidfile ${tmpDir}/haproxy.pid
  tune.h2.max-concurrent-streams ${Math.max(100, s.streamsPerConnection)}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend fe
  bind 127.0.0.1:${port} proto h2
  default_backend be
backend be
  balance roundrobin
  http-reuse always
${backendPorts.map((p, i) => `  server b${i + 1} 127.0.0.1:${p} proto h2`).join("\n")}
`;
}

async function startHaproxy(
  registry: ChildRegistry,
  backends: readonly [Backend, Backend],
  settings: PathSettings,
): Promise<Target> {
  const dir = path.join(settings.tmpDir, "haproxy");
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = path.join(dir, "haproxy.cfg");
  writeFileSync(
    conf,
    haproxyConfig(
      dir,
      port,
      backends.map((backend) => backend.port),
      settings,
    ),
  );
  // -db: foreground, one process (no master-worker), so the pid we hold is the one doing the work.
  const proxy = registry.spawn("haproxy", "taskset", [
    "-c",
    String(PROXY_CORE),
    ...(settings.wrapper ?? []),
    "/usr/sbin/haproxy",
    "-db",
    "-f",
    conf,
  ]);
  await stopOnFailure(registry, proxy, waitForPort(port, proxy, settings.startTimeoutMs ?? START_TIMEOUT_MS));
  return { name: "haproxy", port, proxy, backends: [...backends], logFile: undefined };
}

async function stopOnFailure(
  registry: ChildRegistry,
  proxy: Child,
  ready: Promise<void>,
  logFile?: string,
): Promise<void> {
  try {
    await ready;
  } catch (error) {
    await registry.kill(proxy);
    const log = logFile !== undefined && existsSync(logFile) ? ` log: ${lastLines(readLog(logFile))}` : "";
    throw new Error(`${(error as Error).message}${log}`);
  }
}

function readLog(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
