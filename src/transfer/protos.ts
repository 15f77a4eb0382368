import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/**
 * Roster's own protos for roster/transfer, loaded once: `proto/` sits two folders up from both
 * `src/transfer/` and `dist/transfer/`. 64-bit fields come as numbers (offsets stay below 2^53).
 */
export const PROTO_DIR = fileURLToPath(new URL("../../proto/", import.meta.url));
export const TRANSFER_PROTO = fileURLToPath(
  new URL("roster/transfer/v1/transfer.proto", `file://${PROTO_DIR}`),
);
export const DISPATCH_PROTO = fileURLToPath(
  new URL("roster/dispatch/v1/dispatch.proto", `file://${PROTO_DIR}`),
);
export const TASK_PROTO = fileURLToPath(new URL("roster/task/v1/task.proto", `file://${PROTO_DIR}`));

let loaded: protoLoader.PackageDefinition | undefined;

function packageDefinition(): protoLoader.PackageDefinition {
  loaded ??= protoLoader.loadSync([TRANSFER_PROTO, DISPATCH_PROTO], {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR],
  });
  return loaded;
}

function service(name: string): grpc.ServiceDefinition {
  const s = packageDefinition()[name];
  if (s === undefined || "format" in s) throw new Error(`${name} missing from roster's protos`);
  return s as unknown as grpc.ServiceDefinition;
}

/** `roster.transfer.v1.Transfer`, for `createClient({ definition })` or a grpc-js server. */
export function transferDefinition(): grpc.ServiceDefinition {
  return service("roster.transfer.v1.Transfer");
}

/** `roster.dispatch.v1.Dispatch`. */
export function dispatchDefinition(): grpc.ServiceDefinition {
  return service("roster.dispatch.v1.Dispatch");
}

/** The package definition, for reflection. */
export function rosterPackageDefinition(): protoLoader.PackageDefinition {
  return packageDefinition();
}

/** A method of a definition, found or thrown. */
export function methodOf(
  definition: grpc.ServiceDefinition,
  name: string,
  // biome-ignore lint/suspicious/noExplicitAny: message types are the caller's
): grpc.MethodDefinition<any, any> {
  const m = definition[name];
  if (m === undefined) throw new Error(`method ${name} missing`);
  return m;
}
