// /proc accounting and process bookkeeping for bench/serve-scaling.
//
// CPU figures are utime + stime (clock ticks, `getconf CLK_TCK`) from /proc/PID/stat, and the
// aggregate "cpu" line of /proc/stat for steal and for CPU used by processes that are not ours.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

export function clockTicksPerSecond(): number {
  try {
    const ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    if (Number.isInteger(ticks) && ticks > 0) return ticks;
  } catch {
    // fall through
  }
  return 100;
}

export interface ProcStat {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, all threads, in clock ticks. */
  ticks: number;
  /** Start time after boot (clock ticks): with the pid, identifies one process across pid reuse. */
  start: number;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ")".
  const close = text.lastIndexOf(")");
  const comm = text.slice(text.indexOf("(") + 1, close);
  const fields = text.slice(close + 2).split(" ");
  // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22.
  const ppid = Number(fields[1]);
  const ticks = Number(fields[11]) + Number(fields[12]);
  const start = Number(fields[19]);
  if (!Number.isFinite(ticks) || !Number.isFinite(start)) return undefined;
  return { pid, comm, ppid, ticks, start };
}

/** Live children of `pid` (from the ppid field of every /proc/N/stat). */
export function childrenOf(pid: number): ProcStat[] {
  const out: ProcStat[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat !== undefined && stat.ppid === pid) out.push(stat);
  }
  return out;
}

export interface CpuTimes {
  /** user + nice + system (ticks): what processes are charged with. */
  busy: number;
  steal: number;
}

export function readCpuTimes(): CpuTimes {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const at = (i: number): number => v[i] ?? 0;
  return { busy: at(0) + at(1) + at(2), steal: at(7) };
}

/** Established TCP connections whose local end is 127.0.0.1:port (the server side of each connection). */
export function establishedOnPort(port: number): number {
  let count = 0;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] !== "01") continue; // TCP_ESTABLISHED
      const local = fields[1] ?? "";
      if (Number.parseInt(local.slice(local.indexOf(":") + 1), 16) === port) count++;
    }
  }
  return count;
}

/**
 * Processes we started or that our children started, remembered by pid and start time, so that
 * cleanup signals exactly them (never a reused pid, never by name).
 */
export class Tracked {
  #procs = new Map<number, number>();

  add(pid: number): void {
    const stat = readProcStat(pid);
    if (stat !== undefined) this.#procs.set(pid, stat.start);
  }

  alive(pid: number): boolean {
    const start = this.#procs.get(pid);
    const stat = readProcStat(pid);
    return start !== undefined && stat !== undefined && stat.start === start;
  }

  signal(pid: number, signal: NodeJS.Signals): void {
    if (!this.alive(pid)) return;
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }

  /** SIGKILL every remembered process still alive (usable from an 'exit' handler: synchronous). */
  killAllSync(): void {
    for (const pid of this.#procs.keys()) this.signal(pid, "SIGKILL");
  }

  pids(): number[] {
    return [...this.#procs.keys()];
  }
}
