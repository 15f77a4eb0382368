// grpc-js interop client: the client side of grpc/grpc doc/interop-test-descriptions.md for the cases in
// ./cases.ts. runGrpcJsCase throws an Error naming the case and the failed assertion.
import { isDeepStrictEqual } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { type INTEROP_CASES, isInteropCase, SPECIAL_STATUS_MESSAGE } from "./cases.ts";
import type {
  SimpleRequest,
  SimpleResponse,
  StreamingInputCallRequest,
  StreamingInputCallResponse,
  StreamingOutputCallRequest,
  StreamingOutputCallResponse,
  TestMethod,
} from "./proto.ts";
import { testMethod, unimplementedServiceMethod, zeros } from "./proto.ts";
import { rawGrpcCall } from "./raw-grpc.ts";

const ECHO_INITIAL_KEY = "x-grpc-test-echo-initial";
const ECHO_TRAILING_KEY = "x-grpc-test-echo-trailing-bin";
/** Deadline of every call that is not about deadlines, and the bound on every wait. */
const CALL_TIMEOUT_MS = 10_000;
/** grpc-js WriteFlags.NoCompress (not re-exported by the package index). */
const WRITE_FLAG_NO_COMPRESS = 2;
/** grpc-js CompressionAlgorithms.gzip for the `grpc.default_compression_algorithm` channel option. */
const COMPRESSION_GZIP = 2;

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
  // Loopback tests: never route through an http_proxy / grpc_proxy from the environment.
  "grpc.enable_http_proxy": 0,
};

// biome-ignore lint/suspicious/noExplicitAny: method definitions are generic over message types.
type AnyMethod = grpc.MethodDefinition<any, any>;

class CaseFailure extends Error {}

function fail(message: string): never {
  throw new CaseFailure(message);
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) fail(message);
}

function callOptions(timeoutMs = CALL_TIMEOUT_MS): grpc.CallOptions {
  return { deadline: Date.now() + timeoutMs };
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === "number";
}

function describeError(err: unknown): string {
  if (isServiceError(err))
    return `${grpc.status[err.code] ?? err.code} (${err.code}): ${JSON.stringify(err.details)}`;
  return err instanceof Error ? err.message : String(err);
}

function statusName(code: number): string {
  return `${grpc.status[code] ?? "?"} (${code})`;
}

function assertZeros(body: Buffer | undefined, size: number, what: string): void {
  check(body !== undefined, `${what}: response has no payload`);
  check(body.length === size, `${what}: payload is ${body.length} bytes, expected ${size}`);
  check(
    body.every((b) => b === 0),
    `${what}: payload is not all zeros`,
  );
}

/** Runs fn, which must fail with the given status code. */
async function expectCode(
  code: grpc.status,
  what: string,
  fn: () => Promise<unknown>,
): Promise<grpc.ServiceError> {
  try {
    await fn();
  } catch (err) {
    check(isServiceError(err), `${what}: expected ${statusName(code)}, got error ${describeError(err)}`);
    check(err.code === code, `${what}: expected ${statusName(code)}, got ${describeError(err)}`);
    return err;
  }
  return fail(`${what}: expected ${statusName(code)}, but the call succeeded`);
}

interface UnaryResult<Res> {
  response: Res;
  headers: grpc.Metadata | undefined;
  status: grpc.StatusObject;
}

function unary<Req, Res>(
  client: grpc.Client,
  method: AnyMethod,
  request: Req,
  metadata = new grpc.Metadata(),
  options = callOptions(),
): Promise<UnaryResult<Res>> {
  return new Promise((resolve, reject) => {
    let headers: grpc.Metadata | undefined;
    let response: Res | undefined;
    let error: grpc.ServiceError | null = null;
    let callbackDone = false;
    let status: grpc.StatusObject | undefined;
    const settle = () => {
      if (!callbackDone || status === undefined) return;
      if (error) reject(error);
      else resolve({ response: response as Res, headers, status });
    };
    const call = client.makeUnaryRequest<Req, Res>(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata,
      options,
      (err, value) => {
        error = err;
        response = value;
        callbackDone = true;
        settle();
      },
    );
    call.on("metadata", (md: grpc.Metadata) => {
      headers = md;
    });
    call.on("status", (s: grpc.StatusObject) => {
      status = s;
      settle();
    });
  });
}

