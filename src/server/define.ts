import { isAbsolute, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { declaredIdempotent } from "../proxy/idempotency.ts";

/**
 * What a user's service module exports, and how a worker turns it into grpc-js services.
 *
 * A module exports (default or `services`) one service or an array of them, each made by
 * `defineService`:
 *
 *   export default defineService({
 *     proto: new URL("./echo.proto", import.meta.url),   // or a path relative to the module
 *     service: "pkg.Echo",
 *     handlers: { async Echo(call) { return { message: call.request.message }; } },
 *     idempotent: ["Echo"],   // may be retried after a worker died mid-call
 *   });
 *
 * or with a grpc-js definition instead of a proto: `{ definition: grpc.ServiceDefinition, handlers }`.
 * Handlers are grpc-js handlers (`(call, callback)` for unary), and may also be async: a unary handler
 * that declares one parameter returns (or resolves to) the response. A handler that throws or rejects
 * answers the call with its `code` (when it carries a gRPC one) or UNKNOWN, never crashes the worker.
 */
// biome-ignore lint/suspicious/noExplicitAny: handlers are user code typed by the user
export type Handler = (call: any, callback?: any) => unknown;

export interface ServiceOptions {
  /** A .proto file: a URL, an absolute path, or a path relative to the module that defines the service. */
  readonly proto?: string | URL;
  /** Fully qualified service name in the proto, e.g. "pkg.Echo". */
  readonly service?: string;
  /** Instead of proto + service: a grpc-js service definition. */
  readonly definition?: grpc.ServiceDefinition;
  readonly handlers: Readonly<Record<string, Handler>>;
  /**
   * Method names safe to run twice: retried on another worker if their worker dies mid-call. Methods
   * whose proto says `option idempotency_level = IDEMPOTENT` (or `NO_SIDE_EFFECTS`) are included
   * without being listed.
   */
  readonly idempotent?: readonly string[];
  /** Extra include directories for proto imports. */
  readonly includeDirs?: readonly string[];
  /** grpc-js server interceptors, added to the worker's server (all services share one server). */
  readonly interceptors?: readonly grpc.ServerInterceptor[];
}

const MARK = Symbol.for("roster.service");

export interface DefinedService extends ServiceOptions {
  readonly [MARK]: true;
}

export function defineService(options: ServiceOptions): DefinedService {
  return { ...options, [MARK]: true };
}

/** A service ready to add to a grpc-js server. */
export interface LoadedService {
  readonly name: string;
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  /** Full paths ("/pkg.Svc/Method") of idempotent methods. */
  readonly idempotentPaths: readonly string[];
  /** For reflection, when the service came from a .proto. */
  readonly packageDefinition: protoLoader.PackageDefinition | undefined;
  readonly interceptors: readonly grpc.ServerInterceptor[];
}

/** A service module that cannot be used; the message says what to fix. */
export class ServiceModuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ServiceModuleError";
  }
}

/**
 * Times a call's handler: called with the call's metadata as the handler starts; the function it
 * returns is called once, when the handler has answered (unary and client-streaming: its callback or
 * returned value; server-streaming and bidi: the end of its response or the call's cancellation),
 * with `failed` true when the handler answered with an error status.
 */
export type CallTimer = (metadata: grpc.Metadata | undefined) => (failed?: boolean) => void;

/**
 * Imports `modulePath` and validates what it exports. Throws ServiceModuleError with a clear message.
 * With `timer`, every handler is timed (roster serve's worker skills).
 */
export async function loadServiceModule(modulePath: string, timer?: CallTimer): Promise<LoadedService[]> {
  const url = pathToFileURL(resolve(modulePath)).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    const e = err as Error;
    throw new ServiceModuleError(`cannot load service module ${modulePath}: ${e.message.split("\n")[0]}`);
  }
  const exported = mod.default ?? mod.services;
  if (exported === undefined) {
    throw new ServiceModuleError(
      `service module ${modulePath} exports no services: export default defineService({...}) or export const services = [...]`,
    );
  }
  const list = Array.isArray(exported) ? exported : [exported];
  if (list.length === 0)
    throw new ServiceModuleError(`service module ${modulePath} exports an empty list of services`);
  return list.map((s, i) => loadService(s, url, `${modulePath}: service ${i}`, timer));
}

