// The service every part of bench/client uses: roster.demo.Echo (proto/roster/demo/echo.proto), a small
// unary echo, loaded with proto-loader the way createClient loads it ({ keepCase: true }), so the plain
// grpc-js client and Roster's client serialize with the same code.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const ECHO_PROTO = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));
export const ECHO_SERVICE = "roster.demo.Echo";
export const LOADER_OPTIONS: protoLoader.Options = { keepCase: true };

export interface EchoRequest {
  payload: Buffer;
  work_us?: number;
  sleep_us?: number;
}

export interface EchoReply {
  payload: Buffer;
  served_by: string;
}

export interface PlainEchoClient extends grpc.Client {
  Echo(
    request: EchoRequest,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, reply?: EchoReply) => void,
  ): grpc.ClientUnaryCall;
}

export interface EchoDefinition {
  /** The generated client constructor, as a user of grpc-js would use it. */
  Client: new (
    address: string,
    credentials: grpc.ChannelCredentials,
    options?: grpc.ChannelOptions,
  ) => PlainEchoClient;
  service: grpc.ServiceDefinition;
}

export function loadEcho(): EchoDefinition {
  const def = protoLoader.loadSync(ECHO_PROTO, LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    roster: { demo: { Echo: grpc.ServiceClientConstructor } };
  };
  const ctor = pkg.roster.demo.Echo;
  return { Client: ctor as unknown as EchoDefinition["Client"], service: ctor.service };
}

/** The payload every call sends and must get back. */
export const PAYLOAD = Buffer.alloc(64, 7);
