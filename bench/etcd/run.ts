// bench/etcd — membership through etcd with several balancers (issue 13; README.md beside this).
//
//   node --import tsx bench/etcd/run.ts [--rounds 34] [--backends 8] [--lanes 4] [--out FILE.json]
//
// A real etcd (Debian's etcd-server) on loopback and three `roster lb --discovery etcd://…` processes.
//
// Part 1, membership change: each round starts a grpc-js echo backend in this process, registers it
// (EtcdRegistration; the figure starts when its key is written), and measures per balancer the time
// until a call through it (2 lanes of back-to-back calls per balancer, round_robin) is answered by the
// new backend. Then the backend is deregistered and closed. Target: p99 ≤ 1 s.
//
// Part 2, a backend killed under load: `--backends` echo backends in child processes (10 ms handler),
// each registered by a `roster register` child (lease TTL 2 s); `--lanes` lanes of calls per balancer
// (least_request). One backend and its registrant are SIGKILLed together (a host dying). Counted: calls
// failed, against the calls in flight on the victim at the kill (summed from the balancers' /status
// just before). Target: failed ≤ in flight.
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseAddress } from "../../src/core/endpoint.ts";
import { EtcdRegistration } from "../../src/discovery/etcd-registration.ts";
import { parseEtcdHosts } from "../../src/discovery/etcd-target.ts";
import {
  type ChildScript,
  EchoClient,
  spawnEchoBackend,
  startEchoBackend,
  waitFor,
} from "../../test/support/echo-backend.ts";
import { startEtcd } from "../../test/support/etcd-server.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const rounds = Number(arg("rounds", "34"));
const backendCount = Number(arg("backends", "8"));
const lanes = Number(arg("lanes", "4"));
const out = arg("out", "");

const children: ChildProcess[] = [];
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});
process.on("SIGINT", () => process.exit(130));

function cli(args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const lines: string[] = [];
  for (const s of [child.stdout!, child.stderr!]) {
    let rest = "";
    s.setEncoding("utf8").on("data", (t: string) => {
      rest += t;
      const parts = rest.split("\n");
      rest = parts.pop() ?? "";
      lines.push(...parts.filter(Boolean));
    });
  }
  return { child, lines };
}

