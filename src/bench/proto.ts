import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import * as protoLoader from "@grpc/proto-loader";
import { ConfigError } from "../core/errors.ts";
import type { BenchSettings } from "./options.ts";

export type CallKind = "unary" | "server-stream" | "client-stream" | "bidi";

/** The method a bench run calls, with its request already encoded once (no per-call serialisation). */
export interface BenchMethod {
  /** "/pkg.Service/Method". */
  readonly path: string;
  readonly kind: CallKind;
  /** The protobuf bytes of the request message (without the 5-byte gRPC prefix). */
  readonly request: Buffer;
  readonly requestType: string;
  readonly responseType: string;
  /** Decodes a response message (used only for --backend-field). */
  readonly decodeResponse: (bytes: Buffer) => Record<string, unknown>;
}

export type MethodSettings = Pick<
  BenchSettings,
  | "protoFile"
  | "importPaths"
  | "service"
  | "method"
  | "data"
  | "dataFile"
  | "payloadSize"
  | "streamMessages"
  | "backendField"
>;

interface FieldDescriptor {
  name: string;
  type: string;
}

interface MessageDefinition {
  type: { name: string; field: FieldDescriptor[] };
  serialize(value: object): Buffer;
  deserialize(bytes: Buffer): Record<string, unknown>;
}

interface MethodDefinition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestType: MessageDefinition;
  responseType: MessageDefinition;
}

/** Loads the proto, finds the method and encodes the request; every failure is a ConfigError. */
export function loadBenchMethod(s: MethodSettings): BenchMethod {
  const definitions = loadProto(s.protoFile, s.importPaths);
  const service = definitions[s.service];
  if (service === undefined || "format" in service) {
    const services = Object.entries(definitions)
      .filter(([, d]) => !("format" in d))
      .map(([name]) => name);
    throw new ConfigError(
      "--call",
      `no service ${s.service} in ${s.protoFile}; services: ${services.join(", ") || "(none)"}`,
    );
  }
  const methods = service as unknown as Record<string, MethodDefinition>;
  const method = Object.hasOwn(methods, s.method) ? methods[s.method] : undefined;
  if (method === undefined) {
    throw new ConfigError(
      "--call",
      `${s.service} has no method ${s.method}; methods: ${Object.keys(methods).join(", ")}`,
    );
  }
  const kind: CallKind = method.requestStream
    ? method.responseStream
      ? "bidi"
      : "client-stream"
    : method.responseStream
      ? "server-stream"
      : "unary";
  if (s.streamMessages > 1 && !method.requestStream) {
    throw new ConfigError(
      "--stream-messages",
      `${s.service}/${s.method} is ${kind}: it sends one request per call`,
    );
  }
  const requestType = method.requestType;
  const responseType = method.responseType;
  if (s.backendField !== undefined && !responseType.type.field.some((f) => f.name === s.backendField)) {
    throw new ConfigError(
      "--backend-field",
      `${responseType.type.name} has no field ${s.backendField}; fields: ${fieldNames(responseType)}`,
    );
  }
  const value = requestValue(s, requestType);
  let request: Buffer;
  try {
    request = Buffer.from(requestType.serialize(value));
  } catch (err) {
    throw new ConfigError(dataField(s), `cannot encode ${requestType.type.name}: ${(err as Error).message}`);
  }
  return {
    path: method.path,
    kind,
    request,
    requestType: requestType.type.name,
    responseType: responseType.type.name,
    decodeResponse: (bytes) => responseType.deserialize(bytes),
  };
}

function loadProto(file: string, importPaths: readonly string[]): protoLoader.PackageDefinition {
  try {
    readFileSync(file);
  } catch (err) {
    throw new ConfigError("--proto", `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  try {
    // An absolute path: with includeDirs, proto-loader looks a relative name up in them only.
    return protoLoader.loadSync(resolve(file), {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: false,
      oneofs: true,
      includeDirs: [dirname(resolve(file)), ...importPaths],
    });
  } catch (err) {
    const message = ((err as Error).message ?? String(err)).split("\n")[0];
    const hint = /ENOENT/.test(message ?? "") ? " (an import not found? add --import-path DIR)" : "";
    throw new ConfigError("--proto", `${file} does not parse: ${message}${hint}`);
  }
}

function dataField(s: MethodSettings): string {
  return s.dataFile !== undefined ? "--data-file" : s.data !== undefined ? "--data" : "--payload-size";
}

function fieldNames(type: MessageDefinition): string {
  return type.type.field.map((f) => f.name).join(", ") || "(none)";
}

/** The request as a plain object: --data / --data-file JSON, then --payload-size in the first bytes field. */
function requestValue(s: MethodSettings, type: MessageDefinition): Record<string, unknown> {
  let text: string | undefined = s.data;
  if (s.dataFile !== undefined) {
    try {
      text = readFileSync(s.dataFile, "utf8");
    } catch (err) {
      throw new ConfigError(
        "--data-file",
        `cannot read ${s.dataFile}: ${(err as NodeJS.ErrnoException).code ?? err}`,
      );
    }
  }
  let value: Record<string, unknown> = {};
  if (text !== undefined) {
    const field = dataField(s);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(field, `is not JSON: ${(err as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError(field, `must be a JSON object (a ${type.type.name})`);
    }
    value = parsed as Record<string, unknown>;
    const known = new Set(type.type.field.map((f) => f.name));
    for (const key of Object.keys(value)) {
      if (!known.has(key)) {
        throw new ConfigError(
          field,
          `${type.type.name} has no field "${key}"; fields (as written in the .proto): ${fieldNames(type)}`,
        );
      }
    }
  }
  if (s.payloadSize !== undefined) {
    const bytesField = type.type.field.find((f) => f.type === "TYPE_BYTES");
    if (bytesField === undefined) {
      throw new ConfigError("--payload-size", `${type.type.name} has no bytes field to fill`);
    }
    value = { ...value, [bytesField.name]: payload(s.payloadSize) };
  }
  return value;
}

/** `size` bytes of a fixed, non-repeating-looking pattern (incompressible enough, reproducible). */
export function payload(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let state = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out[i] = state & 0xff;
  }
  return out;
}
