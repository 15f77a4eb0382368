// A grpc-js Echo backend for bench/readiness, run as a child process with an IPC channel:
//   node --import tsx bench/readiness/backend.ts PORT
// Tells its parent {type:"ready", port, at} once its port accepts (`at`: wall-clock ms with
// fractions, performance.timeOrigin + performance.now(), comparable across processes), and exits
// when the parent goes away, so a killed benchmark leaves no backend behind.
import * as grpc from "@grpc/grpc-js";
import { type EchoMessage, loadEcho, UNLIMITED_MESSAGES } from "../proxy-overhead/echo.ts";

export type ReadyMessage = { type: "ready"; port: number; at: number };

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`backend: bad port ${process.argv[2]}`);
  process.exit(2);
}
const { service } = loadEcho();
const server = new grpc.Server(UNLIMITED_MESSAGES);
server.addService(service, {
  Echo(call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) {
    callback(null, { payload: call.request.payload });
  },
});
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
  if (error !== null) {
    console.error(`backend: cannot bind 127.0.0.1:${port}: ${error.message}`);
    process.exit(1);
  }
  const message: ReadyMessage = {
    type: "ready",
    port: bound,
    at: performance.timeOrigin + performance.now(),
  };
  process.send?.(message);
});
