// A `roster serve` service module for multi-host tests: roster.demo.Echo whose replies name the host
// (ROSTER_TEST_HOST) and the worker, so a client can tell which machine served it.
import { defineService } from "../../src/server/index.ts";

const servedBy = `${process.env["ROSTER_TEST_HOST"] ?? "host"}/worker-${process.env["ROSTER_WORKER_ID"] ?? process.pid}`;

export default defineService({
  proto: "../../proto/roster/demo/echo.proto",
  service: "roster.demo.Echo",
  idempotent: ["Echo"],
  handlers: {
    // Sleeps `sleep_us` first, so a client can keep calls in flight across a drain.
    async Echo(call: { request: { payload: Buffer; sleep_us: number } }) {
      if (call.request.sleep_us > 0) await new Promise((r) => setTimeout(r, call.request.sleep_us / 1000));
      return { payload: call.request.payload, served_by: servedBy };
    },
    async EchoOnce(call: { request: { payload: Buffer } }) {
      return { payload: call.request.payload, served_by: servedBy };
    },
  },
});
