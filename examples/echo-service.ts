// An example service module for `roster serve`: `npx roster serve examples/echo-service.ts --workers 4`.
// Outside this repository, import { defineService } from "roster/server".
import { defineService } from "../src/server/index.ts";

interface EchoRequest {
  payload: Buffer;
  work_us: number;
  sleep_us: number;
}

const sleep = (us: number) => (us > 0 ? new Promise((r) => setTimeout(r, us / 1000)) : undefined);

function burn(workUs: number): void {
  const until = performance.now() + workUs / 1000;
  while (performance.now() < until) {
    // busy
  }
}

const servedBy = `worker-${process.env.ROSTER_WORKER_ID ?? process.pid}`;

export default defineService({
  proto: "../proto/roster/demo/echo.proto",
  service: "roster.demo.Echo",
  idempotent: ["Echo"],
  handlers: {
    // A CPU-bound handler: burns `work_us` microseconds, as real handlers burn CPU on parsing, templating,
    // compression. One Node process runs one of these at a time; roster serve runs N processes.
    async Echo(call: { request: EchoRequest }) {
      await sleep(call.request.sleep_us);
      burn(call.request.work_us ?? 0);
      return { payload: call.request.payload, served_by: servedBy };
    },
    async EchoOnce(call: { request: EchoRequest }) {
      await sleep(call.request.sleep_us);
      burn(call.request.work_us ?? 0);
      return { payload: call.request.payload, served_by: servedBy };
    },
  },
});
