// grpc.testing.TestService interop server on grpc-js, after the "Server" section of grpc/grpc
// doc/interop-test-descriptions.md: EmptyCall, UnaryCall, StreamingOutputCall, StreamingInputCall,
// FullDuplexCall, HalfDuplexCall, Echo Status, Echo Metadata, ResponseParameters.interval_us,
// CompressedRequest and CompressedResponse (the last two through ./server-compression.ts).
// UnimplementedCall and CacheableUnaryCall are deliberately not implemented: grpc-js answers UNIMPLEMENTED.
import type { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import type {
  BoolValue,
  EchoStatus,
  SimpleRequest,
  SimpleResponse,
  StreamingInputCallRequest,
  StreamingInputCallResponse,
  StreamingOutputCallRequest,
  StreamingOutputCallResponse,
} from "./proto.ts";
import { testServiceDefinition, zeros } from "./proto.ts";
import {
  compressionInterceptor,
  compressResponse,
  hooksActive,
  requestWasCompressed,
} from "./server-compression.ts";

export const ECHO_INITIAL_KEY = "x-grpc-test-echo-initial";
export const ECHO_TRAILING_KEY = "x-grpc-test-echo-trailing-bin";

/** What the handlers use of every grpc-js server call type (grpc-js does not export ServerSurfaceCall). */
interface SurfaceCall extends EventEmitter {
  readonly metadata: grpc.Metadata;
  readonly cancelled: boolean;
  sendMetadata(metadata: grpc.Metadata): void;
}

export interface InteropServer {
  port: number;
  address: string;
  close(): Promise<void>;
}

class CallError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/** Sends the call's response headers at most once: the echoed initial metadata plus, if asked, gzip. */
class ResponseHeaders {
  private sent = false;
  private gzip = false;

  constructor(private readonly call: SurfaceCall) {}

  /** Only sends explicitly when there is something to say, so grpc-js keeps its trailers-only errors. */
  sendIfNeeded(compress: boolean): void {
    if (this.sent) {
      if (compress && !this.gzip) {
        throw new CallError(grpc.status.INTERNAL, "compressed response requested after headers were sent");
      }
      return;
    }
    const echo = this.call.metadata.get(ECHO_INITIAL_KEY);
    if (echo.length === 0 && !compress) return;
    this.send(compress);
  }

  send(compress: boolean): void {
    if (this.sent) {
      this.sendIfNeeded(compress);
      return;
    }
    if (compress && !hooksActive(this.call.metadata)) {
      throw new CallError(
        grpc.status.INTERNAL,
        "interop server cannot send compressed messages: grpc-js compression hooks unavailable",
      );
    }
    const md = new grpc.Metadata();
    const echo = this.call.metadata.get(ECHO_INITIAL_KEY);
    for (const v of echo) md.add(ECHO_INITIAL_KEY, v);
    if (compress) md.set("grpc-encoding", "gzip");
    this.call.sendMetadata(md);
    this.sent = true;
    this.gzip = compress;
  }
}

function echoTrailer(call: SurfaceCall): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const v of call.metadata.get(ECHO_TRAILING_KEY)) md.add(ECHO_TRAILING_KEY, v);
  return md;
}

function echoStatus(call: SurfaceCall, s: EchoStatus): grpc.ServerErrorResponse {
  return Object.assign(new Error(s.message), {
    code: s.code,
    details: s.message,
    metadata: echoTrailer(call),
  });
}

function toError(call: SurfaceCall, err: unknown): grpc.ServerErrorResponse {
  const code = err instanceof CallError ? err.code : grpc.status.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  return Object.assign(new Error(details), { code, details, metadata: echoTrailer(call) });
}

/** CompressedRequest: when expect_compressed is set, the request's compressed flag must match it. */
function checkExpectCompressed(call: SurfaceCall, message: object, expect: BoolValue | null | undefined) {
  if (expect === null || expect === undefined) return;
  const flag = requestWasCompressed(message);
  if (flag === undefined || !hooksActive(call.metadata)) {
    throw new CallError(
      grpc.status.INTERNAL,
      "interop server cannot observe request compression: grpc-js compression hooks unavailable",
    );
  }
  if (expect.value && !flag) {
    throw new CallError(
      grpc.status.INVALID_ARGUMENT,
      "expected a compressed request, got an uncompressed one",
    );
  }
  if (!expect.value && flag) {
    throw new CallError(
      grpc.status.INVALID_ARGUMENT,
      "expected an uncompressed request, got a compressed one",
    );
  }
}

function sleep(ms: number, call: SurfaceCall): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      call.removeListener("cancelled", done);
      resolve();
    }
    call.once("cancelled", done);
  });
}

type Duplex = grpc.ServerDuplexStream<StreamingOutputCallRequest, StreamingOutputCallResponse>;
type ResponseStream =
  | Duplex
  | grpc.ServerWritableStream<StreamingOutputCallRequest, StreamingOutputCallResponse>;

function write(call: ResponseStream, msg: StreamingOutputCallResponse): Promise<void> {
  return new Promise((resolve) => {
    if (call.write(msg)) resolve();
    else call.once("drain", resolve);
  });
}

