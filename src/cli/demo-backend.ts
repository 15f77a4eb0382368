import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * The demo's example backend: a plain grpc-js server with roster.demo.Echo. Run as a child process by
 * `roster demo`; prints "PORT <n>" once listening. The handler burns `work_us` of CPU, as real handlers do.
 */
const protoPath = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));

interface EchoRequest {
  payload: Buffer;
  work_us: number;
}

export async function startDemoBackend(
  name: string,
  host = "127.0.0.1",
): Promise<{ port: number; server: grpc.Server }> {
  const def = protoLoader.loadSync(protoPath, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    roster: { demo: { Echo: { service: grpc.ServiceDefinition } } };
  };
  const server = new grpc.Server();
  server.addService(pkg.roster.demo.Echo.service, {
    Echo: (call: grpc.ServerUnaryCall<EchoRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const until = performance.now() + (call.request.work_us ?? 0) / 1000;
      while (performance.now() < until) {
        // busy: a CPU-bound handler
      }
      cb(null, { payload: call.request.payload, served_by: name });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { port, server };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const name = process.argv[2] ?? `worker-${process.pid}`;
  const { port } = await startDemoBackend(name);
  process.stdout.write(`PORT ${port}\n`);
  process.on("SIGTERM", () => process.exit(0));
}
