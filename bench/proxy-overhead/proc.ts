// Child processes and /proc accounting for bench/proxy-overhead.
//
// Every process the benchmark starts goes through a ChildRegistry, which kills it by pid (its own
// process group, since children are spawned detached) when the benchmark ends, fails or is
// interrupted. CPU figures come from /proc/PID/stat (utime + stime, in clock ticks) and /proc/stat.
import { type ChildProcess, execFileSync, type SpawnOptions, spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

const OUTPUT_TAIL_BYTES = 8192;

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** The last few KiB of stdout+stderr, for error messages. */
  tail(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  hasExited(): boolean;
}

export class ChildRegistry {
  #children = new Map<number, Child>();

  spawn(name: string, command: string, args: readonly string[], options: SpawnOptions = {}): Child {
    const proc = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      ...options,
      // Own process group: a ctrl-c on the terminal reaches only us, and we kill in order.
      detached: true,
    });
    if (proc.pid === undefined) throw new Error(`${name}: cannot spawn ${command}`);
    const pid = proc.pid;
    let output = "";
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString("utf8")).slice(-OUTPUT_TAIL_BYTES);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    let done = false;
    const exited = new Promise<number | string>((resolve) => {
      proc.on("exit", (code, signal) => {
        done = true;
        this.#children.delete(pid);
        resolve(code ?? signal ?? "unknown");
      });
      proc.on("error", (error) => {
        keep(Buffer.from(`\n${error.message}\n`));
        done = true;
        this.#children.delete(pid);
        resolve("spawn-error");
      });
    });
    const child: Child = { name, proc, pid, tail: () => output, exited, hasExited: () => done };
    this.#children.set(pid, child);
    return child;
  }

  /** SIGTERM, then SIGKILL after graceMs if it is still there. */
  async kill(child: Child, graceMs = 2000): Promise<void> {
    if (child.hasExited()) return;
    signalChild(child.pid, "SIGTERM");
    const timedOut = await Promise.race([child.exited.then(() => false), sleep(graceMs).then(() => true)]);
    if (timedOut) {
      signalChild(child.pid, "SIGKILL");
      await Promise.race([child.exited, sleep(1000)]);
    }
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.#children.values()].map((child) => this.kill(child)));
  }

  /** For process 'exit' handlers, which cannot wait. */
  killAllSync(): void {
    for (const pid of this.#children.keys()) signalChild(pid, "SIGKILL");
    this.#children.clear();
  }
}

function signalChild(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal); // the child's process group: also reaches what it forked
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Process-wide clock ticks per second, for /proc times. */
export function clockTicksPerSecond(): number {
  try {
    const ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    if (Number.isInteger(ticks) && ticks > 0) return ticks;
  } catch {
    // fall through
  }
  return 100;
}

interface ProcStat {
  ppid: number;
  ticks: number;
  /** stime alone: time in the kernel on the process's behalf (socket reads and writes, mostly). */
  sysTicks: number;
}

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
  const ppid = Number(fields[1]);
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return { ppid, ticks: utime + stime, sysTicks: stime };
}

/** utime+stime (ticks) of one process, all its threads included; 0 if it is gone. */
export function processTicks(pid: number): number {
  return readProcStat(pid)?.ticks ?? 0;
}

/** utime+stime (ticks) of a process and all its live descendants. */
export function treeTicks(rootPid: number): number {
  const stats = allProcStats();
  let ticks = 0;
  for (const pid of treeOf(rootPid, stats)) ticks += stats.get(pid)?.ticks ?? 0;
  return ticks;
}

/** stime (ticks) of a process and all its live descendants: the kernel's share of treeTicks. */
export function treeSysTicks(rootPid: number): number {
  const stats = allProcStats();
  let ticks = 0;
  for (const pid of treeOf(rootPid, stats)) ticks += stats.get(pid)?.sysTicks ?? 0;
  return ticks;
}

/** A process and its live descendants (the root first). */
export function processTree(rootPid: number): number[] {
  return [...treeOf(rootPid, allProcStats())];
}

function allProcStats(): Map<number, ProcStat> {
  const stats = new Map<number, ProcStat>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat !== undefined) stats.set(Number(entry), stat);
  }
  return stats;
}

function treeOf(rootPid: number, stats: ReadonlyMap<number, ProcStat>): Set<number> {
  const inTree = new Set<number>([rootPid]);
  // Bounded: each pass adds at least one pid or stops.
  for (let pass = 0; pass < stats.size; pass++) {
    let added = false;
    for (const [pid, stat] of stats) {
      if (!inTree.has(pid) && inTree.has(stat.ppid)) {
        inTree.add(pid);
        added = true;
      }
    }
    if (!added) break;
  }
  return inTree;
}

/** The aggregate "cpu" line of /proc/stat. */
export interface CpuTimes {
  busy: number; // user + nice + system (ticks), what processes are charged with
  softirq: number; // irq + softirq
  idle: number; // idle + iowait
  steal: number;
}

export function readCpuTimes(): CpuTimes {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const at = (i: number): number => v[i] ?? 0;
  return {
    busy: at(0) + at(1) + at(2),
    idle: at(3) + at(4),
    softirq: at(5) + at(6),
    steal: at(7),
  };
}

/** A port that was free a moment ago on 127.0.0.1 (the OS picks it). */
export async function freePort(): Promise<number> {
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

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => finish(false));
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}

/** Waits until 127.0.0.1:port accepts connections; throws if the child exits first or after timeoutMs. */
export async function waitForPort(port: number, child: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; attempt < 10_000 && Date.now() < deadline; attempt++) {
    if (child.hasExited()) {
      throw new Error(`${child.name} exited before listening: ${lastLines(child.tail())}`);
    }
    if (await canConnect(port)) return;
    await sleep(100);
  }
  throw new Error(`${child.name} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

export function lastLines(text: string, count = 3): string {
  const lines = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  return lines.slice(-count).join(" | ") || "(no output)";
}

/** Pins every thread of a running process to one core (threads it starts later inherit it). */
export function pinProcess(pid: number, core: number): void {
  execFileSync("taskset", ["-a", "-p", "-c", String(core), String(pid)], { stdio: "ignore" });
}

export function commandVersion(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: "utf8", timeout: 10_000 });
  const text = `${result.stdout ?? ""}\n${result.stderr ?? ""}`;
  return (
    text
      .split("\n")
      .map((line) => line.trim())
      .find((line) => line.length > 0) ?? "unknown"
  );
}

/**
 * TCP connections in TIME_WAIT with one end on one of `ports` (from /proc/net/tcp and tcp6), as
 * "local>remote" keys. Comparing two snapshots tells how many connections were closed in between:
 * the sign of connection churn, e.g. an nginx upstream keepalive pool too small for the load.
 */
export function timeWaitConnections(ports: ReadonlySet<number>): Set<string> {
  const keys = new Set<string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] !== "06") continue; // TCP_TIME_WAIT
      const local = fields[1] ?? "";
      const remote = fields[2] ?? "";
      const localPort = Number.parseInt(local.slice(local.indexOf(":") + 1), 16);
      const remotePort = Number.parseInt(remote.slice(remote.indexOf(":") + 1), 16);
      if (ports.has(localPort) || ports.has(remotePort)) keys.add(`${local}>${remote}`);
    }
  }
  return keys;
}
