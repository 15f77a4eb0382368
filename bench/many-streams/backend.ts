// A grpc-js Echo backend for bench/many-streams that holds every call `holdMs` before answering, run
// as a child process with an IPC channel:
//   node --import tsx bench/many-streams/backend.ts HOLD_MS
// Tells its parent {type:"ready", port} once bound and answers {type:"stats"} with the calls answered
// and the most calls it held at once; exits when the parent goes away.
import * as grpc from "@grpc/grpc-js";
import { type EchoMessage, loadEcho, UNLIMITED_MESSAGES } from "../proxy-overhead/echo.ts";

export type HoldBackendMessage =
  | { type: "ready"; port: number }
  | { type: "stats"; served: number; maxInFlight: number };
export type HoldParentMessage = { type: "stats" };

const holdMs = Number(process.argv[2]);
if (!Number.isFinite(holdMs) || holdMs < 0) {
  console.error(`backend: bad hold time ${process.argv[2]}`);
  process.exit(2);
}

let served = 0;
let inFlight = 0;
let maxInFlight = 0;
const { service } = loadEcho();
// No stream limit of its own: the balancer's connections to it carry thousands of streams.
const server = new grpc.Server({ ...UNLIMITED_MESSAGES, "grpc.max_concurrent_streams": 1_000_000 });
server.addService(service, {
  Echo(call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) {
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    setTimeout(() => {
      inFlight--;
      served++;
      callback(null, { payload: call.request.payload });
    }, holdMs);
  },
});

process.on("message", (message: HoldParentMessage) => {
  if (message.type === "stats")
    process.send?.({ type: "stats", served, maxInFlight } satisfies HoldBackendMessage);
});
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));

server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error !== null) {
    console.error(`backend: cannot bind: ${error.message}`);
    process.exit(1);
  }
  process.send?.({ type: "ready", port } satisfies HoldBackendMessage);
});
