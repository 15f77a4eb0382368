// Workers of `roster serve` answer grpc.health.v1 and server reflection through the front, so tools
// such as grpcurl can list and call the service.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { after, before, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { type RosterServer, serve } from "../../src/server/index.ts";

const require = createRequire(import.meta.url);
const reflectionProto = join(
  dirname(require.resolve("@grpc/reflection/package.json")),
  "build/proto/grpc/reflection/v1alpha/reflection.proto",
);
const healthProto = join(
  dirname(require.resolve("grpc-health-check/package.json")),
  "proto/health/v1/health.proto",
);

let server: RosterServer | undefined;
before(async () => {
  server = await serve({
    module: fileURLToPath(new URL("../../examples/echo-service.ts", import.meta.url)),
    workers: 2,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
  });
});
after(async () => {
  await server?.close();
});

it("lists the service through reflection (ServerReflectionInfo list_services)", async () => {
  const pkg = grpc.loadPackageDefinition(
    protoLoader.loadSync(reflectionProto, { keepCase: true }),
  ) as unknown as {
    grpc: { reflection: { v1alpha: { ServerReflection: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.grpc.reflection.v1alpha.ServerReflection(
    server!.address,
    grpc.credentials.createInsecure(),
  );
  const call = (
    client as unknown as {
      ServerReflectionInfo(o: grpc.CallOptions): grpc.ClientDuplexStream<unknown, unknown>;
    }
  ).ServerReflectionInfo({ deadline: Date.now() + 10_000 });
  const reply = await new Promise<{ list_services_response?: { service: Array<{ name: string }> } }>(
    (resolve, reject) => {
      call.on("data", resolve);
      call.on("error", reject);
      call.write({ list_services: "" });
      call.end();
    },
  );
  client.close();
  const names = reply.list_services_response?.service.map((s) => s.name) ?? [];
  assert.ok(names.includes("roster.demo.Echo"), `services: ${names.join(", ")}`);
});

it("answers grpc.health.v1 Check with SERVING for the service", async () => {
  const pkg = grpc.loadPackageDefinition(
    protoLoader.loadSync(healthProto, { keepCase: true, enums: String }),
  ) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.grpc.health.v1.Health(
    server!.address,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    Check(
      req: { service: string },
      o: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null, r?: { status: string }) => void,
    ): void;
  };
  const status = await new Promise<string>((resolve, reject) =>
    client.Check({ service: "roster.demo.Echo" }, { deadline: Date.now() + 10_000 }, (e, r) =>
      e ? reject(e) : resolve(r!.status),
    ),
  );
  client.close();
  assert.equal(status, "SERVING");
});
