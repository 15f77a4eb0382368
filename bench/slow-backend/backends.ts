// Backends for bench/slow-backend: N grpc-js servers in this one process, each serving the demo Echo
// one call at a time (FIFO) with a fixed simulated service time — a capacity-limited backend, so a
// balancer that over-sends to the slow one builds a queue there. Prints "PORTS p1,p2,…" when ready.
// usage: backends.ts SERVICE_MS[,SERVICE_MS…]   e.g. 1,1,1,10
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const protoPath = new URL("../../proto/roster/demo/echo.proto", import.meta.url).pathname;
const def = protoLoader.loadSync(protoPath, { keepCase: true });
const pkg = grpc.loadPackageDefinition(def) as unknown as {
  roster: { demo: { Echo: { service: grpc.ServiceDefinition } } };
};

async function start(index: number, serviceMs: number): Promise<number> {
  const name = `backend-${index + 1} (${serviceMs} ms)`;
  let busyUntil = 0;
  const server = new grpc.Server();
  const echo = (
    call: grpc.ServerUnaryCall<{ payload: Buffer }, unknown>,
    cb: grpc.sendUnaryData<unknown>,
  ) => {
    // FIFO, one at a time: this call starts when the previous one ends.
    const now = performance.now();
    const start = Math.max(now, busyUntil);
    busyUntil = start + serviceMs;
    setTimeout(() => cb(null, { payload: call.request.payload, served_by: name }), busyUntil - now);
  };
  server.addService(pkg.roster.demo.Echo.service, { Echo: echo, EchoOnce: echo });
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
}

const times = (process.argv[2] ?? "1,1,1,10").split(",").map(Number);
const ports = await Promise.all(times.map((ms, i) => start(i, ms)));
process.stdout.write(`PORTS ${ports.join(",")}\n`);
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