/** Pull-style reader over a grpc-js response stream; every wait ends with the call (all calls have deadlines). */
class StreamReader<T> {
  private readonly queue: T[] = [];
  private ended = false;
  private error: grpc.ServiceError | undefined;
  private waiter: (() => void) | undefined;
  headers: grpc.Metadata | undefined;
  readonly status: Promise<grpc.StatusObject>;

  constructor(stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>) {
    stream.on("data", (msg: T) => {
      this.queue.push(msg);
      this.wake();
    });
    stream.on("end", () => {
      this.ended = true;
      this.wake();
    });
    stream.on("error", (err: grpc.ServiceError) => {
      this.error = err;
      this.ended = true;
      this.wake();
    });
    stream.on("metadata", (md: grpc.Metadata) => {
      this.headers = md;
    });
    this.status = new Promise((resolve) => stream.on("status", resolve));
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** The next message, or null once the stream ended OK; throws the call's error. */
  async next(what: string): Promise<T | null> {
    const limit = Date.now() + CALL_TIMEOUT_MS + 1000;
    // Each iteration waits for an event or a timer; bounded by the deadline check.
    for (;;) {
      const msg = this.queue.shift();
      if (msg !== undefined) return msg;
      if (this.error) throw this.error;
      if (this.ended) return null;
      const remaining = limit - Date.now();
      if (remaining <= 0) fail(`${what}: no message, end or error within ${CALL_TIMEOUT_MS + 1000} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Reads to the end; throws the call's error. */
  async all(what: string, max = 1000): Promise<T[]> {
    const out: T[] = [];
    for (let i = 0; i <= max; i++) {
      const msg = await this.next(what);
      if (msg === null) return out;
      out.push(msg);
    }
    return fail(`${what}: more than ${max} messages`);
  }
}

function clientStream<Req, Res>(
  client: grpc.Client,
  method: AnyMethod,
  metadata = new grpc.Metadata(),
  options = callOptions(),
): { call: grpc.ClientWritableStream<Req>; result: Promise<Res> } {
  let call: grpc.ClientWritableStream<Req> | undefined;
  const result = new Promise<Res>((resolve, reject) => {
    call = client.makeClientStreamRequest<Req, Res>(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      metadata,
      options,
      (err, value) => {
        if (err) reject(err);
        else resolve(value as Res);
      },
    );
  });
  return { call: call!, result };
}

function serverStream<Req, Res>(
  client: grpc.Client,
  method: AnyMethod,
  request: Req,
  metadata = new grpc.Metadata(),
) {
  const call = client.makeServerStreamRequest<Req, Res>(
    method.path,
    method.requestSerialize,
    method.responseDeserialize,
    request,
    metadata,
    callOptions(),
  );
  return { call, reader: new StreamReader<Res>(call) };
}

function bidi<Req, Res>(
  client: grpc.Client,
  method: AnyMethod,
  metadata = new grpc.Metadata(),
  options = callOptions(),
) {
  const call = client.makeBidiStreamRequest<Req, Res>(
    method.path,
    method.requestSerialize,
    method.responseDeserialize,
    metadata,
    options,
  );
  return { call, reader: new StreamReader<Res>(call) };
}

function writeMsg<T>(
  call: grpc.ClientWritableStream<T> | grpc.ClientDuplexStream<T, unknown>,
  msg: T,
  flags?: number,
) {
  // grpc-js reads per-message write flags from the `encoding` argument (see its call.ts _write).
  if (flags === undefined) call.write(msg);
  else call.write(msg, String(flags) as BufferEncoding);
}

/** Clients of one case; every case closes them in `finally`. */
class Clients {
  private readonly open: grpc.Client[] = [];
  constructor(private readonly target: string) {}

  /** A client on its own channel; compress=true sets gzip as the channel's default compression. */
  get(compress = false): grpc.Client {
    const options: grpc.ChannelOptions = { ...CHANNEL_OPTIONS };
    if (compress) options["grpc.default_compression_algorithm"] = COMPRESSION_GZIP;
    const client = new grpc.Client(this.target, grpc.credentials.createInsecure(), options);
    this.open.push(client);
    return client;
  }

  close(): void {
    for (const c of this.open.splice(0)) c.close();
  }
}

const m = (name: TestMethod) => testMethod(name);
const LARGE_REQUEST_SIZE = 271828;
const LARGE_RESPONSE_SIZE = 314159;

type CaseFn = (clients: Clients, target: string) => Promise<void>;

const cases: Record<(typeof INTEROP_CASES)[number], CaseFn> = {
  async empty_unary(clients) {
    const { response } = await unary<object, object>(clients.get(), m("EmptyCall"), {});
    check(response !== null && response !== undefined, "EmptyCall: response is null");
    check(isDeepStrictEqual(response, {}), `EmptyCall: response is not empty: ${JSON.stringify(response)}`);
  },

  async large_unary(clients) {
    const { response } = await unary<SimpleRequest, SimpleResponse>(clients.get(), m("UnaryCall"), {
      response_size: LARGE_RESPONSE_SIZE,
      payload: zeros(LARGE_REQUEST_SIZE),
    });
    assertZeros(response.payload?.body, LARGE_RESPONSE_SIZE, "UnaryCall");
  },

  async client_streaming(clients) {
    const { call, result } = clientStream<StreamingInputCallRequest, StreamingInputCallResponse>(
      clients.get(),
      m("StreamingInputCall"),
    );
    for (const size of [27182, 8, 1828, 45904]) writeMsg(call, { payload: zeros(size) });
    call.end();
    const res = await result;
    check(
      res.aggregated_payload_size === 74922,
      `aggregated_payload_size ${res.aggregated_payload_size} != 74922`,
    );
  },

  async server_streaming(clients) {
    const sizes = [31415, 9, 2653, 58979];
    const { reader } = serverStream<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      clients.get(),
      m("StreamingOutputCall"),
      { response_parameters: sizes.map((size) => ({ size })) },
    );
    const msgs = await reader.all("StreamingOutputCall");
    check(msgs.length === sizes.length, `got ${msgs.length} responses, expected ${sizes.length}`);
    for (const [i, msg] of msgs.entries()) assertZeros(msg.payload?.body, sizes[i]!, `response ${i}`);
    const status = await reader.status;
    check(status.code === grpc.status.OK, `status ${statusName(status.code)}, expected OK`);
  },

  async ping_pong(clients) {
    const { call, reader } = bidi<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      clients.get(),
      m("FullDuplexCall"),
    );
    const steps = [
      [31415, 27182],
      [9, 8],
      [2653, 1828],
      [58979, 45904],
    ] as const;
    for (const [i, [responseSize, requestSize]] of steps.entries()) {
      writeMsg(call, { response_parameters: [{ size: responseSize }], payload: zeros(requestSize) });
      const msg = await reader.next(`ping ${i}`);
      check(msg !== null, `ping ${i}: stream ended before a reply`);
      assertZeros(msg.payload?.body, responseSize, `pong ${i}`);
    }
    call.end();
    const rest = await reader.all("after half-close");
    check(rest.length === 0, `got ${rest.length} extra responses after the 4th`);
    const status = await reader.status;
    check(status.code === grpc.status.OK, `status ${statusName(status.code)}, expected OK`);
  },

  async empty_stream(clients) {
    const { call, reader } = bidi<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      clients.get(),
      m("FullDuplexCall"),
    );
    call.end();
    const msgs = await reader.all("FullDuplexCall");
    check(msgs.length === 0, `got ${msgs.length} responses, expected none`);
    const status = await reader.status;
    check(status.code === grpc.status.OK, `status ${statusName(status.code)}, expected OK`);
  },

  async timeout_on_sleeping_server(clients) {
    const { call, reader } = bidi<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      clients.get(),
      m("FullDuplexCall"),
      new grpc.Metadata(),
      callOptions(1),
    );
    writeMsg(call, { payload: zeros(27182) });
    await expectCode(grpc.status.DEADLINE_EXCEEDED, "FullDuplexCall with 1 ms deadline", () =>
      reader.all("sleep"),
    );
  },

  async cancel_after_begin(clients) {
    const { call, result } = clientStream<StreamingInputCallRequest, StreamingInputCallResponse>(
      clients.get(),
      m("StreamingInputCall"),
    );
    call.cancel();
    await expectCode(grpc.status.CANCELLED, "StreamingInputCall cancelled after begin", () => result);
  },

  async cancel_after_first_response(clients) {
    const { call, reader } = bidi<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      clients.get(),
      m("FullDuplexCall"),
    );
    writeMsg(call, { response_parameters: [{ size: 31415 }], payload: zeros(27182) });
    const first = await reader.next("first response");
    check(first !== null, "stream ended before the first response");
    assertZeros(first.payload?.body, 31415, "first response");
    call.cancel();
    await expectCode(grpc.status.CANCELLED, "FullDuplexCall cancelled after first response", () =>
      reader.all("after cancel"),
    );
  },

  async status_code_and_message(clients) {
    const client = clients.get();
    const responseStatus = { code: 2, message: "test status message" };
    const u = await expectCode(grpc.status.UNKNOWN, "UnaryCall", () =>
      unary<SimpleRequest, SimpleResponse>(client, m("UnaryCall"), { response_status: responseStatus }),
    );
    check(u.details === responseStatus.message, `UnaryCall: message ${JSON.stringify(u.details)}`);
    const { call, reader } = bidi<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      client,
      m("FullDuplexCall"),
    );
    writeMsg(call, { response_status: responseStatus });
    call.end();
    const d = await expectCode(grpc.status.UNKNOWN, "FullDuplexCall", () => reader.all("FullDuplexCall"));
    check(d.details === responseStatus.message, `FullDuplexCall: message ${JSON.stringify(d.details)}`);
  },

  async special_status_message(clients) {
    const err = await expectCode(grpc.status.UNKNOWN, "UnaryCall", () =>
      unary<SimpleRequest, SimpleResponse>(clients.get(), m("UnaryCall"), {
        response_status: { code: 2, message: SPECIAL_STATUS_MESSAGE },
      }),
    );
    check(
      err.details === SPECIAL_STATUS_MESSAGE,
      `status message ${JSON.stringify(err.details)}, expected ${JSON.stringify(SPECIAL_STATUS_MESSAGE)}`,
    );
  },

  async custom_metadata(clients) {
    const client = clients.get();
    const initialValue = "test_initial_metadata_value";
    const trailingValue = Buffer.from([0xab, 0xab, 0xab]);
    const metadata = () => {
      const md = new grpc.Metadata();
      md.set(ECHO_INITIAL_KEY, initialValue);
      md.set(ECHO_TRAILING_KEY, trailingValue);
      return md;
    };
    const checkEcho = (what: string, headers: grpc.Metadata | undefined, trailers: grpc.Metadata) => {
      const initial = headers?.get(ECHO_INITIAL_KEY) ?? [];
      check(
        initial.length === 1 && initial[0] === initialValue,
        `${what}: initial metadata ${ECHO_INITIAL_KEY} = ${JSON.stringify(initial)}, expected "${initialValue}"`,
      );
      const trailing = trailers.get(ECHO_TRAILING_KEY);
      const got = trailing[0];
      check(
        trailing.length === 1 && Buffer.isBuffer(got) && got.equals(trailingValue),
        `${what}: trailing metadata ${ECHO_TRAILING_KEY} = ${trailing.map((v) => (Buffer.isBuffer(v) ? v.toString("hex") : v))}, expected ababab`,
      );
    };

    const u = await unary<SimpleRequest, SimpleResponse>(
      client,
      m("UnaryCall"),
      { response_size: LARGE_RESPONSE_SIZE, payload: zeros(LARGE_REQUEST_SIZE) },
      metadata(),
    );
    assertZeros(u.response.payload?.body, LARGE_RESPONSE_SIZE, "UnaryCall");
    checkEcho("UnaryCall", u.headers, u.status.metadata);

    const { call, reader } = bidi<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      client,
      m("FullDuplexCall"),
      metadata(),
    );
    writeMsg(call, {
      response_parameters: [{ size: LARGE_RESPONSE_SIZE }],
      payload: zeros(LARGE_REQUEST_SIZE),
    });
    call.end();
    const msgs = await reader.all("FullDuplexCall");
    check(msgs.length === 1, `FullDuplexCall: got ${msgs.length} responses, expected 1`);
    assertZeros(msgs[0]?.payload?.body, LARGE_RESPONSE_SIZE, "FullDuplexCall");
    const status = await reader.status;
    check(status.code === grpc.status.OK, `FullDuplexCall: status ${statusName(status.code)}, expected OK`);
    checkEcho("FullDuplexCall", reader.headers, status.metadata);
  },

  async unimplemented_method(clients) {
    await expectCode(grpc.status.UNIMPLEMENTED, "TestService/UnimplementedCall", () =>
      unary<object, object>(clients.get(), m("UnimplementedCall"), {}),
    );
  },

  async unimplemented_service(clients) {
    await expectCode(grpc.status.UNIMPLEMENTED, "UnimplementedService/UnimplementedCall", () =>
      unary<object, object>(clients.get(), unimplementedServiceMethod(), {}),
    );
  },

  async client_compressed_unary(clients) {
    const plain = clients.get(false);
    const gzip = clients.get(true);
    const request = (expect: boolean): SimpleRequest => ({
      expect_compressed: { value: expect },
      response_size: LARGE_RESPONSE_SIZE,
      payload: zeros(LARGE_REQUEST_SIZE),
    });
    // 1. Feature probe: an uncompressed request that claims to be compressed must be rejected.
    await expectCode(grpc.status.INVALID_ARGUMENT, "probe (uncompressed, expect_compressed=true)", () =>
      unary<SimpleRequest, SimpleResponse>(plain, m("UnaryCall"), request(true)),
    );
    // 2. Compressed request (the channel's default compression is gzip).
    const c = await unary<SimpleRequest, SimpleResponse>(gzip, m("UnaryCall"), request(true));
    assertZeros(c.response.payload?.body, LARGE_RESPONSE_SIZE, "compressed request");
    // 3. Uncompressed request.
    const u = await unary<SimpleRequest, SimpleResponse>(plain, m("UnaryCall"), request(false));
    assertZeros(u.response.payload?.body, LARGE_RESPONSE_SIZE, "uncompressed request");
  },

  async server_compressed_unary(clients, target) {
    const client = clients.get();
    const method = m("UnaryCall");
    for (const compressed of [true, false]) {
      const req: SimpleRequest = {
        response_compressed: { value: compressed },
        response_size: LARGE_RESPONSE_SIZE,
        payload: zeros(LARGE_REQUEST_SIZE),
      };
      const what = `response_compressed=${compressed}`;
      const { response } = await unary<SimpleRequest, SimpleResponse>(client, method, req);
      assertZeros(response.payload?.body, LARGE_RESPONSE_SIZE, what);
      // grpc-js hides message flags, so the flag itself is checked on a raw HTTP/2 call with the same request.
      const raw = await rawGrpcCall(target, method.path, [method.requestSerialize(req)], CALL_TIMEOUT_MS);
      check(raw.status === grpc.status.OK, `${what} (raw): status ${statusName(raw.status)} ${raw.message}`);
      check(raw.messages.length === 1, `${what} (raw): ${raw.messages.length} response messages, expected 1`);
      const msg = raw.messages[0]!;
      check(msg.compressed === compressed, `${what} (raw): compressed flag is ${msg.compressed}`);
      const decoded = method.responseDeserialize(msg.body) as SimpleResponse;
      assertZeros(decoded.payload?.body, LARGE_RESPONSE_SIZE, `${what} (raw)`);
    }
  },

  async client_compressed_streaming(clients) {
    // 1. Feature probe on an uncompressed channel.
    const probe = clientStream<StreamingInputCallRequest, StreamingInputCallResponse>(
      clients.get(false),
      m("StreamingInputCall"),
    );
    writeMsg(probe.call, { expect_compressed: { value: true }, payload: zeros(27182) });
    probe.call.end();
    await expectCode(
      grpc.status.INVALID_ARGUMENT,
      "probe (uncompressed, expect_compressed=true)",
      () => probe.result,
    );
    // 2. One call: a compressed message, then one sent with the NoCompress write flag.
    const { call, result } = clientStream<StreamingInputCallRequest, StreamingInputCallResponse>(
      clients.get(true),
      m("StreamingInputCall"),
    );
    writeMsg(call, { expect_compressed: { value: true }, payload: zeros(27182) });
    writeMsg(call, { expect_compressed: { value: false }, payload: zeros(45904) }, WRITE_FLAG_NO_COMPRESS);
    call.end();
    const res = await result;
    check(
      res.aggregated_payload_size === 73086,
      `aggregated_payload_size ${res.aggregated_payload_size} != 73086`,
    );
  },

  async server_compressed_streaming(clients, target) {
    const method = m("StreamingOutputCall");
    const req: StreamingOutputCallRequest = {
      response_parameters: [
        { compressed: { value: true }, size: 31415 },
        { compressed: { value: false }, size: 92653 },
      ],
    };
    const sizes = [31415, 92653];
    const { reader } = serverStream<StreamingOutputCallRequest, StreamingOutputCallResponse>(
      clients.get(),
      method,
      req,
    );
    const msgs = await reader.all("StreamingOutputCall");
    check(msgs.length === 2, `got ${msgs.length} responses, expected 2`);
    for (const [i, msg] of msgs.entries()) assertZeros(msg.payload?.body, sizes[i]!, `response ${i}`);
    // grpc-js hides message flags, so they are checked on a raw HTTP/2 call with the same request.
    const raw = await rawGrpcCall(target, method.path, [method.requestSerialize(req)], CALL_TIMEOUT_MS);
    check(raw.status === grpc.status.OK, `raw: status ${statusName(raw.status)} ${raw.message}`);
    check(raw.messages.length === 2, `raw: ${raw.messages.length} response messages, expected 2`);
    raw.messages.forEach((msg, i) => {
      const expected = i === 0;
      check(
        msg.compressed === expected,
        `raw response ${i}: compressed flag is ${msg.compressed}, expected ${expected}`,
      );
      const decoded = method.responseDeserialize(msg.body) as StreamingOutputCallResponse;
      assertZeros(decoded.payload?.body, sizes[i]!, `raw response ${i}`);
    });
  },
};

/** Runs one interop case with grpc-js against target ("host:port"); throws an Error if it fails. */
export async function runGrpcJsCase(name: string, target: string): Promise<void> {
  if (!isInteropCase(name)) throw new Error(`unknown interop case "${name}"`);
  const clients = new Clients(target);
  try {
    await cases[name](clients, target);
  } catch (err) {
    const detail = err instanceof CaseFailure ? err.message : `unexpected error: ${describeError(err)}`;
    throw new Error(`grpc-js ${name} against ${target}: ${detail}`, { cause: err });
  } finally {
    clients.close();
  }
}