async function startLbs(endpoint: string, prefix: string, policy: string) {
  return Promise.all(
    [0, 1, 2].map(async () => {
      const p = cli([
        "lb",
        "--discovery",
        `etcd://${endpoint}/${prefix}`,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--policy",
        policy,
      ]);
      await waitFor(() => p.lines.some((l) => l.includes("listening on")), 30_000, "roster lb");
      const line = p.lines.find((l) => l.includes("listening on"))!;
      return { ...p, ...(JSON.parse(line) as { listen: string; admin: string }) };
    }),
  );
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const etcd = await startEtcd();
process.on("exit", () => {
  const pid = etcd.pid();
  if (pid !== undefined)
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
});
const hosts = parseEtcdHosts(etcd.endpoint, "etcd");

// --- part 1 ---------------------------------------------------------------------------------------
const base = await startEchoBackend({ id: "base" });
const baseReg = new EtcdRegistration({
  target: { hosts, prefix: "bench/p1" },
  address: parseAddress(base.address, "base"),
});
await baseReg.start();
const lbs1 = await startLbs(etcd.endpoint, "bench/p1", "round_robin");
const clients1 = lbs1.map((lb) => new EchoClient(lb.listen));
let stop1 = false;
const seen = clients1.map(() => new Map<string, number>()); // per balancer: backend id → first reply time
const loops1 = clients1.flatMap((c, n) =>
  [0, 1].map(async () => {
    while (!stop1) {
      try {
        const r = await c.echo({ message: "x" }, { deadlineMs: 5000 });
        if (!seen[n]!.has(r.served_by)) seen[n]!.set(r.served_by, performance.now());
      } catch {}
    }
  }),
);
await waitFor(() => seen.every((m) => m.has("base")), 10_000, "calls through every balancer");
const delays: number[] = [];
for (let i = 0; i < rounds; i++) {
  const id = `new${i}`;
  const b = await startEchoBackend({ id });
  const reg = new EtcdRegistration({
    target: { hosts, prefix: "bench/p1" },
    address: parseAddress(b.address, id),
  });
  await reg.start();
  const written = performance.now();
  await waitFor(() => seen.every((m) => m.has(id)), 10_000, `every balancer routing to ${id}`);
  for (const m of seen) delays.push(m.get(id)! - written);
  await reg.close();
  await new Promise((r) => setTimeout(r, 200));
  await b.close();
}
stop1 = true;
await Promise.all(loops1);
for (const c of clients1) c.close();
for (const lb of lbs1) lb.child.kill("SIGTERM");
await baseReg.close();
await base.close();
delays.sort((a, b) => a - b);
const part1 = {
  samples: delays.length,
  medianMs: Math.round(percentile(delays, 50) * 10) / 10,
  p99Ms: Math.round(percentile(delays, 99) * 10) / 10,
  maxMs: Math.round(delays.at(-1)! * 10) / 10,
};
console.log(
  `part 1: membership change → each of 3 balancers routing to the new backend: ${JSON.stringify(part1)}`,
);

// --- part 2 ---------------------------------------------------------------------------------------
const backends: ChildScript[] = [];
for (let i = 0; i < backendCount; i++) backends.push(await spawnEchoBackend(`b${i}`, 10));
for (const b of backends) children.push(b.child);
const registrants = backends.map((b) => {
  const p = cli([
    "register",
    "--etcd",
    etcd.endpoint,
    "--prefix",
    "bench/p2",
    "--address",
    `127.0.0.1:${b.port}`,
    "--lease-ttl",
    "2",
    "--log-level",
    "warn",
  ]);
  return p;
});
await waitFor(
  () => registrants.every((r) => r.lines.some((l) => l.startsWith("REGISTERED"))),
  30_000,
  "registrations",
);
const lbs2 = await startLbs(etcd.endpoint, "bench/p2", "least_request");
const clients2 = lbs2.map((lb) => new EchoClient(lb.listen));
let stop2 = false;
let ok2 = 0;
const failures: string[] = [];
const loops2 = clients2.flatMap((c) =>
  Array.from({ length: lanes }, async () => {
    while (!stop2) {
      try {
        await c.echo({ message: "x" }, { deadlineMs: 5000 });
        ok2++;
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  }),
);
await waitFor(() => ok2 > 500, 20_000, "load running");
const victim = backends[0]!;
const victimKey = `127.0.0.1:${victim.port}`;
const statuses = await Promise.all(
  lbs2.map(
    async (lb) =>
      (await (await fetch(`http://${lb.admin}/status`)).json()) as {
        backends: Array<{ key: string; inFlight: number }>;
      },
  ),
);
const inFlight = statuses.reduce(
  (sum, s) => sum + (s.backends.find((b) => b.key === victimKey)?.inFlight ?? 0),
  0,
);
process.kill(victim.pid, "SIGKILL");
process.kill(registrants[0]!.child.pid!, "SIGKILL");
const okBefore = ok2;
await new Promise((r) => setTimeout(r, 5000)); // past the lease's expiry
stop2 = true;
await Promise.all(loops2);
const part2 = {
  backends: backendCount,
  lanesPerBalancer: lanes,
  inFlightOnVictimAtKill: inFlight,
  failed: failures.length,
  okAfterKill: ok2 - okBefore,
  failureKinds: [...new Set(failures.map((f) => f.slice(0, 80)))],
};
console.log(`part 2: one of ${backendCount} backends SIGKILLed under load: ${JSON.stringify(part2)}`);
for (const c of clients2) c.close();
for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
await etcd.dispose();
if (out !== "") writeFileSync(out, JSON.stringify({ part1, delays, part2 }, null, 2));
process.exit(0);
