// bench/transfer: roster/transfer's upload of a generated payload (default 1 GiB) to one server —
// direct, through `roster lb` and through nginx (grpc_pass) — with zstd and without, in one run. Per
// path: MiB/s, CPU per MiB of raw payload in the client, the proxy and the server, and bytes on the wire.
// The proxies' CPU is read from /proc (nginx runs as one process, no master).
//
// usage: node --import tsx bench/transfer/run.ts [--size-mib 1024] [--random 0.25] [--paths direct,roster,nginx]
//        [--codecs zstd,identity] [--rounds 1] [--out FILE.json]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Command } from "commander";
import { type CodecName, upload, zstd } from "../../src/transfer/index.ts";
import { startForeignCpuMeter } from "../../test/support/cpu-noise.ts";
import { spawnScript } from "../../test/support/echo-backend.ts";
import { type ProxyProcess, startNginx, startRosterLb } from "../../test/support/proxy-process.ts";
import { generatedPayload } from "../../test/support/transfer-server.ts";

const MiB = 1024 * 1024;
const SERVER = fileURLToPath(new URL("../../test/support/transfer-server.ts", import.meta.url));

const o = new Command()
  .option("--size-mib <n>", "payload size, MiB", Number, 1024)
  .option("--random <f>", "random fraction of each MiB (the rest zeros)", Number, 0.25)
  .option("--paths <list>", "direct, roster, nginx", "direct,roster,nginx")
  .option("--codecs <list>", "zstd, identity", "zstd,identity")
  .option("--rounds <n>", "rounds (each path and codec once per round, in turn)", Number, 1)
  .option("--out <file>", "write every run as JSON")
  .parse()
  .opts<{ sizeMib: number; random: number; paths: string; codecs: string; rounds: number; out?: string }>();

/** CPU seconds (user + system) of a process, from /proc. */
function cpuSeconds(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

interface Run {
  round: number;
  path: string;
  codec: CodecName;
  mib: number;
  seconds: number;
  mibPerS: number;
  wireMib: number;
  clientCpuMsPerMib: number;
  proxyCpuMsPerMib: number | null;
  serverCpuMsPerMib: number;
  foreignCores: number;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "roster-bench-transfer-"));
  const server = await spawnScript(SERVER, []);
  const backend = `127.0.0.1:${server.port}`;
  const proxies: Record<string, ProxyProcess> = {};
  const paths = o.paths.split(",");
  const runs: Run[] = [];
  try {
    if (paths.includes("roster"))
      proxies.roster = await startRosterLb(dir, `backends: [${backend}]\nlog:\n  level: info\n`);
    if (paths.includes("nginx"))
      proxies.nginx = await startNginx(join(dir, "nginx"), { backend, readTimeoutS: 300 });
    const size = o.sizeMib * MiB;
    for (let round = 1; round <= o.rounds; round++) {
      for (const path of paths) {
        for (const codec of o.codecs.split(",") as CodecName[]) {
          const proxy = proxies[path];
          const address = proxy?.address ?? backend;
          const client = new grpc.Client(address, grpc.credentials.createInsecure());
          // Warm the connection and the code.
          await upload(client, generatedPayload(8 * MiB, o.random * MiB), { codec });
          const meter = startForeignCpuMeter([server.pid, ...Object.values(proxies).map((p) => p.pid)]);
          const proxyCpu0 = proxy !== undefined ? cpuSeconds(proxy.pid) : 0;
          const serverCpu0 = cpuSeconds(server.pid);
          const clientCpu0 = process.cpuUsage();
          const t0 = performance.now();
          const r = await upload(client, generatedPayload(size, o.random * MiB), { codec, name: "bench" });
          const seconds = (performance.now() - t0) / 1000;
          const clientCpu = process.cpuUsage(clientCpu0);
          const foreign = meter.stop();
          client.close();
          const mib = r.size / MiB;
          const run: Run = {
            round,
            path,
            codec,
            mib,
            seconds,
            mibPerS: mib / seconds,
            wireMib: r.wireBytes / MiB,
            clientCpuMsPerMib: (clientCpu.user + clientCpu.system) / 1000 / mib,
            proxyCpuMsPerMib: proxy !== undefined ? ((cpuSeconds(proxy.pid) - proxyCpu0) * 1000) / mib : null,
            serverCpuMsPerMib: ((cpuSeconds(server.pid) - serverCpu0) * 1000) / mib,
            foreignCores: foreign.foreignCores,
          };
          runs.push(run);
          process.stderr.write(`${JSON.stringify(run)}\n`);
        }
      }
    }
  } finally {
    for (const p of Object.values(proxies)) await p.stop();
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
  const load = os.loadavg().map((l) => l.toFixed(1));
  const lines = [
    `zstd: ${zstd().implementation}; payload ${o.sizeMib} MiB, ${Math.round(o.random * 100)} % random per MiB; loadavg at the end ${load.join(" ")}`,
    "",
    "| round | path | codec | MiB/s | wire MiB | client CPU ms/MiB | proxy CPU ms/MiB | server CPU ms/MiB | other processes, cores |",
    "|---|---|---|---|---|---|---|---|---|",
    ...runs.map(
      (r) =>
        `| ${r.round} | ${r.path} | ${r.codec} | ${r.mibPerS.toFixed(0)} | ${r.wireMib.toFixed(0)} | ${r.clientCpuMsPerMib.toFixed(2)} | ${r.proxyCpuMsPerMib?.toFixed(2) ?? "—"} | ${r.serverCpuMsPerMib.toFixed(2)} | ${r.foreignCores.toFixed(2)} |`,
    ),
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  if (o.out !== undefined) writeFileSync(o.out, JSON.stringify({ options: o, runs }, null, 2));
}

void main().catch((err: Error) => {
  console.error(err);
  process.exit(1);
});