/**
 * A service made by defineService, ready for a grpc-js server of the caller's own (outside `roster
 * serve`): `server.addService(s.definition, s.implementation)`. Relative proto paths resolve from the
 * working directory.
 */
export function loadDefinedService(service: DefinedService): LoadedService {
  return loadService(service, pathToFileURL(`${process.cwd()}/`).href, "service");
}

function loadService(raw: unknown, moduleUrl: string, where: string, timer?: CallTimer): LoadedService {
  if (typeof raw !== "object" || raw === null)
    throw new ServiceModuleError(`${where} is not an object made by defineService()`);
  const s = raw as ServiceOptions;
  if (typeof s.handlers !== "object" || s.handlers === null)
    throw new ServiceModuleError(`${where} has no handlers`);
  let definition: grpc.ServiceDefinition;
  let name: string;
  let packageDefinition: protoLoader.PackageDefinition | undefined;
  if (s.definition !== undefined) {
    definition = s.definition;
    const first = Object.values(definition)[0];
    name = first?.path.split("/")[1] ?? "unknown";
  } else {
    if (s.proto === undefined || s.service === undefined) {
      throw new ServiceModuleError(`${where} needs either { proto, service } or { definition }`);
    }
    const protoPath = resolveProto(s.proto, moduleUrl);
    try {
      packageDefinition = protoLoader.loadSync(protoPath, {
        keepCase: true,
        longs: String,
        enums: String,
        defaults: true,
        oneofs: true,
        includeDirs: [...(s.includeDirs ?? [])],
      });
    } catch (err) {
      throw new ServiceModuleError(
        `${where}: cannot load ${protoPath}: ${(err as Error).message.split("\n")[0]}`,
      );
    }
    const found = packageDefinition[s.service];
    if (found === undefined || !isServiceDefinition(found)) {
      const services = Object.entries(packageDefinition)
        .filter(([, v]) => isServiceDefinition(v))
        .map(([k]) => k);
      throw new ServiceModuleError(
        `${where}: ${protoPath} has no service "${s.service}"; it has: ${services.join(", ") || "(none)"}`,
      );
    }
    definition = found as grpc.ServiceDefinition;
    name = s.service;
  }
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(definition)) {
    const handler = s.handlers[method] ?? s.handlers[lowerFirst(method)];
    if (handler === undefined) continue; // grpc-js answers UNIMPLEMENTED for it
    if (typeof handler !== "function")
      throw new ServiceModuleError(`${where}: handler ${method} is not a function`);
    implementation[method] = wrapHandler(handler, def, timer);
  }
  for (const key of Object.keys(s.handlers)) {
    if (!(key in definition) && !Object.keys(definition).some((m) => lowerFirst(m) === key)) {
      throw new ServiceModuleError(
        `${where}: handler "${key}" matches no method of ${name}; methods: ${Object.keys(definition).join(", ")}`,
      );
    }
  }
  const idempotentPaths = new Set(
    (s.idempotent ?? []).map((m) => {
      const def = definition[m];
      if (def === undefined)
        throw new ServiceModuleError(`${where}: idempotent method "${m}" is not a method of ${name}`);
      return def.path;
    }),
  );
  // Methods whose proto declares `option idempotency_level = IDEMPOTENT | NO_SIDE_EFFECTS` too.
  for (const def of Object.values(definition)) {
    if (declaredIdempotent((def as { options?: unknown }).options)) idempotentPaths.add(def.path);
  }
  return {
    name,
    definition,
    implementation,
    idempotentPaths: [...idempotentPaths],
    packageDefinition,
    interceptors: s.interceptors ?? [],
  };
}

