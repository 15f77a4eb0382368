// A grpc-js backend for Roster's integration tests: the roster.test.Echo service (./echo.proto) whose
// replies carry the backend's identity (`served_by`, and an `x-served-by` response header), with a
// configurable per-call delay and counters of calls served and cancellations seen.
//
// In-process:   const b = await startEchoBackend({ id: "b1", delayMs: 2 }); ... await b.close();
// As a script:  node --import tsx test/support/echo-backend.ts --id b1 [--port 0] [--delay-ms 0]
//               prints "PORT <n>" once listening; exits on SIGTERM or when its stdin closes (so an
//               orphan never outlives the test process). Counters are read with the unary Stats RPC.
//
// Per-call options travel in request metadata:
//   ClientStream: x-read-pause-ms / x-read-pause-every — stop reading for that many ms after every that
//                 many messages (a slow reader, to exercise flow control upstream).
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { stopWhenParentGoes } from "./child-lifetime.ts";

export interface EchoRequest {
  message: string;
  payload: Buffer;
  delay_ms: number;
}
export interface EchoReply {
  message: string;
  payload: Buffer;
  served_by: string;
  deadline_budget_ms: number;
}
export interface StreamRequest {
  count: number;
  size: number;
  interval_ms: number;
}
export interface StreamSummary {
  messages: number;
  bytes: number;
  sha256: string;
  served_by: string;
}
export interface EchoStats {
  served_by: string;
  /** Calls started (Stats excluded). */
  calls: number;
  /** Calls whose 'cancelled' event came before the handler had sent its status. */
  cancelled: number;
  /** Calls started and not yet finished or cancelled. */
  active: number;
  /** Milliseconds of deadline left when the latest call with a deadline started; -1 if none had one. */
  last_deadline_budget_ms: number;
}

const PROTO_PATH = fileURLToPath(new URL("./echo.proto", import.meta.url));
const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
});
const serviceDef = packageDefinition["roster.test.Echo"];
if (serviceDef === undefined || "format" in serviceDef)
  throw new Error("roster.test.Echo not found in echo.proto");
export const echoService = serviceDef as unknown as grpc.ServiceDefinition;

export type EchoMethod = "Echo" | "ServerStream" | "ClientStream" | "Bidi" | "Stats";
// biome-ignore lint/suspicious/noExplicitAny: method definitions are generic over message types.
function method(name: EchoMethod): grpc.MethodDefinition<any, any> {
  const m = echoService[name];
  if (m === undefined) throw new Error(`method ${name} missing from roster.test.Echo`);
  return m;
}

/** The gRPC path of a method, e.g. "/roster.test.Echo/Echo". */
export function echoPath(name: EchoMethod): string {
  return method(name).path;
}

/** Protobuf encoding of an EchoRequest, for raw HTTP/2 clients (without the 5-byte gRPC prefix). */
export function encodeEchoRequest(req: Partial<EchoRequest>): Buffer {
  return method("Echo").requestSerialize({ message: "", payload: Buffer.alloc(0), delay_ms: 0, ...req });
}

/** Decodes an EchoReply (without the 5-byte gRPC prefix). */
export function decodeEchoReply(bytes: Buffer): EchoReply {
  return method("Echo").responseDeserialize(bytes) as EchoReply;
}

