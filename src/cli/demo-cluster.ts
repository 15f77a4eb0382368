import cluster from "node:cluster";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * The demo's comparison: the same Echo service under Node's `cluster` module, N workers sharing one
 * port. The primary hands out CONNECTIONS (round-robin), so one client connection lands on one worker.
 * Run as a child process by `roster demo`: `demo-cluster PORT N`; prints "READY" once every worker
 * listens.
 */
const protoPath = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));

interface EchoRequest {
  payload: Buffer;
  work_us: number;
}

function startWorker(port: number, name: string): void {
  const def = protoLoader.loadSync(protoPath, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    roster: { demo: { Echo: { service: grpc.ServiceDefinition } } };
  };
  const server = new grpc.Server();
  const echo = (call: grpc.ServerUnaryCall<EchoRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
    const until = performance.now() + (call.request.work_us ?? 0) / 1000;
    while (performance.now() < until) {
      // busy: the same CPU-bound handler as examples/echo-service.ts
    }
    cb(null, { payload: call.request.payload, served_by: name });
  };
  server.addService(pkg.roster.demo.Echo.service, { Echo: echo, EchoOnce: echo });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      process.stderr.write(`cluster worker ${name}: ${err.message}\n`);
      process.exit(1);
    }
    process.send?.("listening");
  });
}

if (cluster.isPrimary && process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2]);
  const n = Number(process.argv[3] ?? 4);
  let listening = 0;
  for (let i = 1; i <= n; i++) {
    const w = cluster.fork({ DEMO_WORKER: `worker-${i}`, DEMO_PORT: String(port) });
    w.on("message", (m) => {
      if (m === "listening" && ++listening === n) process.stdout.write("READY\n");
    });
  }
  process.on("SIGTERM", () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGKILL");
    process.exit(0);
  });
} else if (cluster.isWorker) {
  startWorker(Number(process.env.DEMO_PORT), process.env.DEMO_WORKER ?? `worker-${process.pid}`);
}
