// The service every configuration of bench/serve-scaling runs: examples/echo-service.ts with its
// handlers wrapped to count the calls they answered. Every 100 ms (only when something changed) the
// process writes {servedBy, calls, workUs, payloadBytes} to $SERVE_SCALING_COUNT_DIR/<pid>.json, so
// that run.ts can check that the workers really served what a load generator counted as successes
// (h2load counts any HTTP 200, whatever the grpc-status). Without that variable it only counts.
import { renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import example from "../../examples/echo-service.ts";
import { defineService, type Handler } from "../../src/server/index.ts";

/** What a worker wrote to its count file: totals since it started. */
export interface ServedCounts {
  servedBy: string;
  /** Echo calls whose handler returned a reply. */
  calls: number;
  /** Sum of the requests' work_us: calls × --work-us when every request was the one meant. */
  workUs: number;
  /** Sum of the requests' payload sizes. */
  payloadBytes: number;
}

export const COUNT_DIR_ENV = "SERVE_SCALING_COUNT_DIR";
const WRITE_EVERY_MS = 100;

const counts: ServedCounts = {
  servedBy: `worker-${process.env.ROSTER_WORKER_ID ?? process.pid}`,
  calls: 0,
  workUs: 0,
  payloadBytes: 0,
};

interface Call {
  request: { payload?: Uint8Array; work_us?: number };
}

function counted(inner: Handler | undefined): Handler {
  if (inner === undefined) throw new Error("serve-scaling: the example service lost its Echo handler");
  // One parameter: roster's loader treats the handler as async and answers with what it resolves to.
  return async (call: Call) => {
    const reply = await inner(call);
    counts.calls += 1;
    counts.workUs += call.request.work_us ?? 0;
    counts.payloadBytes += call.request.payload?.length ?? 0;
    return reply;
  };
}

const dir = process.env[COUNT_DIR_ENV];
if (dir !== undefined && dir !== "") {
  const file = path.join(dir, `${process.pid}.json`);
  let written = -1;
  const write = () => {
    if (counts.calls === written) return;
    written = counts.calls;
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify(counts));
      renameSync(`${file}.tmp`, file); // readers never see a half-written file
    } catch {
      // the directory is gone: the benchmark is over
    }
  };
  write();
  setInterval(write, WRITE_EVERY_MS).unref();
}

export default defineService({
  ...example,
  // Relative protos resolve against the defining module; this one lives elsewhere.
  proto: new URL("../../proto/roster/demo/echo.proto", import.meta.url),
  handlers: { ...example.handlers, Echo: counted(example.handlers.Echo) },
});