/** A gRPC length-prefixed message frame. */
export function grpcFrame(body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(body.length + 5);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

/**
 * The payload of server-stream message `index` of `size` bytes: a fixed pseudo-random block (mulberry32,
 * seed 1) with the index written into its first 4 bytes, so reordered or repeated messages change the hash.
 */
const blocks = new Map<number, Buffer>();
export function streamPayload(index: number, size: number): Buffer {
  let block = blocks.get(size);
  if (block === undefined) {
    block = Buffer.allocUnsafe(size);
    let state = 1;
    for (let i = 0; i < size; i++) {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      block[i] = (t ^ (t >>> 14)) & 0xff;
    }
    blocks.set(size, block);
  }
  const out = Buffer.from(block);
  if (size >= 4) out.writeUInt32BE(index >>> 0, 0);
  return out;
}

export interface EchoBackendOptions {
  /** Identity in every reply; default `echo-<port>`. */
  readonly id?: string;
  readonly host?: string;
  readonly port?: number;
  /** Added to every Echo call's own `delay_ms`. */
  readonly delayMs?: number;
}

export interface EchoBackend {
  readonly id: string;
  readonly port: number;
  /** "127.0.0.1:PORT". */
  readonly address: string;
  stats(): EchoStats;
  /** Graceful: stops listening, sends GOAWAY, lets open calls finish; resolves when they have. */
  shutdown(): Promise<void>;
  /** Ends open calls and stops the server. */
  close(): Promise<void>;
}

interface Tracked {
  /** Milliseconds left of the call's deadline when the handler started; -1 without one. */
  readonly budget: number;
  /** Marks the call finished by the handler; a later 'cancelled' event is then not a cancellation. */
  finish(): void;
  readonly finished: () => boolean;
  /**
   * Runs `fn` (which ends the call) after the request stream ended, unless the call was cancelled:
   * grpc-js ends the request stream of a cancelled call too, a moment before it says 'cancelled'.
   */
  onEnd(requests: NodeJS.EventEmitter, fn: () => void): void;
}

function metadataNumber(md: grpc.Metadata, key: string): number {
  const v = md.get(key)[0];
  const n = Number(typeof v === "string" ? v : undefined);
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

/** What the handlers use of every grpc-js server call type (grpc-js does not export ServerSurfaceCall). */
interface SurfaceCall extends NodeJS.EventEmitter {
  readonly cancelled: boolean;
  getDeadline(): grpc.Deadline;
  sendMetadata(metadata: grpc.Metadata): void;
}

function budgetOf(call: SurfaceCall): number {
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(at) ? at - Date.now() : -1;
}

export async function startEchoBackend(o: EchoBackendOptions = {}): Promise<EchoBackend> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  let id = o.id ?? "";
  const stats: EchoStats = { served_by: "", calls: 0, cancelled: 0, active: 0, last_deadline_budget_ms: -1 };
  const timers = new Set<NodeJS.Timeout>();

  const later = (ms: number, fn: () => void): NodeJS.Timeout => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };

  /** Counts the call, sends the identity header, and records its deadline budget. */
  const track = (call: SurfaceCall, onCancel?: () => void): Tracked => {
    stats.calls++;
    stats.active++;
    const budget = budgetOf(call);
    stats.last_deadline_budget_ms = budget;
    const md = new grpc.Metadata();
    md.set("x-served-by", id);
    call.sendMetadata(md);
    let finished = false;
    // grpc-js emits 'cancelled' after every status it sends, so only one before our own end counts.
    call.on("cancelled", () => {
      if (finished) return;
      finished = true;
      stats.cancelled++;
      stats.active--;
      onCancel?.();
    });
    return {
      budget,
      finish: () => {
        if (finished) return;
        finished = true;
        stats.active--;
      },
      finished: () => finished,
      onEnd(requests, fn) {
        requests.on("end", () =>
          setImmediate(() => {
            if (finished || call.cancelled) return;
            finished = true;
            stats.active--;
            fn();
          }),
        );
      },
    };
  };

  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) {
      let timer: NodeJS.Timeout | undefined;
      const t = track(call, () => clearTimeout(timer));
      const reply = () => {
        if (t.finished()) return;
        t.finish();
        callback(null, {
          message: call.request.message,
          payload: call.request.payload,
          served_by: id,
          deadline_budget_ms: t.budget,
        });
      };
      const delay = (o.delayMs ?? 0) + call.request.delay_ms;
      if (delay > 0) timer = later(delay, reply);
      else reply();
    },

    ServerStream(call: grpc.ServerWritableStream<StreamRequest, EchoReply>) {
      let stopped = false;
      const t = track(call, () => {
        stopped = true;
      });
      const { count, size, interval_ms: interval } = call.request;
      const hash = createHash("sha256");
      let bytes = 0;
      let i = 0;
      // Bounded by `count`; each step waits for 'drain' when grpc-js buffers, so flow control holds.
      const next = () => {
        while (!stopped && i < count) {
          const payload = streamPayload(i, size);
          hash.update(payload);
          bytes += payload.length;
          i++;
          const more = call.write({ message: "", payload, served_by: id, deadline_budget_ms: t.budget });
          if (interval > 0 && i < count) {
            later(interval, next);
            return;
          }
          if (!more) {
            call.once("drain", next);
            return;
          }
        }
        if (stopped) return;
        t.finish();
        const trailers = new grpc.Metadata();
        trailers.set("x-sha256", hash.digest("hex"));
        trailers.set("x-bytes", String(bytes));
        call.end(trailers);
      };
      next();
    },

    ClientStream(
      call: grpc.ServerReadableStream<EchoRequest, StreamSummary>,
      callback: grpc.sendUnaryData<StreamSummary>,
    ) {
      const t = track(call);
      const pauseMs = metadataNumber(call.metadata, "x-read-pause-ms");
      const pauseEvery = metadataNumber(call.metadata, "x-read-pause-every");
      const hash = createHash("sha256");
      let messages = 0;
      let bytes = 0;
      call.on("data", (req: EchoRequest) => {
        messages++;
        bytes += req.payload.length;
        hash.update(req.payload);
        if (pauseMs > 0 && pauseEvery > 0 && messages % pauseEvery === 0) {
          call.pause();
          later(pauseMs, () => call.resume());
        }
      });
      t.onEnd(call, () => callback(null, { messages, bytes, sha256: hash.digest("hex"), served_by: id }));
      call.on("error", () => {});
    },

    Bidi(call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) {
      const t = track(call);
      call.on("data", (req: EchoRequest) => {
        if (t.finished()) return;
        call.write({
          message: req.message,
          payload: req.payload,
          served_by: id,
          deadline_budget_ms: t.budget,
        });
      });
      t.onEnd(call, () => call.end());
      call.on("error", () => {});
    },

    Stats(_call: grpc.ServerUnaryCall<unknown, EchoStats>, callback: grpc.sendUnaryData<EchoStats>) {
      callback(null, { ...stats });
    },
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${o.host ?? "127.0.0.1"}:${o.port ?? 0}`,
      grpc.ServerCredentials.createInsecure(),
      (err, p) => (err ? reject(err) : resolve(p)),
    );
  });
  if (id === "") id = `echo-${port}`;
  stats.served_by = id;

  return {
    id,
    port,
    address: `127.0.0.1:${port}`,
    stats: () => ({ ...stats }),
    shutdown: () =>
      new Promise<void>((resolve, reject) => server.tryShutdown((err) => (err ? reject(err) : resolve()))),
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.forceShutdown();
        resolve();
      }),
  };
}

// --- client side ------------------------------------------------------------------------------------

export interface CallOptions {
  /** Milliseconds from now. */
  readonly deadlineMs?: number;
  readonly metadata?: grpc.Metadata;
}

/** A typed client of roster.test.Echo over one grpc-js channel. */
export class EchoClient {
  readonly client: grpc.Client;

  constructor(address: string, options: grpc.ChannelOptions = {}) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
      ...options,
    });
  }

  #options(o: CallOptions): grpc.CallOptions {
    return o.deadlineMs === undefined ? {} : { deadline: Date.now() + o.deadlineMs };
  }

  /** Resolves with the reply; rejects with the grpc-js ServiceError. */
  echo(req: Partial<EchoRequest>, o: CallOptions = {}): Promise<EchoReply> {
    const m = method("Echo");
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<EchoRequest, EchoReply>(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        { message: "", payload: Buffer.alloc(0), delay_ms: 0, ...req },
        o.metadata ?? new grpc.Metadata(),
        this.#options(o),
        (err, reply) => (err ? reject(err) : resolve(reply!)),
      );
    });
  }

  stats(o: CallOptions = { deadlineMs: 5000 }): Promise<EchoStats> {
    const m = method("Stats");
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<Record<string, never>, EchoStats>(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        {},
        new grpc.Metadata(),
        this.#options(o),
        (err, reply) => (err ? reject(err) : resolve(reply!)),
      );
    });
  }

  serverStream(req: Partial<StreamRequest>, o: CallOptions = {}): grpc.ClientReadableStream<EchoReply> {
    const m = method("ServerStream");
    return this.client.makeServerStreamRequest<StreamRequest, EchoReply>(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      { count: 0, size: 0, interval_ms: 0, ...req },
      o.metadata ?? new grpc.Metadata(),
      this.#options(o),
    );
  }

  clientStream(
    o: CallOptions,
    callback: (err: grpc.ServiceError | null, summary?: StreamSummary) => void,
  ): grpc.ClientWritableStream<EchoRequest> {
    const m = method("ClientStream");
    return this.client.makeClientStreamRequest<EchoRequest, StreamSummary>(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      o.metadata ?? new grpc.Metadata(),
      this.#options(o),
      callback,
    );
  }

  bidi(o: CallOptions = {}): grpc.ClientDuplexStream<EchoRequest, EchoReply> {
    const m = method("Bidi");
    return this.client.makeBidiStreamRequest<EchoRequest, EchoReply>(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      o.metadata ?? new grpc.Metadata(),
      this.#options(o),
    );
  }

  close(): void {
    this.client.close();
  }
}

// --- child processes --------------------------------------------------------------------------------

export interface ChildScript {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  /** Every stdout line after "PORT <n>", as it arrives. */
  onLine(fn: (line: string) => void): void;
  /** Resolves once the process has exited (at once if it already has). */
  exited(): Promise<void>;
  /** SIGKILL by pid (no-op once exited); resolves when it is gone. */
  kill(): Promise<void>;
}

/**
 * Runs a TypeScript script under tsx as a child process and waits (bounded) for its "PORT <n>" line.
 * stdin stays a pipe so the child can exit when this process goes away.
 */
export function spawnScript(
  script: string,
  args: readonly string[],
  timeoutMs = 10_000,
): Promise<ChildScript> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const pid = child.pid;
  let exited = child.exitCode !== null || child.signalCode !== null;
  const exitWaiters: (() => void)[] = [];
  child.once("exit", () => {
    exited = true;
    for (const w of exitWaiters.splice(0)) w();
  });
  const listeners: ((line: string) => void)[] = [];
  const exitedPromise = () =>
    new Promise<void>((resolve) => {
      if (exited) resolve();
      else exitWaiters.push(resolve);
    });
  return new Promise((resolve, reject) => {
    if (pid === undefined) {
      reject(new Error(`could not spawn ${script}`));
      return;
    }
    let port: number | undefined;
    let rest = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${script} printed no PORT line within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once("exit", (code, signal) => {
      if (port === undefined) {
        clearTimeout(timer);
        reject(new Error(`${script} exited (${code ?? signal}) before printing its port`));
      }
    });
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (text: string) => {
      rest += text;
      let nl = rest.indexOf("\n");
      // Bounded by the text received: each turn removes one line.
      while (nl >= 0) {
        const line = rest.slice(0, nl).trim();
        rest = rest.slice(nl + 1);
        nl = rest.indexOf("\n");
        if (port === undefined) {
          const m = /^PORT (\d+)$/.exec(line);
          if (m === null) continue;
          port = Number(m[1]);
          clearTimeout(timer);
          resolve({
            child,
            pid,
            port,
            onLine: (fn) => listeners.push(fn),
            exited: exitedPromise,
            kill: async () => {
              if (!exited) {
                try {
                  process.kill(pid, "SIGKILL");
                } catch {
                  // already gone
                }
              }
              await exitedPromise();
            },
          });
        } else {
          for (const fn of listeners) fn(line);
        }
      }
    });
  });
}

export const ECHO_BACKEND_SCRIPT = fileURLToPath(import.meta.url);

/** Starts `echo-backend.ts` as a child process. */
export function spawnEchoBackend(id: string, delayMs = 0): Promise<ChildScript> {
  return spawnScript(ECHO_BACKEND_SCRIPT, ["--id", id, "--delay-ms", String(delayMs)]);
}

/** Reads `--name value` from argv. */
export function argValue(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const backend = await startEchoBackend({
    ...(argValue(argv, "--id") !== undefined ? { id: argValue(argv, "--id") } : {}),
    port: Number(argValue(argv, "--port") ?? 0),
    delayMs: Number(argValue(argv, "--delay-ms") ?? 0),
  });
  process.stdout.write(`PORT ${backend.port}\n`);
  const stop = () => {
    void backend.close().then(() => process.exit(0));
  };
  stopWhenParentGoes(stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}

// --- small helpers shared by the integration tests ---------------------------------------------------

/** Polls `check` every 10 ms until it is true; rejects naming `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  // Bounded by the clock: at most timeoutMs / 10 turns.
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A port on 127.0.0.1 with nothing listening (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const address = s.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
