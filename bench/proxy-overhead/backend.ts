// A grpc-js Echo backend for bench/proxy-overhead, run as a child process with an IPC channel:
//   node --import tsx bench/proxy-overhead/backend.ts [port]      (port 0 or absent: any free port)
// It tells its parent {type:"ready", port} once bound, answers {type:"count"} with
// {type:"count", served} (Echo calls answered OK so far), and exits when the parent goes away,
// so a killed benchmark leaves no backend behind.
import * as grpc from "@grpc/grpc-js";
import { type EchoMessage, loadEcho, UNLIMITED_MESSAGES } from "./echo.ts";

export type BackendMessage = { type: "ready"; port: number } | { type: "count"; served: number };
export type ParentMessage = { type: "count" };

const requestedPort = Number(process.argv[2] ?? "0");
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  console.error(`backend: bad port ${process.argv[2]}`);
  process.exit(2);
}

function tell(message: BackendMessage): void {
  if (process.send !== undefined) process.send(message);
  else console.log(JSON.stringify(message));
}

let served = 0;
const { service } = loadEcho();
const server = new grpc.Server(UNLIMITED_MESSAGES);
server.addService(service, {
  Echo(call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) {
    served += 1;
    callback(null, { payload: call.request.payload });
  },
});

process.on("message", (message: ParentMessage) => {
  if (message.type === "count") tell({ type: "count", served });
});
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

server.bindAsync(`127.0.0.1:${requestedPort}`, grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error !== null) {
    console.error(`backend: cannot bind 127.0.0.1:${requestedPort}: ${error.message}`);
    process.exit(1);
  }
  tell({ type: "ready", port });
});
