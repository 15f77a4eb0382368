// `roster lb` as a user runs it: flag errors, admin endpoints, config reload on SIGHUP, drain on SIGTERM.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type EchoBackend, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const cli = ["--import", "tsx", "src/cli/main.ts"];

function runCli(args: string[]) {
  return spawnSync(process.execPath, [...cli, ...args], { cwd: root, encoding: "utf8", timeout: 20_000 });
}

describe("roster lb flags", () => {
  const cases: Array<[string[], RegExp]> = [
    [["lb", "--backend", "127.0.0.1:1", "--policy", "fastest"], /unknown policy "fastest"; known policies: /],
    [["lb"], /--backend: at least one backend is needed/],
    [["lb", "--backend", "nohost"], /backends\[0\]: "nohost" is not HOST:PORT or unix:PATH/],
    [["lb", "--backend", "127.0.0.1:1", "--listen", "127.0.0.1:99999"], /listen: .*above 65535/],
    [["lb", "--config", "/nonexistent/roster.yaml"], /roster\.yaml: cannot be read: ENOENT/],
    [["lb", "--bogus"], /unknown option '--bogus'/],
  ];
  for (const [args, message] of cases) {
    it(`rejects \`roster ${args.join(" ")}\` with one clear line and a non-zero exit`, () => {
      const r = runCli(args);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    });
  }
});

describe("a running roster lb", () => {
  let dir: string;
  let a: EchoBackend;
  let b: EchoBackend;
  let child: ChildProcess | undefined;
  const log: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "roster-cli-"));
    a = await startEchoBackend({ id: "a" });
    b = await startEchoBackend({ id: "b" });
  });
  afterEach(() => {
    if (child?.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  after(async () => {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves /status and /metrics, reloads its backends on SIGHUP, keeps them on a bad file, drains on SIGTERM", {
    timeout: 60_000,
  }, async () => {
    const config = join(dir, "roster.yaml");
    writeFileSync(config, `listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends: [127.0.0.1:${a.port}]\n`);
    child = spawn(process.execPath, [...cli, "lb", "--config", config], {
      cwd: root,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const exited = new Promise<number | null>((r) => child!.once("exit", (code) => r(code)));
    child.stderr!.on("data", (d: Buffer) => log.push(...d.toString().split("\n").filter(Boolean)));
    await waitFor(() => log.some((l) => l.includes("listening on")), 20_000, "roster lb to listen");
    const started = JSON.parse(log.find((l) => l.includes("listening on"))!) as {
      listen: string;
      admin: string;
    };

    const client = new EchoClient(started.listen);
    const servedBy = async (n: number) => {
      const seen = new Set<string>();
      for (let i = 0; i < n; i++)
        seen.add((await client.echo({ message: "x" }, { deadlineMs: 5000 })).served_by);
      return [...seen].sort();
    };
    assert.deepEqual(await servedBy(10), ["a"]);

    const status = (await (await fetch(`http://${started.admin}/status`)).json()) as {
      backends: Array<{ key: string; state: string; calls: number }>;
    };
    assert.equal(status.backends.length, 1);
    assert.equal(status.backends[0]!.state, "ready");
    assert.ok(status.backends[0]!.calls >= 10, JSON.stringify(status));
    const metrics = await (await fetch(`http://${started.admin}/metrics`)).text();
    assert.match(
      metrics,
      new RegExp(
        `roster_backend_calls_total\\{cluster="default",backend="127\\.0\\.0\\.1:${a.port}",code="OK"\\} \\d+`,
      ),
    );

    // A broken file is rejected and the running backends stay.
    writeFileSync(config, "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends: [nohost]\n");
    child.kill("SIGHUP");
    await waitFor(
      () => log.some((l) => l.includes("config rejected")),
      5000,
      "the bad config to be rejected",
    );
    assert.deepEqual(await servedBy(10), ["a"]);

    // A good file replaces the backends.
    writeFileSync(config, `listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nbackends: [127.0.0.1:${b.port}]\n`);
    child.kill("SIGHUP");
    await waitFor(() => log.some((l) => l.includes("config reloaded")), 5000, "the config to be reloaded");
    await waitFor(
      () => log.some((l) => l.includes(`backend 127.0.0.1:${b.port} is ready`)),
      5000,
      "b to be ready",
    );
    assert.deepEqual(await servedBy(10), ["b"]);

    client.client.close();
    child.kill("SIGTERM");
    assert.equal(await exited, 0, log.join("\n"));
    assert.ok(log.some((l) => l.includes("stopped")));
  });
});