/** Serves the ResponseParameters of one request in order, honouring interval_us and compressed. */
async function serveParameters(
  call: ResponseStream,
  headers: ResponseHeaders,
  req: StreamingOutputCallRequest,
): Promise<void> {
  for (const p of req.response_parameters ?? []) {
    await sleep((p.interval_us ?? 0) / 1000, call);
    if (call.cancelled) return;
    const compress = p.compressed?.value === true;
    headers.sendIfNeeded(compress);
    const msg: StreamingOutputCallResponse = { payload: zeros(p.size) };
    await write(call, compress ? compressResponse(msg) : msg);
  }
}

/** FullDuplexCall (respond per request) and HalfDuplexCall (buffer until half-close, then respond). */
function duplexHandler(buffer: boolean) {
  return (call: Duplex) => {
    const headers = new ResponseHeaders(call);
    const pending: StreamingOutputCallRequest[] = [];
    let chain = Promise.resolve();
    let failed = false;
    const fail = (err: grpc.ServerErrorResponse) => {
      if (failed) return;
      failed = true;
      call.emit("error", err);
    };
    const serve = (req: StreamingOutputCallRequest) => {
      chain = chain.then(async () => {
        if (failed || call.cancelled) return;
        if (req.response_status) {
          fail(echoStatus(call, req.response_status));
          return;
        }
        await serveParameters(call, headers, req);
      });
      chain = chain.catch((err: unknown) => fail(toError(call, err)));
    };
    call.on("data", (req: StreamingOutputCallRequest) => {
      if (failed) return;
      if (buffer) pending.push(req);
      else serve(req);
    });
    call.on("end", () => {
      for (const req of pending.splice(0)) serve(req);
      chain = chain.then(() => {
        if (failed || call.cancelled) return;
        // Always answer with headers + trailers (not trailers-only), so the echoed initial metadata arrives.
        headers.send(false);
        call.end(echoTrailer(call));
      });
      chain = chain.catch((err: unknown) => fail(toError(call, err)));
    });
    call.on("error", () => {
      // Client-side errors (cancellation, reset) end the call; nothing more to do.
    });
  };
}

export const interopHandlers: grpc.UntypedServiceImplementation = {
  EmptyCall(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
    try {
      new ResponseHeaders(call).sendIfNeeded(false);
      callback(null, {}, echoTrailer(call));
    } catch (err) {
      callback(toError(call, err));
    }
  },

  UnaryCall(
    call: grpc.ServerUnaryCall<SimpleRequest, SimpleResponse>,
    callback: grpc.sendUnaryData<SimpleResponse>,
  ) {
    try {
      const req = call.request;
      checkExpectCompressed(call, req, req.expect_compressed);
      const headers = new ResponseHeaders(call);
      const compress = req.response_compressed?.value === true;
      if (req.response_status && req.response_status.code !== grpc.status.OK) {
        headers.sendIfNeeded(false);
        callback(echoStatus(call, req.response_status));
        return;
      }
      if (req.response_type !== undefined && req.response_type !== "COMPRESSABLE") {
        throw new CallError(grpc.status.INVALID_ARGUMENT, `unsupported response_type ${req.response_type}`);
      }
      headers.sendIfNeeded(compress);
      const res: SimpleResponse = { payload: zeros(req.response_size ?? 0) };
      callback(null, compress ? compressResponse(res) : res, echoTrailer(call));
    } catch (err) {
      callback(toError(call, err));
    }
  },

  StreamingOutputCall(
    call: grpc.ServerWritableStream<StreamingOutputCallRequest, StreamingOutputCallResponse>,
  ) {
    const req = call.request;
    const run = async () => {
      const headers = new ResponseHeaders(call);
      if (req.response_status && req.response_status.code !== grpc.status.OK) {
        headers.sendIfNeeded(false);
        call.emit("error", echoStatus(call, req.response_status));
        return;
      }
      // Headers go out before the first message, so declare gzip up front if any message will be compressed.
      headers.sendIfNeeded((req.response_parameters ?? []).some((p) => p.compressed?.value === true));
      await serveParameters(call, headers, req);
      if (!call.cancelled) call.end(echoTrailer(call));
    };
    run().catch((err: unknown) => call.emit("error", toError(call, err)));
  },

  StreamingInputCall(
    call: grpc.ServerReadableStream<StreamingInputCallRequest, StreamingInputCallResponse>,
    callback: grpc.sendUnaryData<StreamingInputCallResponse>,
  ) {
    let total = 0;
    let done = false;
    const finish = (err: grpc.ServerErrorResponse | null) => {
      if (done) return;
      done = true;
      if (err) callback(err);
      else callback(null, { aggregated_payload_size: total }, echoTrailer(call));
    };
    try {
      new ResponseHeaders(call).sendIfNeeded(false);
    } catch (err) {
      finish(toError(call, err));
      return;
    }
    call.on("data", (req: StreamingInputCallRequest) => {
      if (done) return;
      try {
        checkExpectCompressed(call, req, req.expect_compressed);
        total += req.payload?.body.length ?? 0;
      } catch (err) {
        finish(toError(call, err));
      }
    });
    call.on("end", () => finish(null));
    call.on("error", () => {
      done = true;
    });
  },

  FullDuplexCall: duplexHandler(false),
  HalfDuplexCall: duplexHandler(true),
};

export async function startInteropServer(opts?: { host?: string }): Promise<InteropServer> {
  const host = opts?.host ?? "127.0.0.1";
  const server = new grpc.Server({
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
    interceptors: [compressionInterceptor],
  });
  server.addService(testServiceDefinition, interopHandlers);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err) reject(err);
      else resolve(p);
    });
  });
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return {
    port,
    address,
    close: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
