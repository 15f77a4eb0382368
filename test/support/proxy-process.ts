// Proxies in child processes for roster/transfer's tests: `roster lb` as a user runs it (the CLI under
// tsx, from a YAML config) and nginx with grpc_pass. Each is stopped by its pid; `rssOf` reads any
// process's resident memory from /proc.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { closedPort, waitFor } from "./echo-backend.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

export interface ProxyProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** "127.0.0.1:PORT" clients dial. */
  readonly address: string;
  readonly log: string[];
  /** SIGKILL by pid; resolves once it has exited. */
  kill(): Promise<void>;
  /** SIGTERM by pid; resolves once it has exited (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

function wrap(child: ChildProcess, address: string, log: string[]): ProxyProcess {
  const pid = child.pid!;
  let gone = child.exitCode !== null || child.signalCode !== null;
  const exited = new Promise<void>((resolve) => {
    if (gone) resolve();
    child.once("exit", () => {
      gone = true;
      resolve();
    });
  });
  const signal = (s: NodeJS.Signals) => {
    if (gone) return;
    try {
      process.kill(pid, s);
    } catch {
      // already gone
    }
  };
  return {
    child,
    pid,
    address,
    log,
    kill: async () => {
      signal("SIGKILL");
      await exited;
    },
    stop: async () => {
      signal("SIGTERM");
      const t = setTimeout(() => signal("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/**
 * `roster lb --config FILE` with `yaml` (which must not set `listen`), listening on 127.0.0.1:0 (or
 * `port`); resolves once its log says where.
 */
export async function startRosterLb(dir: string, yaml: string, port = 0): Promise<ProxyProcess> {
  mkdirSync(dir, { recursive: true });
  const config = join(dir, `lb-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(config, `listen: 127.0.0.1:${port}\n${yaml}`);
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "lb", "--config", config], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log: string[] = [];
  child.stderr!.on("data", (d: Buffer) => log.push(...d.toString().split("\n").filter(Boolean)));
  const proc = wrap(child, "", log);
  try {
    await waitFor(
      () => log.some((l) => l.includes("listening on")) || child.exitCode !== null,
      30_000,
      "roster lb to listen",
    );
  } catch (err) {
    await proc.kill();
    throw err;
  }
  const line = log.find((l) => l.includes("listening on"));
  if (line === undefined) throw new Error(`roster lb exited:\n${log.join("\n")}`);
  const { listen } = JSON.parse(line) as { listen: string };
  return { ...proc, address: listen };
}

export interface NginxOptions {
  /** Upstream "HOST:PORT". */
  readonly backend: string;
  /** grpc_read_timeout, seconds. */
  readonly readTimeoutS: number;
}

/** nginx (one process, no daemon) proxying gRPC to one backend; resolves once it accepts connections. */
export async function startNginx(dir: string, o: NginxOptions): Promise<ProxyProcess> {
  mkdirSync(dir, { recursive: true });
  const port = await closedPort();
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:${port} http2;
    location / {
      grpc_pass grpc://${o.backend};
      grpc_read_timeout ${o.readTimeoutS}s;
      grpc_send_timeout ${o.readTimeoutS}s;
    }
  }
}
`,
  );
  const child = spawn("/usr/sbin/nginx", ["-p", dir, "-c", conf, "-e", join(dir, "nginx-error.log")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log: string[] = [];
  child.stderr!.on("data", (d: Buffer) => log.push(...d.toString().split("\n").filter(Boolean)));
  const proc = wrap(child, `127.0.0.1:${port}`, log);
  const { connect } = await import("node:net");
  const accepts = () =>
    new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
  const until = Date.now() + 10_000;
  // Bounded by the clock: at most 10 s of 50 ms turns.
  while (!(await accepts())) {
    if (child.exitCode !== null || Date.now() > until) {
      await proc.kill();
      throw new Error(`nginx did not start: ${log.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return proc;
}

/** Resident set size of process `pid` in bytes (from /proc), or undefined once it has exited. */
export function rssOf(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The pids of `pid`'s children (from /proc), e.g. `roster serve`'s workers. */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * `roster serve MODULE --workers N` on 127.0.0.1:0 (the CLI under tsx); resolves once its log says where
 * it listens. Its workers are `childrenOf(pid)`.
 */
export async function startRosterServe(module: string, workers: number): Promise<ProxyProcess> {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "src/cli/main.ts",
      "serve",
      module,
      "--workers",
      String(workers),
      "--listen",
      "127.0.0.1:0",
    ],
    { cwd: root, stdio: ["ignore", "ignore", "pipe"] },
  );
  const log: string[] = [];
  child.stderr!.on("data", (d: Buffer) => log.push(...d.toString().split("\n").filter(Boolean)));
  const proc = wrap(child, "", log);
  const listening = () => log.map((l) => /"listen":"([^"]+)"/.exec(l)?.[1]).find((a) => a !== undefined);
  try {
    await waitFor(
      () => listening() !== undefined || child.exitCode !== null,
      60_000,
      "roster serve to listen",
    );
  } catch (err) {
    await proc.stop();
    throw err;
  }
  const address = listening();
  if (address === undefined) throw new Error(`roster serve exited:\n${log.join("\n")}`);
  return { ...proc, address };
}

/** Highest RSS growth of each of a set of processes over their RSS when `start()` was called. */
export class RssWatch {
  readonly #base = new Map<number, number>();
  readonly #max = new Map<number, number>();
  readonly #names = new Map<number, string>();
  #timer: NodeJS.Timeout | undefined;

  /** `pids` by name; the test process itself is read with process.memoryUsage(). */
  start(pids: Readonly<Record<string, number>>, everyMs = 250): void {
    for (const [name, pid] of Object.entries(pids)) {
      const rss = pid === process.pid ? process.memoryUsage().rss : rssOf(pid);
      if (rss === undefined) throw new Error(`${name} (pid ${pid}) is not running`);
      this.#names.set(pid, name);
      this.#base.set(pid, rss);
      this.#max.set(pid, rss);
    }
    this.#timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): void {
    for (const pid of this.#base.keys()) {
      const rss = pid === process.pid ? process.memoryUsage().rss : rssOf(pid);
      if (rss !== undefined && rss > this.#max.get(pid)!) this.#max.set(pid, rss);
    }
  }

  /** Stops sampling; growth in bytes by name. */
  stop(): Record<string, number> {
    clearInterval(this.#timer);
    this.sample();
    const out: Record<string, number> = {};
    for (const [pid, name] of this.#names) out[name] = this.#max.get(pid)! - this.#base.get(pid)!;
    return out;
  }
}
