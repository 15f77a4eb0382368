import * as grpc from "@grpc/grpc-js";
import { type DefinedService, defineService, type ServiceOptions } from "../server/define.ts";
import { type ReadableCall, resultOf, toStatus, withHeartbeats } from "./heartbeat.ts";
import { dispatchDefinition, methodOf } from "./protos.ts";

/**
 * Dispatch by name: `roster.dispatch.v1.Dispatch` (proto/roster/dispatch/v1/dispatch.proto) runs the
 * function named by a request metadata key (default `x-func-name`), so functions are added without
 * proto changes. Payloads are bytes (the function gets a Buffer) or JSON (the function gets the parsed
 * value); a function returning a Buffer answers bytes, anything else JSON. An unknown or missing name
 * ends UNIMPLEMENTED with the list of known names; bad JSON ends INVALID_ARGUMENT.
 *
 *   export default defineDispatchService({
 *     functions: { add: ({ a, b }) => a + b, reverse: (bytes: Buffer) => Buffer.from(bytes).reverse() },
 *   });
 *
 *   await callFunction(client, "add", { a: 1, b: 2 });   // 3
 */

export const defaultFuncNameKey = "x-func-name";

export interface FunctionContext {
  readonly name: string;
  readonly metadata: grpc.Metadata;
  /** Aborted when the call is cancelled. */
  readonly signal: AbortSignal;
}

// biome-ignore lint/suspicious/noExplicitAny: inputs are whatever the caller sent
export type NamedFunction = (input: any, context: FunctionContext) => unknown;

export interface DispatchOptions {
  readonly functions: Readonly<Record<string, NamedFunction>>;
  /** The metadata key naming the function (default `x-func-name`). */
  readonly key?: string;
  /** Heartbeat interval of CallStream, ms (default 1000). */
  readonly heartbeatMs?: number;
  readonly interceptors?: ServiceOptions["interceptors"];
}

interface Payload {
  bytes?: Buffer;
  json?: string;
  body?: "bytes" | "json";
}

function decodeInput(payload: Payload): unknown {
  if (payload.body === "json" || payload.json !== undefined) {
    try {
      return JSON.parse(payload.json ?? "null");
    } catch (err) {
      throw { code: grpc.status.INVALID_ARGUMENT, details: `payload.json: ${(err as Error).message}` };
    }
  }
  return payload.bytes ?? Buffer.alloc(0);
}

function encodeOutput(value: unknown): Payload {
  if (Buffer.isBuffer(value)) return { bytes: value };
  if (value instanceof Uint8Array)
    return { bytes: Buffer.from(value.buffer, value.byteOffset, value.length) };
  return { json: JSON.stringify(value === undefined ? null : value) };
}

/** A Dispatch service for `roster serve` (or `loadService`-style use): one handler table, two methods. */
export function defineDispatchService(options: DispatchOptions): DefinedService {
  const key = (options.key ?? defaultFuncNameKey).toLowerCase();
  const functions = new Map(Object.entries(options.functions));
  for (const [name, fn] of functions) {
    if (typeof fn !== "function") throw new TypeError(`functions.${name}: not a function`);
  }
  const known = [...functions.keys()].sort();
  const lookup = (metadata: grpc.Metadata): { name: string; fn: NamedFunction } => {
    const value = metadata.get(key)[0];
    const name = typeof value === "string" ? value : "";
    const fn = functions.get(name);
    if (fn === undefined) {
      throw {
        code: grpc.status.UNIMPLEMENTED,
        details:
          (name === ""
            ? `no function named: set metadata ${key}`
            : `unknown function "${name.slice(0, 200)}"`) + `; known: ${known.join(", ") || "(none)"}`,
      };
    }
    return { name, fn };
  };
  const run = async (call: { request: Payload; metadata: grpc.Metadata }, signal: AbortSignal) => {
    const { name, fn } = lookup(call.metadata);
    const input = decodeInput(call.request);
    return encodeOutput(await fn(input, { name, metadata: call.metadata, signal }));
  };
  return defineService({
    definition: dispatchDefinition(),
    ...(options.interceptors !== undefined ? { interceptors: options.interceptors } : {}),
    handlers: {
      Call(call: grpc.ServerUnaryCall<Payload, Payload>, callback: grpc.sendUnaryData<Payload>) {
        const abort = new AbortController();
        let answered = false;
        const cancel = () => {
          // grpc-js also says 'cancelled' after the status it sent: only one before the answer counts.
          if (!answered) abort.abort(new Error("call cancelled"));
        };
        if (call.cancelled) cancel();
        else call.once("cancelled", cancel);
        run(call, abort.signal).then(
          (out) => {
            answered = true;
            callback(null, out);
          },
          (err) => {
            answered = true;
            callback(toStatus(err) as grpc.ServiceError);
          },
        );
      },
      CallStream: withHeartbeats(
        (call: grpc.ServerWritableStream<Payload, unknown>, signal) => {
          // Unknown names fail before the first heartbeat is due.
          lookup(call.metadata);
          return run(call, signal);
        },
        options.heartbeatMs !== undefined ? { intervalMs: options.heartbeatMs } : {},
      ),
    },
  });
}

