// Loads the grpc.testing protos (proto/grpc/testing, written for Roster after the interop descriptions) and gives the
// interop server and clients typed access to their messages and method definitions.
import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** Include root for the protos: `import "grpc/testing/empty.proto"` resolves against it. */
export const PROTO_ROOT = fileURLToPath(new URL("../../proto/", import.meta.url));
/** Directory holding test.proto, messages.proto and empty.proto. */
export const TESTING_PROTO_DIR = fileURLToPath(new URL("../../proto/grpc/testing/", import.meta.url));

const packageDefinition = protoLoader.loadSync("grpc/testing/test.proto", {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: String,
  enums: String,
  // Absent message fields decode as null (so "expect_compressed unset" differs from {value:false}),
  // scalars as their zero value and bytes as an empty Buffer.
  defaults: true,
  oneofs: true,
});

function serviceDefinition(name: string): grpc.ServiceDefinition {
  const def = packageDefinition[name];
  if (def === undefined || "format" in def) throw new Error(`service ${name} not found in test.proto`);
  return def as unknown as grpc.ServiceDefinition;
}

export const testServiceDefinition = serviceDefinition("grpc.testing.TestService");
export const unimplementedServiceDefinition = serviceDefinition("grpc.testing.UnimplementedService");

export type TestMethod =
  | "EmptyCall"
  | "UnaryCall"
  | "StreamingOutputCall"
  | "StreamingInputCall"
  | "FullDuplexCall"
  | "HalfDuplexCall"
  | "UnimplementedCall";

// biome-ignore lint/suspicious/noExplicitAny: method definitions are generic over message types.
export function testMethod(name: TestMethod): grpc.MethodDefinition<any, any> {
  const m = testServiceDefinition[name];
  if (m === undefined) throw new Error(`method ${name} missing from TestService`);
  return m;
}

// biome-ignore lint/suspicious/noExplicitAny: method definitions are generic over message types.
export function unimplementedServiceMethod(): grpc.MethodDefinition<any, any> {
  const m = unimplementedServiceDefinition["UnimplementedCall"];
  if (m === undefined) throw new Error("method UnimplementedCall missing from UnimplementedService");
  return m;
}

// Message shapes as produced/accepted by proto-loader with keepCase + defaults. Fields a sender may omit are
// optional; message-typed fields decode as null when absent.
export type Empty = Record<string, never>;
export interface BoolValue {
  value: boolean;
}
export interface Payload {
  type?: "COMPRESSABLE";
  body: Buffer;
}
export interface EchoStatus {
  code: number;
  message: string;
}
export interface SimpleRequest {
  response_type?: "COMPRESSABLE";
  response_size?: number;
  payload?: Payload | null;
  response_compressed?: BoolValue | null;
  response_status?: EchoStatus | null;
  expect_compressed?: BoolValue | null;
}
export interface SimpleResponse {
  payload?: Payload | null;
}
export interface StreamingInputCallRequest {
  payload?: Payload | null;
  expect_compressed?: BoolValue | null;
}
export interface StreamingInputCallResponse {
  aggregated_payload_size: number;
}
export interface ResponseParameters {
  size: number;
  interval_us?: number;
  compressed?: BoolValue | null;
}
export interface StreamingOutputCallRequest {
  response_type?: "COMPRESSABLE";
  response_parameters?: ResponseParameters[];
  payload?: Payload | null;
  response_status?: EchoStatus | null;
}
export interface StreamingOutputCallResponse {
  payload?: Payload | null;
}

export function zeros(size: number): Payload {
  return { type: "COMPRESSABLE", body: Buffer.alloc(size) };
}
