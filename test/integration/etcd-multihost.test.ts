// Past one machine, on one machine: test hosts in network namespaces this test creates (ip netns, veth,
// a bridge; root only — skipped with the reason otherwise). etcd on one host, `roster serve --etcd` on
// two worker hosts, two `roster lb --discovery` on two more, the client on its own: every byte between
// them crosses the namespaces' veths, none the machine's interfaces.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { fileURLToPath } from "node:url";
import { waitFor } from "../support/echo-backend.ts";
import { ETCD_BINARY } from "../support/etcd-server.ts";
import { createTestNetwork, netnsUnavailable, type TestNetwork } from "../support/netns.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const skip = netnsUnavailable();

interface Proc {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
}

const procs: Proc[] = [];
let net: TestNetwork | undefined;
let dataDir: string | undefined;

function run(host: string, command: string[], env: Record<string, string> = {}): Proc {
  const [bin, ...args] = [...net!.exec(host), ...command];
  const child = spawn(bin!, args, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const lines: string[] = [];
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = "";
    stream.setEncoding("utf8").on("data", (t: string) => {
      rest += t;
      const parts = rest.split("\n");
      rest = parts.pop() ?? "";
      lines.push(...parts.filter(Boolean));
    });
  }
  const p = { child, lines, exited };
  procs.push(p);
  return p;
}

const roster = (...args: string[]) => [process.execPath, "--import", "tsx", "src/cli/main.ts", ...args];

type Tally = Record<string, { served: Record<string, number>; failed: string[] }>;

/** The client host's calls to every target; `started` resolves after the first reply. */
function client(calls: number, sleepUs: number, targets: string[]) {
  const c = run("client", [
    process.execPath,
    "--import",
    "tsx",
    "test/support/netns-client.ts",
    String(calls),
    "4",
    String(sleepUs),
    ...targets,
  ]);
  return {
    started: waitFor(() => c.lines.includes("STARTED"), 30_000, "the client's first reply"),
    async done(): Promise<Tally> {
      assert.equal(await c.exited, 0, c.lines.join("\n"));
      return JSON.parse(c.lines.at(-1)!) as Tally;
    },
  };
}

before(() => {
  if (skip !== undefined) return;
  net = createTestNetwork(["etcd", "lb1", "lb2", "w1", "w2", "client"]);
  dataDir = mkdtempSync(join(tmpdir(), "roster-etcd-mh-"));
});

after(async () => {
  for (const p of procs)
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  net?.dispose();
  if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
});

it("two balancers and two worker hosts meet through etcd across network namespaces; a worker host drains with 0 failed calls", {
  skip: skip ?? false,
  timeout: 120_000,
}, async () => {
  const at = (host: string) => net!.address.get(host)!;
  const etcdUrl = `http://${at("etcd")}:2379`;
  const etcd = run("etcd", [
    ETCD_BINARY,
    "--name",
    "mh",
    "--data-dir",
    dataDir!,
    "--listen-client-urls",
    etcdUrl,
    "--advertise-client-urls",
    etcdUrl,
    "--listen-peer-urls",
    `http://${at("etcd")}:2380`,
    "--initial-advertise-peer-urls",
    `http://${at("etcd")}:2380`,
    "--initial-cluster",
    `mh=http://${at("etcd")}:2380`,
    "--logger",
    "zap",
    "--log-level",
    "warn",
  ]);
  const serveOn = (host: string) =>
    run(
      host,
      roster(
        "serve",
        "test/support/host-echo-service.ts",
        "--workers",
        "1",
        "--listen",
        `${at(host)}:50051`,
        "--etcd",
        `${at("etcd")}:2379`,
        "--prefix",
        "mh/app",
        "--lease-ttl",
        "3",
        "--deregister-delay",
        "500",
      ),
      { ROSTER_TEST_HOST: host },
    );
  const w1 = serveOn("w1");
  const w2 = serveOn("w2");
  const lbOn = (host: string) =>
    run(
      host,
      roster(
        "lb",
        "--discovery",
        `etcd://${at("etcd")}:2379/mh/app`,
        "--listen",
        `${at(host)}:50051`,
        "--policy",
        "round_robin",
      ),
    );
  const lb1 = lbOn("lb1");
  const lb2 = lbOn("lb2");
  const registered = (p: Proc) => p.lines.some((l) => l.includes("registered in etcd"));
  await waitFor(
    () => registered(w1) && registered(w2),
    60_000,
    `both worker hosts registered:\n${[...etcd.lines, ...w1.lines, ...w2.lines].join("\n")}`,
  );
  const members = (p: Proc) => p.lines.filter((l) => l.includes("backend added")).length;
  await waitFor(
    () => members(lb1) >= 2 && members(lb2) >= 2,
    30_000,
    `both balancers see both hosts:\n${[...lb1.lines, ...lb2.lines].join("\n")}`,
  );

  const targets = [`${at("lb1")}:50051`, `${at("lb2")}:50051`];
  const first = await client(200, 0, targets).done();
  for (const t of targets) {
    assert.deepEqual(first[t]!.failed, []);
    assert.deepEqual(Object.keys(first[t]!.served).sort(), ["w1", "w2"], JSON.stringify(first));
  }

  // w1 drains under load (20 ms calls, 4 lanes per balancer, ~3 s): it leaves etcd first, both
  // balancers follow, no call fails.
  const during = client(600, 20_000, targets);
  await during.started;
  await new Promise((r) => setTimeout(r, 500));
  w1.child.kill("SIGTERM");
  assert.equal(await w1.exited, 0, w1.lines.join("\n"));
  const drained = await during.done();
  for (const t of targets) {
    assert.deepEqual(drained[t]!.failed, [], JSON.stringify(drained));
    assert.ok(
      (drained[t]!.served["w1"] ?? 0) > 0,
      `calls reached w1 before its drain: ${JSON.stringify(drained)}`,
    );
  }
  const last = await client(100, 0, targets).done();
  for (const t of targets) assert.deepEqual(last[t]!.served, { w2: 100 }, JSON.stringify(last));
  console.log(
    `across namespaces: before ${JSON.stringify(first)}; during w1's drain ${JSON.stringify(drained)}`,
  );

  for (const p of [lb1, lb2, w2, etcd]) p.child.kill("SIGTERM");
  for (const p of [lb1, lb2, w2]) assert.equal(await p.exited, 0);
});
