// Heartbeats (roster/transfer): a 30 s task through nginx with grpc_read_timeout 5s succeeds when its
// handler sends heartbeats and fails without them; through `roster lb` with a 5 s idle timeout it
// succeeds both ways (the idle timeout closes connections without calls, never an open call).
// The four calls run at the same time, so the test takes one task's length.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { callFunction, callFunctionStream, defineDispatchService } from "../../src/transfer/index.ts";
import { type RunningServer, startServices } from "../support/grpc-server.ts";
import { type ProxyProcess, startNginx, startRosterLb } from "../support/proxy-process.ts";

const TASK_MS = 30_000;

describe("heartbeats through proxies' idle timeouts", { timeout: 120_000 }, () => {
  let dir: string;
  let server: RunningServer;
  let nginx: ProxyProcess;
  let lb: ProxyProcess;
  let finished = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "roster-heartbeat-"));
    server = await startServices([
      defineDispatchService({
        heartbeatMs: 1000,
        functions: {
          // A long task that is quiet until it ends; counts the runs that got to the end.
          task: async ({ ms }: { ms: number }, { signal }) => {
            await new Promise<void>((resolve, reject) => {
              const t = setTimeout(resolve, ms);
              signal.addEventListener("abort", () => {
                clearTimeout(t);
                reject(signal.reason);
              });
            });
            finished++;
            return "done";
          },
        },
      }),
    ]);
    nginx = await startNginx(join(dir, "nginx"), { backend: server.address, readTimeoutS: 5 });
    lb = await startRosterLb(dir, `backends: [${server.address}]\nlimits:\n  idleTimeoutMs: 5000\n`);
  });
  after(async () => {
    await nginx?.stop();
    await lb?.stop();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a 30 s task succeeds with heartbeats and fails without them through nginx; succeeds through roster lb", async () => {
    const clients = [nginx, lb].map((p) => new grpc.Client(p.address, grpc.credentials.createInsecure()));
    const [viaNginx, viaLb] = clients as [grpc.Client, grpc.Client];
    const beats = { nginx: 0, lb: 0 };
    const settle = <T>(p: Promise<T>) =>
      p.then(
        (value) => ({ ok: true as const, value }),
        (error: grpc.ServiceError) => ({ ok: false as const, error }),
      );
    try {
      const [nginxBeats, nginxQuiet, lbBeats, lbQuiet] = await Promise.all([
        settle(callFunctionStream(viaNginx, "task", { ms: TASK_MS }, { onHeartbeat: () => beats.nginx++ })),
        settle(callFunction(viaNginx, "task", { ms: TASK_MS })),
        settle(callFunctionStream(viaLb, "task", { ms: TASK_MS }, { onHeartbeat: () => beats.lb++ })),
        settle(callFunction(viaLb, "task", { ms: TASK_MS })),
      ]);
      assert.deepEqual(nginxBeats, { ok: true, value: "done" });
      assert.ok(beats.nginx >= 20, `heartbeats through nginx: ${beats.nginx}`);
      assert.equal(nginxQuiet.ok, false, "a quiet 30 s call must be cut by grpc_read_timeout 5s");
      if (!nginxQuiet.ok) {
        // nginx answers 504 Gateway Timeout, which gRPC maps to UNAVAILABLE.
        assert.equal(nginxQuiet.error.code, grpc.status.UNAVAILABLE, String(nginxQuiet.error));
      }
      assert.deepEqual(lbBeats, { ok: true, value: "done" });
      assert.ok(beats.lb >= 20, `heartbeats through roster lb: ${beats.lb}`);
      assert.deepEqual(lbQuiet, { ok: true, value: "done" });
      // nginx cancelled the quiet call's upstream stream: its task was aborted, the other three ran out.
      assert.equal(finished, 3);
    } finally {
      for (const c of clients) c.close();
    }
  });
});
