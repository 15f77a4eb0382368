// An in-process grpc-js server on 127.0.0.1:0 for services made by defineService (roster/transfer's
// tests): `const s = await startServices([svc]); … s.address; await s.close();`.
import * as grpc from "@grpc/grpc-js";
import { type DefinedService, loadDefinedService } from "../../src/server/define.ts";

export interface RunningServer {
  readonly server: grpc.Server;
  readonly port: number;
  /** "127.0.0.1:PORT". */
  readonly address: string;
  close(): Promise<void>;
}

export async function startServices(
  services: readonly DefinedService[],
  options: grpc.ServerOptions = {},
): Promise<RunningServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
    ...options,
  });
  for (const s of services) {
    const loaded = loadDefinedService(s);
    server.addService(loaded.definition, loaded.implementation);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    server,
    port,
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}
