// The example service (examples/echo-service.ts, its calls counted: counted-service.ts) in a plain
// grpc-js server: what one `roster serve` worker runs, without roster around it. Used by
// cluster-entry.ts for the cluster workers and for the direct (single process, no balancer) baseline.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { loadServiceModule } from "../../src/server/define.ts";
import { SERVICE_MODULE_RELATIVE } from "./protocol.ts";

export const SERVICE_MODULE = fileURLToPath(new URL(SERVICE_MODULE_RELATIVE, import.meta.url));

/**
 * The grpc-js server options of a `roster serve` worker (src/server/worker.ts: workerServerOptions,
 * copied because importing worker.ts starts a worker), so every configuration runs the same server.
 */
const WORKER_SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5000,
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.max_concurrent_streams": 1000,
};

/** Serves the example's services on 127.0.0.1:port (0: any free port); resolves with the bound port. */
export async function startEchoServer(port: number): Promise<{ server: grpc.Server; port: number }> {
  const services = await loadServiceModule(SERVICE_MODULE);
  const server = new grpc.Server(WORKER_SERVER_OPTIONS);
  for (const s of services) server.addService(s.definition, s.implementation);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { server, port: bound };
}
