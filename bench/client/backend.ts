// One echo backend of bench/client: a plain grpc-js server in a child process with an IPC channel.
//   node --import tsx bench/client/backend.ts <id> <maxConcurrentStreams>   (0: grpc-js's default, no limit)
// Answers roster.demo.Echo with the request's payload and `served_by: <id>`; tells its parent
// {type:"ready", port} once bound on 127.0.0.1 (any free port), and exits when the parent goes away,
// so a killed benchmark leaves no backend behind.
import * as grpc from "@grpc/grpc-js";
import { type EchoReply, type EchoRequest, loadEcho } from "./echo.ts";

export type BackendMessage = { type: "ready"; port: number } | { type: "failed"; message: string };

const id = process.argv[2] ?? "b?";
const maxStreams = Number(process.argv[3] ?? "0");

function tell(message: BackendMessage): void {
  if (process.send !== undefined) process.send(message);
  else console.log(JSON.stringify(message));
}

if (!Number.isInteger(maxStreams) || maxStreams < 0) {
  tell({ type: "failed", message: `bad maxConcurrentStreams "${process.argv[3]}"` });
  process.exit(2);
}

const options: grpc.ServerOptions = {};
if (maxStreams > 0) options["grpc.max_concurrent_streams"] = maxStreams;
const server = new grpc.Server(options);
const unary = (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) =>
  callback(null, { payload: call.request.payload, served_by: id });
server.addService(loadEcho().service, { Echo: unary, EchoOnce: unary });

process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error !== null) {
    tell({ type: "failed", message: `cannot bind 127.0.0.1:0: ${error.message}` });
    process.exit(1);
  }
  tell({ type: "ready", port });
});
