// Per-message compression hooks for the grpc-js interop server.
//
// The interop spec's CompressedRequest / CompressedResponse features need two things the grpc-js 1.14 server
// API does not offer: telling a handler whether a request message arrived with the compressed flag set, and
// sending a response message compressed (grpc-js always writes flag 0). Without them a proxy in the middle
// could drop, clear or mangle compressed frames and the suite would not notice.
//
// This interceptor closes that gap by wrapping two private methods of the call object grpc-js hands to the
// first server interceptor (BaseServerInterceptingCall): `decompressMessage(framed, encoding)`, which sees the
// 5-byte frame prefix of every received message in order, and `serializeMessage(value)`, which produces the
// framed bytes of every sent message. grpc-js is pinned (package.json), and if those members ever disappear
// the hooks report themselves unavailable: handlers then answer INTERNAL to any request that depends on them,
// so the compressed cases fail loudly instead of passing without checking anything.
import { gzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";

/** Incoming-metadata key by which the interceptor tells handlers whether the hooks are installed. */
export const HOOKS_METADATA_KEY = "x-roster-interop-compression-hooks";

const receivedFlag = new WeakMap<object, boolean>();
const sendCompressed = new WeakSet<object>();

interface BaseCallInternals {
  decompressMessage?: (framed: Buffer, encoding: string) => Buffer | Promise<Buffer>;
  serializeMessage?: (value: unknown) => Buffer;
}

export const compressionInterceptor: grpc.ServerInterceptor = (method, call) => {
  const base = call as unknown as BaseCallInternals;
  const origDecompress = base.decompressMessage;
  const origSerialize = base.serializeMessage;
  const hooked = typeof origDecompress === "function" && typeof origSerialize === "function";
  // Flags of received frames, in arrival order; grpc-js delivers the decoded messages in the same order.
  const flags: boolean[] = [];
  if (hooked) {
    base.decompressMessage = (framed, encoding) => {
      flags.push(framed.readUInt8(0) === 1);
      return origDecompress.call(call, framed, encoding);
    };
    base.serializeMessage = (value) => {
      if (typeof value !== "object" || value === null || !sendCompressed.has(value)) {
        return origSerialize.call(call, value);
      }
      const body = gzipSync(method.responseSerialize(value));
      const framed = Buffer.allocUnsafe(body.length + 5);
      framed.writeUInt8(1, 0);
      framed.writeUInt32BE(body.length, 1);
      body.copy(framed, 5);
      return framed;
    };
  }
  const listener = new grpc.ServerListenerBuilder()
    .withOnReceiveMetadata((metadata, next) => {
      metadata.remove(HOOKS_METADATA_KEY);
      if (hooked) metadata.set(HOOKS_METADATA_KEY, "1");
      next(metadata);
    })
    .withOnReceiveMessage((message, next) => {
      const flag = flags.shift();
      if (hooked && flag !== undefined && typeof message === "object" && message !== null) {
        receivedFlag.set(message, flag);
      }
      next(message);
    })
    .build();
  return new grpc.ServerInterceptingCall(call, { start: (next) => next(listener) });
};

/** Whether the compression hooks are active for the call whose incoming metadata this is. */
export function hooksActive(metadata: grpc.Metadata): boolean {
  return metadata.get(HOOKS_METADATA_KEY)[0] === "1";
}

/** The compressed flag of the frame that carried a received message, or undefined if it is unknown. */
export function requestWasCompressed(message: object): boolean | undefined {
  return receivedFlag.get(message);
}

/**
 * Marks a response message to be sent gzip-compressed (flag 1). The call's response headers must declare
 * `grpc-encoding: gzip`, otherwise the client cannot decode it.
 */
export function compressResponse<T extends object>(message: T): T {
  sendCompressed.add(message);
  return message;
}