function resolveProto(proto: string | URL, moduleUrl: string): string {
  if (proto instanceof URL) return fileURLToPath(proto);
  if (proto.startsWith("file:")) return fileURLToPath(proto);
  return isAbsolute(proto) ? proto : fileURLToPath(new URL(proto, moduleUrl));
}

function isServiceDefinition(v: unknown): boolean {
  if (typeof v !== "object" || v === null || "format" in v) return false;
  const first = Object.values(v)[0] as { path?: unknown } | undefined;
  return typeof first?.path === "string";
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

interface GrpcError {
  code: number;
  details: string;
}

function toStatus(err: unknown): GrpcError {
  const e = err as { code?: unknown; details?: unknown; message?: unknown };
  if (typeof e?.code === "number" && Number.isInteger(e.code) && e.code > 0 && e.code <= 16) {
    return { code: e.code, details: String(e.details ?? e.message ?? "") };
  }
  return { code: grpc.status.UNKNOWN, details: `handler failed: ${String(e?.message ?? err)}` };
}

/**
 * Catches throws and rejections so a bad handler answers its call instead of killing the worker, and
 * times it with `timer` when given.
 */
function wrapHandler(
  handler: Handler,
  def: grpc.MethodDefinition<unknown, unknown>,
  timer?: CallTimer,
): grpc.UntypedHandleCall {
  const inner = guardHandler(handler, def);
  if (timer === undefined) return inner;
  if (!def.responseStream) {
    // Unary and client-streaming: answered when the callback is called.
    return ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const done = timer(call.metadata);
      const timed: grpc.sendUnaryData<unknown> = (err, value, trailer, flags) => {
        done(err !== null && err !== undefined);
        callback(err, value, trailer, flags);
      };
      (inner as (c: unknown, cb: unknown) => void)(call, timed);
    }) as grpc.UntypedHandleCall;
  }
  return ((call: grpc.ServerWritableStream<unknown, unknown>) => {
    const done = timer(call.metadata);
    call.once("finish", () => done());
    call.once("cancelled", () => done());
    call.once("error", () => done(true));
    (inner as (c: unknown) => void)(call);
  }) as grpc.UntypedHandleCall;
}

function guardHandler(
  handler: Handler,
  def: grpc.MethodDefinition<unknown, unknown>,
): grpc.UntypedHandleCall {
  if (!def.requestStream && !def.responseStream) {
    const returnsResponse = handler.length < 2;
    return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      let answered = false;
      const once: grpc.sendUnaryData<unknown> = (err, value, trailer, flags) => {
        if (answered) return;
        answered = true;
        callback(err, value, trailer, flags);
      };
      try {
        const result = handler(call, once);
        if (returnsResponse || isPromise(result)) {
          Promise.resolve(result).then(
            (value) => {
              if (returnsResponse) once(null, value);
            },
            (err) => once(toStatus(err) as grpc.ServiceError),
          );
        }
      } catch (err) {
        once(toStatus(err) as grpc.ServiceError);
      }
    };
  }
  if (def.requestStream && !def.responseStream) {
    // client streaming: errors answer through the callback
    return ((call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      try {
        const r = handler(call, callback);
        if (isPromise(r)) r.then(undefined, (err) => callback(toStatus(err) as grpc.ServiceError));
      } catch (err) {
        callback(toStatus(err) as grpc.ServiceError);
      }
    }) as grpc.UntypedHandleCall;
  }
  // server streaming and bidi: errors end the call with a status
  return ((call: grpc.ServerWritableStream<unknown, unknown>) => {
    const fail = (err: unknown) => call.emit("error", toStatus(err));
    try {
      const r = handler(call);
      if (isPromise(r)) r.then(undefined, fail);
    } catch (err) {
      fail(err);
    }
  }) as grpc.UntypedHandleCall;
}

function isPromise(v: unknown): v is Promise<unknown> {
  return typeof (v as { then?: unknown })?.then === "function";
}
