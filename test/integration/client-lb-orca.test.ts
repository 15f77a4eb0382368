// Load reports into Roster's policies in a grpc-js client (src/client/lb): per-call ORCA trailers
// (`endpoint-load-metrics-bin`) feeding roster_weighted_round_robin, out-of-band ORCA résumés feeding
// roster_resume, and the `roster:` resolver over TCP and unix sockets. Shares of calls are counted; no
// timing is asserted.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { registerRosterPolicies, rosterServiceConfig } from "../../src/client/lb/index.ts";
import { encodeOrcaLoadReport, type OrcaLoadReport } from "../../src/health/orca-proto.ts";
import {
  EchoClient,
  type EchoReply,
  type EchoRequest,
  echoService,
  waitFor,
} from "../support/echo-backend.ts";
import { type OrcaBackend, startOrcaBackend } from "../support/orca-backend.ts";

interface Served {
  readonly id: string;
  readonly address: string;
  close(): void;
}

/** An Echo server on `bind` whose every reply carries `report` as a per-call ORCA trailer (if given). */
async function startReporting(id: string, bind: string, report?: Partial<OrcaLoadReport>): Promise<Served> {
  const server = new grpc.Server();
  const body = report === undefined ? undefined : encodeOrcaLoadReport(report);
  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) {
      const trailer = new grpc.Metadata();
      if (body !== undefined) trailer.set("endpoint-load-metrics-bin", body);
      cb(
        null,
        { message: call.request.message, payload: Buffer.alloc(0), served_by: id, deadline_budget_ms: -1 },
        trailer,
      );
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(bind, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    id,
    address: bind.startsWith("unix:") ? bind : `127.0.0.1:${port}`,
    close: () => server.forceShutdown(),
  };
}

async function count(client: EchoClient, total: number, md: () => grpc.Metadata = () => new grpc.Metadata()) {
  const counts = new Map<string, number>();
  // Sequential: bounded by `total`.
  for (let i = 0; i < total; i++) {
    const r = await client.echo({ message: "m" }, { deadlineMs: 5000, metadata: md() });
    counts.set(r.served_by, (counts.get(r.served_by) ?? 0) + 1);
  }
  return counts;
}

describe("load reports and the roster: resolver in a grpc-js client", () => {
  const closers: Array<() => unknown> = [];
  let dir = "";

  before(() => {
    registerRosterPolicies();
    dir = mkdtempSync(join(tmpdir(), "roster-client-lb-"));
  });

  after(async () => {
    for (const close of closers.reverse()) await close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("weighs backends 3 : 1 by their per-call reports with roster_weighted_round_robin", async () => {
    // weight = qps / utilization: 100 / 0.25 = 400 against 100 / 0.75 ≈ 133.
    const light = await startReporting("light", "127.0.0.1:0", {
      rpsFractional: 100,
      applicationUtilization: 0.25,
    });
    const heavy = await startReporting("heavy", "127.0.0.1:0", {
      rpsFractional: 100,
      applicationUtilization: 0.75,
    });
    closers.push(light.close, heavy.close);
    const config = { enableOobLoadReport: false, blackoutPeriod: "0s", weightUpdatePeriod: "100ms" };
    const c = new EchoClient(`roster:///${light.address},${heavy.address}`, {
      "grpc.service_config": rosterServiceConfig("weighted_round_robin", config),
    });
    closers.push(() => c.close());
    const before = await count(c, 40); // both report; equal shares until the weights are computed
    assert.equal(before.size, 2, JSON.stringify([...before]));
    await new Promise((r) => setTimeout(r, 250)); // past one weightUpdatePeriod
    const counts = await count(c, 800);
    const share = (counts.get("light") ?? 0) / 800;
    assert.ok(share > 0.7 && share < 0.8, `light backend share ${share} (expected 0.75; equal would be 0.5)`);
  });

  it("sends each class to the backend whose out-of-band résumé has the skill, with roster_resume", async () => {
    const alpha = await startOrcaBackend({
      id: "alpha",
      report: { namedMetrics: { "roster.skill.alpha": 500 } },
    });
    const beta = await startOrcaBackend({
      id: "beta",
      report: { namedMetrics: { "roster.skill.beta": 500 } },
    });
    closers.push(alpha.close, beta.close);
    const backends: OrcaBackend[] = [alpha, beta];
    const c = new EchoClient(`roster:///${alpha.address},${beta.address}`, {
      "grpc.service_config": rosterServiceConfig("resume"),
    });
    closers.push(() => c.close());
    await count(c, 2);
    await waitFor(
      () => backends.every((b) => b.orca().reports > 0),
      5000,
      "an ORCA report from each backend",
    );
    await new Promise((r) => setTimeout(r, 100)); // the report crosses the socket after it is counted sent
    const ofClass = (name: string) => () => {
      const md = new grpc.Metadata();
      md.set("x-roster-class", name);
      return md;
    };
    const a = await count(c, 200, ofClass("alpha"));
    const b = await count(c, 200, ofClass("beta"));
    assert.ok((a.get("alpha") ?? 0) >= 190, `class alpha: ${JSON.stringify([...a])}`);
    assert.ok((b.get("beta") ?? 0) >= 190, `class beta: ${JSON.stringify([...b])}`);
  });

  it("resolves a roster: target mixing TCP and unix sockets, dropping duplicates", async () => {
    const tcp = await startReporting("tcp", "127.0.0.1:0");
    const unix = await startReporting("unix", `unix:${join(dir, "b.sock")}`);
    closers.push(tcp.close, unix.close);
    const c = new EchoClient(`roster:///${tcp.address},${unix.address},${tcp.address}`, {
      "grpc.service_config": rosterServiceConfig("round_robin"),
    });
    closers.push(() => c.close());
    await count(c, 10);
    const counts = await count(c, 100);
    assert.deepEqual([...counts.entries()].sort(), [
      ["tcp", 50],
      ["unix", 50],
    ]);
  });

  it("fails calls on a bad roster: target with UNAVAILABLE naming the entry", async () => {
    const c = new EchoClient("roster:///127.0.0.1:1,nonsense", {
      "grpc.service_config": rosterServiceConfig("round_robin"),
    });
    closers.push(() => c.close());
    await assert.rejects(c.echo({}, { deadlineMs: 2000 }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.UNAVAILABLE);
      assert.match(err.details, /target\[1\].*nonsense/);
      return true;
    });
  });
});
