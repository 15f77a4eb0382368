// HTTP/2 attacks on `roster lb` while a grpc-js victim calls through it: per attack, the victim's
// success rate and its p99 latency during the attack divided by its p99 just before (issue 10's target:
// no failed victim call, p99 at most 3x), and the balancer's peak RSS. One run per attack.
//
// The balancer (test/support/lb-process.ts) and two grpc-js echo backends run as child processes; the
// victim (4 concurrent unary loops) runs here, the attacker (raw frames, test/support/raw-h2.ts) in a
// child process of its own, so the attacker's CPU does not count as the victim's latency.
//
// usage: node --import tsx bench/attacks/run.ts [--seconds 3] [--only rapid-reset,ping-flood]
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import {
  ErrorCode,
  Flag,
  FrameType,
  pingFrame,
  rstStreamFrame,
  SettingId,
  settingsFrame,
} from "../../src/http2/frame.ts";
import {
  type ChildScript,
  EchoClient,
  echoPath,
  echoService,
  grpcFrame,
  spawnEchoBackend,
} from "../../test/support/echo-backend.ts";
import { spawnLbProcess } from "../../test/support/lb-process.ts";
import {
  dataFrame,
  echoBody,
  grpcRequestHeaders,
  literalBlock,
  RawH2,
  rawFrame,
  sendHpackBomb,
} from "../../test/support/raw-h2.ts";

const opts = new Command()
  .option("--seconds <n>", "length of the baseline and of the attack", "3")
  .option("--only <names>", "comma-separated attack names")
  .option("--attacker <name>", "(internal) run one attack against --port in this process")
  .option("--port <n>", "(internal) the balancer's port")
  .parse()
  .opts<{ seconds: string; only?: string; attacker?: string; port?: string }>();
const seconds = Number(opts.seconds);

type Attack = (port: number, until: number, attackers: RawH2[]) => Promise<void>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `once` on fresh connections until `until` (each connection closed by the balancer or us). */
async function onFreshConnections(
  port: number,
  until: number,
  attackers: RawH2[],
  once: (a: RawH2) => Promise<void>,
  connect?: Parameters<typeof RawH2.connect>[1],
): Promise<void> {
  // Bounded by the clock.
  while (Date.now() < until) {
    const a = await RawH2.connect(port, connect);
    attackers.push(a);
    await once(a).catch(() => {});
    a.destroy();
  }
}

const attacks: Record<string, Attack> = {
  "rapid-reset": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      const frames: Buffer[] = [];
      for (let i = 0; i < 500; i++) {
        const id = 1 + 2 * i;
        frames.push(
          a.headersFrame(id, grpcRequestHeaders()),
          dataFrame(id, echoBody("x"), true),
          rstStreamFrame(id, ErrorCode.CANCEL),
        );
      }
      a.send(...frames);
      await a.closedWithin(2000);
    }),
  "half-reset": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      let id = 1;
      // Bounded by the clock.
      while (Date.now() < until && !a.closed) {
        const frames: Buffer[] = [];
        for (let i = 0; i < 100; i++, id += 2) {
          frames.push(a.headersFrame(id, grpcRequestHeaders()), dataFrame(id, echoBody("y"), true));
          if (i % 2 === 1) frames.push(rstStreamFrame(id, ErrorCode.CANCEL));
        }
        a.send(...frames);
        const last = id - 4;
        await a.waitFrame(
          (f) => f.stream === last && f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0,
          3000,
        );
        a.frames.length = 0;
      }
    }),
  "stream-flood": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      let id = 1;
      // Bounded by the clock and the balancer closing.
      while (Date.now() < until && !a.closed) {
        const frames: Buffer[] = [];
        for (let i = 0; i < 200; i++, id += 2) frames.push(a.headersFrame(id, grpcRequestHeaders()));
        a.send(...frames);
        await sleep(10);
      }
    }),
  "hpack-bomb": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      // Bounded by the clock and the balancer closing.
      for (let id = 1; Date.now() < until && !a.closed; id += 2) {
        sendHpackBomb(a, id); // ~48 MB decoded from a ~16 KB block
        await a.response(id, 2000);
        a.frames.length = 0;
      }
    }),
  "continuation-flood": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      a.send(a.headersBlockFrame(1, literalBlock(grpcRequestHeaders()), { endHeaders: false }));
      const piece = rawFrame(FrameType.CONTINUATION, 0, 1, literalBlock(["x-more", "m".repeat(100)]));
      // Bounded by the clock and the balancer closing.
      while (Date.now() < until && !a.closed) {
        a.send(...Array.from({ length: 100 }, () => piece));
        await sleep(1);
      }
    }),
  "ping-flood": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      a.socket.pause();
      const ping = pingFrame(false, Buffer.from("floodflo"));
      // Bounded by the clock and the balancer closing.
      while (Date.now() < until && !a.socket.destroyed && !a.closed) {
        if (a.socket.writableLength < 1 << 20) a.send(...Array.from({ length: 1000 }, () => ping));
        await sleep(1);
      }
    }),
  "settings-flood": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      a.socket.pause();
      const s = settingsFrame([[SettingId.MAX_CONCURRENT_STREAMS, 100]]);
      // Bounded by the clock and the balancer closing.
      while (Date.now() < until && !a.socket.destroyed) {
        if (a.socket.writableLength < 256 * 1024) a.send(...Array.from({ length: 2000 }, () => s));
        await sleep(1);
      }
    }),
  "slow-reader": async (port, until, attackers) => {
    // Ten connections granting huge windows, each asking for 100 MB, none reading.
    const readers: RawH2[] = [];
    for (let i = 0; i < 10; i++) {
      const a = await RawH2.connect(port, { settings: [[SettingId.INITIAL_WINDOW_SIZE, 2 ** 31 - 1]] });
      attackers.push(a);
      readers.push(a);
      a.socket.pause();
      const req = grpcFrame(
        echoService.ServerStream!.requestSerialize({ count: 400, size: 262_144, interval_ms: 0 }),
      );
      a.send(a.headersFrame(1, grpcRequestHeaders(echoPath("ServerStream"))), dataFrame(1, req, true));
    }
    await sleep(Math.max(until - Date.now(), 0));
    for (const a of readers) a.destroy();
  },
  "malformed-frames": (port, until, attackers) =>
    onFreshConnections(port, until, attackers, async (a) => {
      a.send(rawFrame(FrameType.DATA, 0, 0, Buffer.alloc(4)));
      await a.closedWithin(2000);
    }),
};

