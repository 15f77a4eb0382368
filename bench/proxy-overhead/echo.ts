// The Echo service of echo.proto, loaded with proto-loader, shared by backend.ts and run.ts.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const ECHO_PROTO = fileURLToPath(new URL("./echo.proto", import.meta.url));
/** The HTTP/2 :path of the only method, as h2load must request it. */
export const ECHO_PATH = "/roster.bench.Echo/Echo";

export interface EchoMessage {
  payload: Buffer;
}

/** Options lifting grpc-js's 4 MiB message limit so large --size runs work on every hop. */
export const UNLIMITED_MESSAGES: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
};

export interface EchoClient extends grpc.Client {
  Echo(
    request: EchoMessage,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response: EchoMessage) => void,
  ): grpc.ClientUnaryCall;
}

export interface EchoDefinition {
  service: grpc.ServiceDefinition;
  Client: new (
    address: string,
    credentials: grpc.ChannelCredentials,
    options?: grpc.ChannelOptions,
  ) => EchoClient;
}

export function loadEcho(): EchoDefinition {
  const packageDefinition = protoLoader.loadSync(ECHO_PROTO, { keepCase: true, defaults: true });
  const loaded = grpc.loadPackageDefinition(packageDefinition);
  const pkg = (loaded["roster"] as grpc.GrpcObject)["bench"] as grpc.GrpcObject;
  const Client = pkg["Echo"] as grpc.ServiceClientConstructor;
  return { service: Client.service, Client: Client as unknown as EchoDefinition["Client"] };
}

/** Encodes an EchoMessage by hand: field 1, wire type 2 (tag 0x0a), varint length, bytes. */
export function encodeEchoMessage(payload: Uint8Array): Buffer {
  const header: number[] = [0x0a];
  let n = payload.length;
  while (n >= 0x80) {
    header.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  header.push(n);
  return Buffer.concat([Buffer.from(header), payload]);
}

/** A gRPC length-prefixed message: flag byte 0 (uncompressed), 4-byte big-endian length, message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(0, 0);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}
