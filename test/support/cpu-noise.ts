// How much CPU *other* processes used while a measurement ran: docs/benchmarks.md's rule (Method) "skip runs
// where other processes used the CPU", for tests that compare latencies on a shared 2-core machine.
//
//   const meter = startForeignCpuMeter([server.pid]);   // this process and its descendants always count as own
//   ... run the measurement ...
//   const { foreignCores, stealCores } = meter.stop();   // e.g. 0.05 = 5% of one core
//
// Reads /proc/<pid>/stat (utime + stime) of every process at start and stop; a process is "own" when it or
// an ancestor is in the own set. Processes that both started and ended between the two readings are not
// seen (an undercount). Steal comes from /proc/stat. Linux only; elsewhere both figures are 0.
import { readdirSync, readFileSync } from "node:fs";

interface ProcSample {
  readonly ppid: number;
  readonly ticks: number;
}

const TICKS_PER_SECOND = 100;

function readProcs(): Map<number, ProcSample> {
  const out = new Map<number, ProcSample>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = readFileSync(`/proc/${name}/stat`, "utf8");
      // The command name (field 2) may contain spaces and parentheses: parse after its last ')'.
      const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
      out.set(Number(name), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // gone in between
    }
  }
  return out;
}

function readSteal(): number {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/);
    return Number(cpu[8] ?? 0);
  } catch {
    return 0;
  }
}

export interface ForeignCpu {
  /** CPU other processes used, in cores (1 = one core busy for the whole time). */
  readonly foreignCores: number;
  /** Hypervisor steal over the same time, in cores. */
  readonly stealCores: number;
  /** The busiest other processes, "pid:cores", for diagnostics. */
  readonly top: readonly string[];
}

export function startForeignCpuMeter(ownPids: readonly number[]): {
  stop(extraOwn?: readonly number[]): ForeignCpu;
} {
  const before = readProcs();
  const steal0 = readSteal();
  const started = Date.now();
  return {
    stop(extraOwn: readonly number[] = []) {
      const after = readProcs();
      const seconds = Math.max(0.001, (Date.now() - started) / 1000);
      const own = new Set([process.pid, ...ownPids, ...extraOwn]);
      const isOwn = (pid: number): boolean => {
        // Bounded: at most 64 ancestors.
        for (let p = pid, depth = 0; p > 1 && depth < 64; depth++) {
          if (own.has(p)) return true;
          p = after.get(p)?.ppid ?? before.get(p)?.ppid ?? 0;
        }
        return false;
      };
      let foreign = 0;
      const top: [number, number][] = [];
      for (const [pid, s] of after) {
        if (isOwn(pid)) continue;
        const used = s.ticks - (before.get(pid)?.ticks ?? 0);
        if (used <= 0) continue;
        foreign += used;
        top.push([pid, used]);
      }
      top.sort((a, b) => b[1] - a[1]);
      return {
        foreignCores: foreign / TICKS_PER_SECOND / seconds,
        stealCores: (readSteal() - steal0) / TICKS_PER_SECOND / seconds,
        top: top.slice(0, 3).map(([pid, t]) => `${pid}:${(t / TICKS_PER_SECOND / seconds).toFixed(2)}`),
      };
    },
  };
}