interface Sample {
  ok: number;
  failed: number;
  latencies: number[];
}

function p99(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]!;
}

/** Victim loops until `until`; every call bounded by a 5 s deadline. */
async function victim(client: EchoClient, until: number): Promise<Sample> {
  const sample: Sample = { ok: 0, failed: 0, latencies: [] };
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      // Bounded by the clock.
      while (Date.now() < until) {
        const t = performance.now();
        try {
          await client.echo({ message: "victim" }, { deadlineMs: 5000 });
          sample.ok++;
          sample.latencies.push(performance.now() - t);
        } catch {
          sample.failed++;
        }
      }
    }),
  );
  return sample;
}

async function main(): Promise<void> {
  const children: ChildScript[] = [];
  try {
    const backends = await Promise.all([spawnEchoBackend("b0"), spawnEchoBackend("b1")]);
    children.push(...backends);
    let rss = 0;
    const lb = await spawnLbProcess(
      "round_robin",
      backends.map((b) => `127.0.0.1:${b.port}`),
      (bytes) => {
        rss = Math.max(rss, bytes);
      },
    );
    children.push(lb);
    const client = new EchoClient(`127.0.0.1:${lb.port}`);
    await client.echo({ message: "warm" }, { deadlineMs: 5000 });
    await victim(client, Date.now() + 3000); // warm-up (JIT), not measured
    const names = opts.only ? opts.only.split(",") : Object.keys(attacks);
    const rows: string[] = [];
    for (const name of names) {
      if (attacks[name] === undefined) throw new Error(`no attack ${name}`);
      const before = await victim(client, Date.now() + seconds * 1000);
      const rssBefore = rss;
      rss = 0;
      const until = Date.now() + seconds * 1000;
      const [during, connections] = await Promise.all([victim(client, until), runAttacker(name, lb.port)]);
      const okPct = (100 * during.ok) / Math.max(during.ok + during.failed, 1);
      const ratio = p99(during.latencies) / p99(before.latencies);
      rows.push(
        `| ${name} | ${during.ok} | ${during.failed} | ${okPct.toFixed(1)} | ${p99(before.latencies).toFixed(2)} | ${p99(during.latencies).toFixed(2)} | ${ratio.toFixed(2)} | ${(rssBefore / 1e6).toFixed(0)} → ${(rss / 1e6).toFixed(0)} | ${connections} |`,
      );
      process.stderr.write(`${rows.at(-1)}\n`);
      await new Promise((r) => setTimeout(r, 500));
    }
    client.close();
    console.log(
      "| attack | victim ok | victim failed | ok % | p99 before ms | p99 during ms | during ÷ before | lb RSS MB (before → peak during) | attacker connections |",
    );
    console.log("|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) console.log(r);
  } finally {
    for (const c of children) await c.kill();
  }
}

/** Runs attack `name` in a child process for `seconds`; resolves with the connections it opened. */
function runAttacker(name: string, port: number): Promise<number> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", SCRIPT, "--attacker", name, "--port", String(port), "--seconds", String(seconds)],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let out = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (t: string) => {
    out += t;
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), (seconds + 10) * 1000);
  return new Promise((resolve) => {
    child.once("exit", () => {
      clearTimeout(killer);
      resolve(Number(/CONNECTIONS (\d+)/.exec(out)?.[1] ?? Number.NaN));
    });
  });
}

async function attackerMain(name: string): Promise<void> {
  const attack = attacks[name];
  if (attack === undefined) throw new Error(`no attack ${name}`);
  const attackers: RawH2[] = [];
  await attack(Number(opts.port), Date.now() + seconds * 1000, attackers);
  for (const a of attackers) a.destroy();
  process.stdout.write(`CONNECTIONS ${attackers.length}\n`);
  process.exit(0);
}

const SCRIPT = fileURLToPath(import.meta.url);
if (opts.attacker !== undefined) void attackerMain(opts.attacker);
else void main();