export interface FunctionCallOptions {
  readonly key?: string;
  readonly metadata?: grpc.Metadata;
  readonly deadlineMs?: number;
  readonly signal?: AbortSignal;
  /** Send a Buffer input as JSON anyway (default: Buffers go as bytes, everything else as JSON). */
  readonly asJson?: boolean;
}

/**
 * What the client helpers accept: a grpc-js client of any kind (a generated one, or
 * `new grpc.Client(target, credentials)`), or roster/client's `createClient({ definition:
 * dispatchDefinition(), … })`.
 */
export type DispatchClient =
  | grpc.Client
  | {
      Call: (
        request: Payload,
        options?: { metadata?: grpc.Metadata; deadlineMs?: number; signal?: AbortSignal },
      ) => Promise<Payload>;
      CallStream: (
        request: Payload,
        options?: { metadata?: grpc.Metadata; deadlineMs?: number; signal?: AbortSignal },
      ) => ReadableCall;
    };

function requestOf(input: unknown, o: FunctionCallOptions): Payload {
  if (!o.asJson && (Buffer.isBuffer(input) || input instanceof Uint8Array)) return encodeOutput(input);
  return { json: JSON.stringify(input === undefined ? null : input) };
}

function metadataOf(name: string, o: FunctionCallOptions): grpc.Metadata {
  const md = o.metadata?.clone() ?? new grpc.Metadata();
  md.set((o.key ?? defaultFuncNameKey).toLowerCase(), name);
  return md;
}

function callOptions(o: FunctionCallOptions): grpc.CallOptions {
  return o.deadlineMs !== undefined ? { deadline: Date.now() + o.deadlineMs } : {};
}

function withSignal<T extends { cancel(): void }>(call: T, signal: AbortSignal | undefined): T {
  if (signal === undefined) return call;
  if (signal.aborted) call.cancel();
  else signal.addEventListener("abort", () => call.cancel(), { once: true });
  return call;
}

/** Calls function `name` with `input` (a Buffer goes as bytes, anything else as JSON) and decodes its answer. */
export async function callFunction<Out = unknown>(
  client: DispatchClient,
  name: string,
  input: unknown,
  o: FunctionCallOptions = {},
): Promise<Out> {
  const request = requestOf(input, o);
  const metadata = metadataOf(name, o);
  let reply: Payload;
  if (client instanceof grpc.Client) {
    const m = methodOf(dispatchDefinition(), "Call");
    reply = await new Promise<Payload>((resolve, reject) => {
      const call = client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        request,
        metadata,
        callOptions(o),
        (err: grpc.ServiceError | null, value?: Payload) => (err ? reject(err) : resolve(value!)),
      );
      withSignal(call, o.signal);
    });
  } else {
    reply = await client.Call(request, {
      metadata,
      ...(o.deadlineMs !== undefined ? { deadlineMs: o.deadlineMs } : {}),
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
    });
  }
  return decodeInput(reply) as Out;
}

/**
 * Calls function `name` on CallStream: heartbeats are skipped (`onHeartbeat` sees them), the result
 * decoded as by callFunction. For functions that run longer than a proxy's idle timeout.
 */
export async function callFunctionStream<Out = unknown>(
  client: DispatchClient,
  name: string,
  input: unknown,
  o: FunctionCallOptions & { onHeartbeat?: (beat: unknown) => void; staleAfterMs?: number } = {},
): Promise<Out> {
  const request = requestOf(input, o);
  const metadata = metadataOf(name, o);
  let stream: ReadableCall;
  if (client instanceof grpc.Client) {
    const m = methodOf(dispatchDefinition(), "CallStream");
    stream = withSignal(
      client.makeServerStreamRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        request,
        metadata,
        callOptions(o),
      ),
      o.signal,
    );
  } else {
    stream = client.CallStream(request, {
      metadata,
      ...(o.deadlineMs !== undefined ? { deadlineMs: o.deadlineMs } : {}),
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
    });
  }
  const payload = await resultOf<Payload>(stream, {
    ...(o.onHeartbeat !== undefined ? { onHeartbeat: o.onHeartbeat } : {}),
    ...(o.staleAfterMs !== undefined ? { staleAfterMs: o.staleAfterMs } : {}),
  });
  return decodeInput(payload) as Out;
}
