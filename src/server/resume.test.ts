import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { staticEndpoint } from "../core/endpoint.ts";
import { createOrcaClient } from "../health/orca-client.ts";
import { encodeOrcaLoadReport, frameMessage, type OrcaLoadReport } from "../health/orca-proto.ts";
import { WorkerResume } from "./resume.ts";

const dir = mkdtempSync(join(tmpdir(), "roster-resume-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function listen(server: grpc.Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
}

/** A WorkerResume served on a real grpc-js server and watched by the balancer's ORCA client. */
async function watchedResume(history: number) {
  const resume = new WorkerResume({ history });
  const server = new grpc.Server();
  resume.addToServer(server);
  const port = await listen(server);
  const abort = new AbortController();
  const reports: OrcaLoadReport[] = [];
  createOrcaClient().watch(
    staticEndpoint({ kind: "tcp", host: "127.0.0.1", port }, 1),
    abort.signal,
    (r) => reports.push(r),
    () => {},
  );
  return {
    resume,
    reports,
    /** Waits (bounded: 50 × 20 ms) until more than `n` reports arrived. */
    async awaitMoreThan(n: number) {
      for (let i = 0; i < 50 && reports.length <= n; i++) await new Promise((r) => setTimeout(r, 20));
    },
    close() {
      abort.abort();
      resume.close();
      server.forceShutdown();
    },
  };
}

describe("worker résumé", () => {
  it("persists skills and a new worker reloads the same scores", () => {
    const file = join(dir, "w1.json");
    const a = new WorkerResume({ history: 10, skillsFile: file });
    for (let i = 0; i < 30; i++) a.record(i % 3 === 0 ? "x" : "y", 2 + (i % 5));
    a.persistNow();
    const b = new WorkerResume({ history: 10, skillsFile: file });
    assert.deepEqual(b.skills.scores(), a.skills.scores());
  });

  it("starts with no skills, and a log line, when the file is not a snapshot", () => {
    const file = join(dir, "bad.json");
    writeFileSync(file, '{"format":"roster-skills","version":1,"requests":-1,"classes":{}}');
    const lines: string[] = [];
    const r = new WorkerResume({ skillsFile: file, log: (l) => lines.push(l) });
    assert.deepEqual(r.skills.scores(), {});
    assert.match(lines.join("\n"), /bad\.json is unusable .*skills\.requests/);
  });

  it("serves ORCA reports that the balancer's client reads: at once, then after every `history` calls", async () => {
    const { resume, reports, awaitMoreThan, close } = await watchedResume(5);
    await awaitMoreThan(0);
    assert.equal(reports.length, 1);
    assert.deepEqual({ ...reports[0]!.namedMetrics }, {});
    for (let i = 0; i < 5; i++) resume.record("a", 4);
    await awaitMoreThan(1);
    assert.equal(reports.length, 2);
    assert.ok(Math.abs(reports[1]!.namedMetrics["roster.skill.a"]! - 250) < 1e-9); // 5 calls of 4 ms
    assert.ok(reports[1]!.rpsFractional > 0);
    close();
  });

  it("reports eps: calls that failed, per second, over the same time as rps_fractional", async () => {
    const { resume, reports, awaitMoreThan, close } = await watchedResume(5);
    await awaitMoreThan(0);
    assert.equal(reports.length, 1);
    // Five calls, two of them failed (through the timer begin() returns, as the handler wrapper calls it).
    for (let i = 0; i < 5; i++) resume.begin(undefined)(i < 2);
    await awaitMoreThan(1);
    assert.equal(reports.length, 2);
    const r = reports[1]!;
    assert.ok(r.eps > 0 && r.rpsFractional > 0, JSON.stringify(r));
    assert.ok(Math.abs(r.eps / r.rpsFractional - 2 / 5) < 1e-9, `eps ${r.eps}, rps ${r.rpsFractional}`);
    close();
  });

  it("ignores hostile reports with a problem line and never crashes", async () => {
    const h2 = http2.createServer();
    let opened = 0;
    h2.on("stream", (stream) => {
      opened++;
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      stream.write(frameMessage(encodeOrcaLoadReport({ namedMetrics: { "roster.skill.a": Number.NaN } })));
      stream.write(frameMessage(encodeOrcaLoadReport({ cpuUtilization: -1 })));
      stream.write(frameMessage(encodeOrcaLoadReport({ namedMetrics: { "roster.skill.ok": 3 } })));
      stream.write(Buffer.from([0, 0, 0, 0, 3, 0x0a, 9, 1])); // truncated field: malformed
      stream.on("error", () => {});
    });
    await new Promise<void>((r) => h2.listen(0, "127.0.0.1", r));
    const port = (h2.address() as { port: number }).port;
    const abort = new AbortController();
    const reports: OrcaLoadReport[] = [];
    const problems: string[] = [];
    createOrcaClient({
      problemIntervalMs: 0,
      backoff: { initialMs: 50, maxMs: 50, multiplier: 1, jitter: 0 },
    }).watch(
      staticEndpoint({ kind: "tcp", host: "127.0.0.1", port }, 1),
      abort.signal,
      (r) => reports.push(r),
      (p) => problems.push(p),
    );
    for (let i = 0; i < 100 && opened < 2; i++) await new Promise((r) => setTimeout(r, 20));
    abort.abort();
    h2.close();
    assert.ok(opened >= 2, "the stream was re-opened after the malformed report");
    assert.ok(reports.length >= 1 && reports.every((r) => r.namedMetrics["roster.skill.ok"] === 3));
    assert.match(problems.join("\n"), /named metric "roster\.skill\.a" is NaN/);
    assert.match(problems.join("\n"), /cpu_utilization is -1/);
    assert.match(problems.join("\n"), /malformed ORCA report ignored: field 1 has wire type 2/);
  });
});
