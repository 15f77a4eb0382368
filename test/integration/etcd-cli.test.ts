// `roster lb --discovery etcd://…`, `roster register` and `roster serve --etcd` as a user runs them (the
// CLI in child processes), against a real etcd (Debian's etcd-server) started here on loopback ports.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { parseAddress } from "../../src/core/endpoint.ts";
import { SKILL_METRIC_PREFIX } from "../../src/core/skills.ts";
import { createEtcdClient } from "../../src/discovery/etcd-client.ts";
import { EtcdRegistration } from "../../src/discovery/etcd-registration.ts";
import { parseEtcdHosts } from "../../src/discovery/etcd-target.ts";
import { createDemoClient } from "../support/demo-client.ts";
import { type EchoBackend, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";
import { type EtcdServer, startEtcd } from "../support/etcd-server.ts";
import { startOrcaBackend } from "../support/orca-backend.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const cli = ["--import", "tsx", "src/cli/main.ts"];

/**
 * How long etcd stays down under load in the outage test. The issue asks for 30 s; ROSTER_ETCD_OUTAGE_MS
 * shortens it for quick local runs.
 */
const OUTAGE_MS = Number(process.env["ROSTER_ETCD_OUTAGE_MS"] ?? 30_000);

describe("flags of the etcd commands", () => {
  const cases: Array<[string[], RegExp]> = [
    [["lb", "--discovery", "etcd://127.0.0.1:2379"], /--discovery: .*has no key prefix/],
    [
      ["lb", "--discovery", "consul://x:1/p"],
      /--discovery: .*is not etcd:\/\/HOST:PORT\/PREFIX or dns:\/\/NAME:PORT/,
    ],
    [["lb", "--discovery", "etcd://127.0.0.1:99999/p"], /--discovery: .*above 65535/],
    [["register", "--etcd", "127.0.0.1:1", "--prefix", "p", "--address", "nohost"], /--address: "nohost"/],
    [
      ["register", "--etcd", "127.0.0.1:1", "--prefix", "p", "--address", "127.0.0.1:5", "--lease-ttl", "1"],
      /--lease-ttl: must be a whole number of seconds >= 2/,
    ],
    [
      ["register", "--etcd", "127.0.0.1:1", "--prefix", "p", "--address", "127.0.0.1:5", "--label", "zone"],
      /--label: "zone" is not KEY=VALUE/,
    ],
    [["serve", "examples/echo-service.ts", "--prefix", "p"], /--prefix: needs --etcd/],
    [
      [
        "serve",
        "examples/echo-service.ts",
        "--etcd",
        "127.0.0.1:1",
        "--prefix",
        "p",
        "--listen",
        "0.0.0.0:0",
      ],
      /--advertise: 0\.0\.0\.0:0 is not an address others can connect to/,
    ],
  ];
  for (const [args, message] of cases) {
    it(`rejects \`roster ${args.join(" ")}\` with one clear line`, () => {
      const r = spawnSync(process.execPath, [...cli, ...args], {
        cwd: root,
        encoding: "utf8",
        timeout: 20_000,
      });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    });
  }
});

/** A CLI child process whose stdout and stderr lines are collected. */
interface Proc {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
  waitLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

const started: ChildProcess[] = [];

function spawnCli(args: string[]): Proc {
  const child = spawn(process.execPath, [...cli, ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  started.push(child);
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
  return {
    child,
    lines,
    exited,
    async waitLine(pattern, timeoutMs = 20_000) {
      await waitFor(
        () => lines.some((l) => pattern.test(l)),
        timeoutMs,
        `a line matching ${pattern}:\n${lines.join("\n")}`,
      );
      return lines.find((l) => pattern.test(l))!;
    },
  };
}

/** `roster lb` following `prefix`; resolves with its listen and admin addresses. */
async function startLbProcess(etcd: EtcdServer, prefix: string) {
  const lb = spawnCli([
    "lb",
    "--discovery",
    `etcd://${etcd.endpoint}/${prefix}`,
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--policy",
    "round_robin",
  ]);
  const line = await lb.waitLine(/listening on/);
  const { listen, admin } = JSON.parse(line) as { listen: string; admin: string };
  return { ...lb, listen, admin };
}

async function statusBackends(admin: string): Promise<string[]> {
  const status = (await (await fetch(`http://${admin}/status`)).json()) as {
    backends: Array<{ key: string }>;
  };
  return status.backends.map((b) => b.key).sort();
}

/** Lanes of calls until `stop()`; every outcome is kept, replies by who served them. */
function load(call: () => Promise<string>, lanes: number) {
  let stopped = false;
  const failures: string[] = [];
  const servedBy: Array<{ at: number; by: string }> = [];
  let ok = 0;
  const done = Promise.all(
    Array.from({ length: lanes }, async () => {
      while (!stopped) {
        try {
          servedBy.push({ at: Date.now(), by: await call() });
          ok++;
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    }),
  );
  return {
    failures,
    servedBy,
    ok: () => ok,
    async stop() {
      stopped = true;
      await done;
    },
  };
}

describe("roster lb, register and serve with a real etcd", () => {
  let etcd: EtcdServer;
  let a: EchoBackend;
  let b: EchoBackend;

  before(async () => {
    etcd = await startEtcd();
    a = await startEchoBackend({ id: "a" });
    b = await startEchoBackend({ id: "b" });
  });
  afterEach(() => {
    for (const c of started.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await etcd?.dispose();
  });

  it("routes to what `roster register` adds within a second, and drops a registrant killed with SIGKILL when its lease expires", {
    timeout: 60_000,
  }, async () => {
    const lb = await startLbProcess(etcd, "cli1/echo");
    const regA = spawnCli([
      "register",
      "--etcd",
      etcd.endpoint,
      "--prefix",
      "cli1/echo",
      "--address",
      a.address,
      "--lease-ttl",
      "2",
    ]);
    await regA.waitLine(/^REGISTERED cli1\/echo\//);
    const client = new EchoClient(lb.listen);
    const l = load(async () => (await client.echo({ message: "x" }, { deadlineMs: 10_000 })).served_by, 4);
    await waitFor(() => l.servedBy.some((s) => s.by === "a"), 5000, "a call served by a");

    const regB = spawnCli([
      "register",
      "--etcd",
      etcd.endpoint,
      "--prefix",
      "cli1/echo",
      "--address",
      b.address,
      "--lease-ttl",
      "2",
    ]);
    await regB.waitLine(/^REGISTERED/);
    const registeredAt = Date.now();
    await waitFor(() => l.servedBy.some((s) => s.by === "b"), 5000, "a call served by b");
    const followMs = l.servedBy.find((s) => s.by === "b")!.at - registeredAt;
    console.log(`membership change → first call on the new backend: ${followMs} ms`);
    assert.ok(followMs < 1000, `the lb routed to the new member ${followMs} ms after it was written`);

    // SIGKILL: no deregistration; the key goes when the 2 s lease expires, and the lb follows.
    process.kill(regA.child.pid!, "SIGKILL");
    const killedAt = Date.now();
    let backends: string[] = [];
    // Bounded: TTL 2 s plus etcd's expiry check; 10 s at most.
    while (Date.now() - killedAt < 10_000) {
      backends = await statusBackends(lb.admin);
      if (backends.length === 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(
      `killed registrant's member gone from the lb after ${Date.now() - killedAt} ms (lease TTL 2 s)`,
    );
    assert.deepEqual(backends, [b.address]);
    const after = l.servedBy.length;
    await waitFor(() => l.servedBy.length >= after + 50, 5000, "more calls");
    assert.ok(
      l.servedBy.slice(after).every((s) => s.by === "b"),
      "every call after the expiry on b",
    );
    await l.stop();
    assert.deepEqual(l.failures, []);

    // SIGTERM deregisters at once.
    regB.child.kill("SIGTERM");
    assert.equal(await regB.exited, 0);
    await waitFor(
      () => regB.lines.some((x) => x.includes("deregistered from etcd")),
      1000,
      "the deregistration",
    );
    client.close();
    lb.child.kill("SIGTERM");
    assert.equal(await lb.exited, 0);
  });

  it("`roster serve --etcd` leaves etcd at the start of its drain: 0 failed calls through the lb", {
    timeout: 90_000,
  }, async () => {
    const serveArgs = (n: number) => [
      "serve",
      "examples/echo-service.ts",
      "--workers",
      "1",
      "--listen",
      "127.0.0.1:0",
      "--etcd",
      etcd.endpoint,
      "--prefix",
      "cli2/demo",
      "--lease-ttl",
      "2",
      "--label",
      `server=s${n}`,
      "--deregister-delay",
      "500",
    ];
    const s1 = spawnCli(serveArgs(1));
    const s2 = spawnCli(serveArgs(2));
    await s1.waitLine(/registered in etcd/, 30_000);
    await s2.waitLine(/registered in etcd/, 30_000);
    const s1Address = (JSON.parse(s1.lines.find((l) => l.includes("listening on"))!) as { listen: string })
      .listen;
    const s2Address = (JSON.parse(s2.lines.find((l) => l.includes("listening on"))!) as { listen: string })
      .listen;
    const lb = await startLbProcess(etcd, "cli2/demo");
    const client = createDemoClient(lb.listen);
    // 100 ms calls: some are in flight on s1 when it drains.
    const l = load(async () => (await client.echo("Echo", 0, 10_000, 100_000)).served_by, 16);
    // Bounded: until both servers are in the lb's membership.
    for (let i = 0; i < 100 && (await statusBackends(lb.admin)).length < 2; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await statusBackends(lb.admin), [s1Address, s2Address].sort());
    await new Promise((r) => setTimeout(r, 1000));
    const before = l.ok();
    s1.child.kill("SIGTERM");
    await s1.waitLine(/deregistered from etcd/, 5000);
    assert.equal(await s1.exited, 0, s1.lines.join("\n"));
    assert.deepEqual(await statusBackends(lb.admin), [s2Address]);
    // The order: the lb dropped s1 before s1 began to drain (both log pino's ISO "time").
    const timeOf = (lines: string[], test: (l: { msg: string; backend?: string }) => boolean) => {
      const line = lines
        .map((x) => JSON.parse(x) as { msg: string; backend?: string; time: string })
        .find(test);
      assert.ok(line !== undefined, lines.join("\n"));
      return Date.parse(line.time);
    };
    const removedAt = timeOf(lb.lines, (x) => x.msg === "backend removed" && x.backend === s1Address);
    const drainAt = timeOf(s1.lines, (x) => x.msg.startsWith("draining: health NOT_SERVING"));
    assert.ok(removedAt <= drainAt, `the lb dropped s1 ${removedAt - drainAt} ms after s1 began to drain`);
    await new Promise((r) => setTimeout(r, 500));
    await l.stop();
    assert.ok(l.ok() > before + 50, `calls went on during the drain (${l.ok() - before})`);
    assert.deepEqual(l.failures, [], `failed calls: ${l.failures.slice(0, 5).join("; ")}`);
    client.close();
    s2.child.kill("SIGTERM");
    assert.equal(await s2.exited, 0);
    lb.child.kill("SIGTERM");
    assert.equal(await lb.exited, 0);
  });

  it("three balancers on one prefix each route to a new member soon after it registers (8 rounds)", {
    timeout: 90_000,
  }, async () => {
    const extra = await Promise.all(Array.from({ length: 8 }, (_, i) => startEchoBackend({ id: `n${i}` })));
    const base = new EtcdRegistration({
      target: { hosts: parseEtcdHosts(etcd.endpoint, "etcd"), prefix: "cli4/echo" },
      address: parseAddress(a.address, "a"),
    });
    await base.start();
    const lbs = await Promise.all([0, 1, 2].map(() => startLbProcess(etcd, "cli4/echo")));
    const clients = lbs.map((lb) => new EchoClient(lb.listen));
    const loads = clients.map((c) =>
      load(async () => (await c.echo({ message: "x" }, { deadlineMs: 10_000 })).served_by, 2),
    );
    await waitFor(() => loads.every((l) => l.ok() > 10), 10_000, "calls through every balancer");
    const regs: EtcdRegistration[] = [];
    const delays: number[] = [];
    for (const backend of extra) {
      const reg = new EtcdRegistration({
        target: { hosts: parseEtcdHosts(etcd.endpoint, "etcd"), prefix: "cli4/echo" },
        address: parseAddress(backend.address, backend.id),
      });
      regs.push(reg);
      await reg.start();
      const at = Date.now();
      await waitFor(
        () => loads.every((l) => l.servedBy.some((s) => s.by === backend.id)),
        5000,
        `every balancer routing to ${backend.id}`,
      );
      for (const l of loads) delays.push(l.servedBy.find((s) => s.by === backend.id)!.at - at);
    }
    delays.sort((x, y) => x - y);
    console.log(
      `membership change → each of 3 balancers routing to the new member (${delays.length} samples): median ${delays[Math.floor(delays.length / 2)]} ms, max ${delays.at(-1)} ms`,
    );
    await Promise.all(loads.map((l) => l.stop()));
    for (const l of loads) assert.deepEqual(l.failures, []);
    for (const c of clients) c.close();
    await Promise.all([base, ...regs].map((r) => r.close()));
    for (const lb of lbs) lb.child.kill("SIGTERM");
    for (const lb of lbs) assert.equal(await lb.exited, 0);
    await Promise.all(extra.map((x) => x.close()));
  });

  it("live settings under a watched key: a change applies live, a bad one is refused (the last good kept, the error in /status and the log)", {
    timeout: 60_000,
  }, async () => {
    const key = "cli5/lb-settings";
    const lb = spawnCli([
      "lb",
      "--backend",
      a.address,
      "--backend",
      b.address,
      "--settings",
      `etcd://${etcd.endpoint}/${key}`,
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
    ]);
    const { listen, admin } = JSON.parse(await lb.waitLine(/listening on/)) as {
      listen: string;
      admin: string;
    };
    type Status = {
      policy: string;
      settings: { applied: string | null; refused?: { revision: string; error: string } };
    };
    const status = async () => (await (await fetch(`http://${admin}/status`)).json()) as Status;
    const client = new EchoClient(listen);
    /** Who served 40 calls made 4 at a time. */
    const servers = async () => {
      const by = new Set<string>();
      for (let i = 0; i < 10; i++)
        for (const r of await Promise.all(
          [0, 1, 2, 3].map(() => client.echo({ message: "x" }, { deadlineMs: 5000 })),
        ))
          by.add(r.served_by);
      return [...by].sort();
    };
    const until = async (what: string, check: (s: Status) => boolean) => {
      // Bounded: 50 polls of 100 ms.
      for (let i = 0; i < 50; i++) {
        if (check(await status())) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(
        `timed out waiting for ${what}: ${JSON.stringify(await status())}\n${lb.lines.join("\n")}`,
      );
    };
    const etcdClient = createEtcdClient(parseEtcdHosts(etcd.endpoint, "etcd"), 3000);
    try {
      assert.equal((await status()).policy, "least_request");
      assert.deepEqual(await servers(), ["a", "b"]);

      await etcdClient.put(key).value("policy: pick_first\n");
      await until("pick_first applied", (s) => s.policy === "pick_first" && s.settings.applied !== null);
      assert.equal((await servers()).length, 1, "pick_first: one backend takes every call");

      await etcdClient.put(key).value("policy: fastest\n");
      await until("the bad value refused", (s) => s.settings.refused !== undefined);
      const refused = (await status()).settings.refused!;
      assert.match(refused.error, /^etcd cli5\/lb-settings: policy: unknown policy "fastest"/);
      assert.equal((await status()).policy, "pick_first", "the last good settings stay");
      assert.equal((await servers()).length, 1);
      await lb.waitLine(/refused, keeping the previous settings/);

      await etcdClient.put(key).value('{"policy": "round_robin"}');
      await until(
        "round_robin applied",
        (s) => s.policy === "round_robin" && s.settings.refused === undefined,
      );
      assert.deepEqual(await servers(), ["a", "b"]);

      // Deleted: back to the flags' settings.
      await etcdClient.delete().key(key);
      await until(
        "the flags' policy back",
        (s) => s.policy === "least_request" && s.settings.applied === null,
      );
    } finally {
      etcdClient.close();
      client.close();
    }
    lb.child.kill("SIGTERM");
    assert.equal(await lb.exited, 0);
  });

  it("two balancers on one prefix, each with its own ORCA stream to every worker, send each class to the same skilled worker", {
    timeout: 60_000,
  }, async () => {
    // Four workers, each reporting a résumé skilled in one class (what a roster serve worker learns).
    const workers = await Promise.all(
      [0, 1, 2, 3].map((i) =>
        startOrcaBackend({ id: `w${i}`, report: { namedMetrics: { [`${SKILL_METRIC_PREFIX}t${i}`]: 100 } } }),
      ),
    );
    const regs = workers.map(
      (w) =>
        new EtcdRegistration({
          target: { hosts: parseEtcdHosts(etcd.endpoint, "etcd"), prefix: "cli6/workers" },
          address: parseAddress(w.address, w.id),
        }),
    );
    await Promise.all(regs.map((r) => r.start()));
    const dir = mkdtempSync(join(tmpdir(), "roster-etcd-"));
    const config = join(dir, "lb.yaml");
    writeFileSync(
      config,
      `listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ndiscovery: etcd://${etcd.endpoint}/cli6/workers\npolicy: resume\nclassifier: { header: x-tenant }\n`,
    );
    const lbs = await Promise.all(
      [0, 1].map(async () => {
        const lb = spawnCli(["lb", "--config", config]);
        return {
          ...lb,
          ...(JSON.parse(await lb.waitLine(/listening on/)) as { listen: string; admin: string }),
        };
      }),
    );
    const clients = lbs.map((lb) => new EchoClient(lb.listen));
    try {
      // Each balancer hears every worker's résumé on a stream of its own.
      await waitFor(() => workers.every((w) => w.orca().streams >= 2), 10_000, "two ORCA streams per worker");
      // Bounded: until each balancer has read a résumé from every worker.
      for (const lb of lbs)
        for (let i = 0; i < 100; i++) {
          const st = (await (await fetch(`http://${lb.admin}/status`)).json()) as {
            backends: Array<{ orca?: { classes: number } }>;
          };
          if (st.backends.length === 4 && st.backends.every((x) => (x.orca?.classes ?? 0) > 0)) break;
          await new Promise((r) => setTimeout(r, 100));
        }
      // 50 calls of each class through each balancer, 4 at a time.
      const placed = new Map<string, Map<string, number>>(); // "lb/class" → worker → calls
      for (const [n, client] of clients.entries())
        for (const t of [0, 1, 2, 3]) {
          const counts = new Map<string, number>();
          const metadata = new grpc.Metadata();
          metadata.set("x-tenant", `t${t}`);
          for (let round = 0; round < 13; round++) {
            const replies = await Promise.all(
              [0, 1, 2, 3].map(() => client.echo({ message: "x" }, { deadlineMs: 5000, metadata })),
            );
            for (const r of replies) counts.set(r.served_by, (counts.get(r.served_by) ?? 0) + 1);
          }
          placed.set(`lb${n}/t${t}`, counts);
        }
      const detail = JSON.stringify(
        Object.fromEntries([...placed].map(([k, m]) => [k, Object.fromEntries(m)])),
      );
      for (const [where, counts] of placed) {
        const t = where.split("/")[1]!.slice(1);
        const total = [...counts.values()].reduce((x, y) => x + y, 0);
        const onSkilled = counts.get(`w${t}`) ?? 0;
        assert.ok(onSkilled / total >= 0.9, `${where}: ${onSkilled}/${total} on w${t}; all: ${detail}`);
      }
      console.log(`classes by balancer: ${detail}`);
    } finally {
      for (const c of clients) c.close();
      for (const lb of lbs) lb.child.kill("SIGTERM");
      for (const lb of lbs) await lb.exited;
      await Promise.all(regs.map((r) => r.close()));
      await Promise.all(workers.map((w) => w.close()));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it(`etcd stopped for ${OUTAGE_MS / 1000} s under load: 0 failed calls, the lb keeps routing, and follows etcd again on its return`, {
    timeout: OUTAGE_MS + 60_000,
  }, async () => {
    const regA = spawnCli([
      "register",
      "--etcd",
      etcd.endpoint,
      "--prefix",
      "cli3/echo",
      "--address",
      a.address,
      "--lease-ttl",
      "2",
    ]);
    const regB = spawnCli([
      "register",
      "--etcd",
      etcd.endpoint,
      "--prefix",
      "cli3/echo",
      "--address",
      b.address,
      "--lease-ttl",
      "2",
    ]);
    await regA.waitLine(/^REGISTERED/);
    await regB.waitLine(/^REGISTERED/);
    const lb = await startLbProcess(etcd, "cli3/echo");
    // Bounded: until both members are in the lb's membership.
    for (let i = 0; i < 100 && (await statusBackends(lb.admin)).length < 2; i++)
      await new Promise((r) => setTimeout(r, 100));
    const client = new EchoClient(lb.listen);
    const l = load(async () => (await client.echo({ message: "x" }, { deadlineMs: 10_000 })).served_by, 8);
    await new Promise((r) => setTimeout(r, 500));
    await etcd.stop();
    const stoppedAt = l.servedBy.length;
    await lb.waitLine(/etcd unreachable: routing on the last-known members/, 10_000);
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    const during = l.servedBy.slice(stoppedAt);
    assert.deepEqual(l.failures, []);
    assert.ok(
      during.some((s) => s.by === "a") && during.some((s) => s.by === "b"),
      "both backends served during the outage",
    );
    console.log(`etcd down ${OUTAGE_MS} ms: ${during.length} calls, 0 failed`);
    await etcd.start();
    await lb.waitLine(/etcd is reachable again/, 15_000);
    // The registrants kept (or renewed) their keys; the lb follows changes again: one leaves.
    assert.deepEqual(await statusBackends(lb.admin), [a.address, b.address].sort());
    regA.child.kill("SIGTERM");
    assert.equal(await regA.exited, 0);
    // Bounded: 5 s.
    for (let i = 0; i < 50 && (await statusBackends(lb.admin)).length > 1; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await statusBackends(lb.admin), [b.address]);
    await l.stop();
    assert.deepEqual(l.failures, [], `failed calls: ${l.failures.slice(0, 5).join("; ")}`);
    client.close();
    regB.child.kill("SIGTERM");
    lb.child.kill("SIGTERM");
    assert.equal(await lb.exited, 0);
  });
});
