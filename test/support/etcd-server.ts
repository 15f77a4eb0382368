// A real etcd server (Debian's etcd-server, /usr/bin/etcd) for tests: loopback ports, a temporary data
// directory, stopped by pid. `stop()` then `start()` again restarts it on the same ports and data (an
// outage). Fails with a message naming the package when the binary is missing.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ETCD_BINARY = process.env["ETCD_BINARY"] ?? "/usr/bin/etcd";

export interface EtcdServer {
  /** "127.0.0.1:PORT" of the client URL. */
  readonly endpoint: string;
  readonly pid: () => number | undefined;
  /** (Re)starts on the same ports and data; resolves when /health answers. */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); resolves when it has exited. */
  stop(): Promise<void>;
  /** Stops it and removes its data. */
  dispose(): Promise<void>;
  /** Its log so far (stderr), for failure messages. */
  log(): string;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startEtcd(): Promise<EtcdServer> {
  if (!existsSync(ETCD_BINARY))
    throw new Error(
      `${ETCD_BINARY} is missing: install Debian's etcd-server (as root: apt-get install etcd-server; test/setup.sh does it)`,
    );
  const clientPort = await freePort();
  const peerPort = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "roster-etcd-"));
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  let child: ChildProcess | undefined;
  let log = "";
  const args = [
    "--name",
    "roster-test",
    "--data-dir",
    dataDir,
    "--listen-client-urls",
    client,
    "--advertise-client-urls",
    client,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    `roster-test=${peer}`,
    "--logger",
    "zap",
    "--log-level",
    "warn",
  ];
  const server: EtcdServer = {
    endpoint: `127.0.0.1:${clientPort}`,
    pid: () => child?.pid,
    async start() {
      if (child !== undefined) return;
      const c = spawn(ETCD_BINARY, args, { stdio: ["ignore", "ignore", "pipe"] });
      child = c;
      c.stderr?.setEncoding("utf8").on("data", (t: string) => {
        if (log.length < 200_000) log += t;
      });
      let exited = false;
      c.once("exit", () => {
        exited = true;
      });
      // Bounded: 100 polls of 100 ms.
      for (let i = 0; i < 100; i++) {
        if (exited) throw new Error(`etcd exited at start:\n${log}`);
        try {
          const res = await fetch(`${client}/health`, { signal: AbortSignal.timeout(500) });
          if (res.ok && ((await res.json()) as { health?: string }).health === "true") return;
        } catch {}
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`etcd did not become healthy in 10 s:\n${log}`);
    },
    async stop() {
      const c = child;
      if (c === undefined) return;
      child = undefined;
      if (c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
      c.kill("SIGTERM");
      const timer = setTimeout(() => c.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
    async dispose() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
    log: () => log,
  };
  try {
    await server.start();
  } catch (err) {
    await server.dispose();
    throw err;
  }
  return server;
}
