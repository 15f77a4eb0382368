// A grpc-js server of roster.benchtest.Echo (./bench-echo.proto) for `roster bench`'s integration tests.
// Every reply names the server (`backend` field) and, with --header, sends the `x-roster-backend` response
// header a Roster balancer adds on request (with the request's `x-bench-tag` metadata appended after a
// colon), so tests can count per-backend shares.
//
// As a script:  node --import tsx test/support/bench-echo-server.ts --id a [--port 0] [--header] [--delay-ms 0]
//               prints "PORT <n>" once listening; exits on SIGTERM or when its stdin closes (so an orphan
//               never outlives the test process). It prints "FIRST-CALL" when its first call arrives.
// From a test:  const s = await spawnBenchEcho(["--id", "a", "--header"]); ...; await s.kill();
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { stopWhenParentGoes } from "./child-lifetime.ts";

export const BENCH_ECHO_PROTO = fileURLToPath(new URL("./bench-echo.proto", import.meta.url));
export const BENCH_ECHO_SCRIPT = fileURLToPath(import.meta.url);

interface EchoRequest {
  message: string;
  payload: Buffer;
  count: number;
  fail_code: number;
}
interface EchoReply {
  message: string;
  payload: Buffer;
  backend: string;
  count: number;
}

export interface BenchEchoOptions {
  readonly id: string;
  readonly port?: number;
  /** Send `x-roster-backend: <id>` in every response's initial metadata. */
  readonly header?: boolean;
  /** Delay of every unary reply, ms. */
  readonly delayMs?: number;
  /** Called once, on the first call of any method. */
  readonly onFirstCall?: () => void;
}

export interface BenchEchoServer {
  readonly port: number;
  close(): void;
}

export async function startBenchEcho(o: BenchEchoOptions): Promise<BenchEchoServer> {
  const definition = protoLoader.loadSync(BENCH_ECHO_PROTO, {
    keepCase: true,
    longs: Number,
    defaults: true,
  });
  const service = definition["roster.benchtest.Echo"] as unknown as grpc.ServiceDefinition;
  const server = new grpc.Server();
  let first = true;
  const identity = (call: { metadata: grpc.Metadata; sendMetadata(md: grpc.Metadata): void }) => {
    if (first) {
      first = false;
      o.onFirstCall?.();
    }
    if (!o.header) return;
    const md = new grpc.Metadata();
    // A request's x-bench-tag is appended, so tests can see that --metadata reached the server.
    const tag = call.metadata.get("x-bench-tag")[0];
    md.set("x-roster-backend", tag === undefined ? o.id : `${o.id}:${String(tag)}`);
    call.sendMetadata(md);
  };
  const reply = (req: EchoRequest, count = 0): EchoReply => ({
    message: req.message,
    payload: req.payload,
    backend: o.id,
    count,
  });
  server.addService(service, {
    Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) {
      identity(call);
      const req = call.request;
      const answer = () => {
        if (req.fail_code !== 0) callback({ code: req.fail_code, details: "asked to fail" });
        else callback(null, reply(req));
      };
      if ((o.delayMs ?? 0) > 0) setTimeout(answer, o.delayMs);
      else answer();
    },
    ServerStream(call: grpc.ServerWritableStream<EchoRequest, EchoReply>) {
      identity(call);
      const n = Math.max(1, call.request.count);
      for (let i = 0; i < n; i++) call.write(reply(call.request, i));
      call.end();
    },
    ClientStream(
      call: grpc.ServerReadableStream<EchoRequest, EchoReply>,
      callback: grpc.sendUnaryData<EchoReply>,
    ) {
      identity(call);
      let count = 0;
      let last: EchoRequest | undefined;
      call.on("data", (req: EchoRequest) => {
        count++;
        last = req;
      });
      call.on("end", () =>
        callback(
          null,
          reply(last ?? { message: "", payload: Buffer.alloc(0), count: 0, fail_code: 0 }, count),
        ),
      );
      call.on("error", () => {});
    },
    Bidi(call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) {
      identity(call);
      let count = 0;
      call.on("data", (req: EchoRequest) => call.write(reply(req, ++count)));
      call.on("end", () => call.end());
      call.on("error", () => {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${o.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { port, close: () => server.forceShutdown() };
}

export interface BenchEchoChild {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  /** "127.0.0.1:PORT". */
  readonly address: string;
  /** Resolves when the server has received its first call (it prints "FIRST-CALL"). */
  firstCall(): Promise<void>;
  /** SIGKILL by pid (no-op once exited); resolves when it is gone. */
  kill(): Promise<void>;
}

/** Starts this file as a child process and waits (bounded) for its "PORT <n>" line. */
export function spawnBenchEcho(args: readonly string[], timeoutMs = 15_000): Promise<BenchEchoChild> {
  const child = spawn(process.execPath, ["--import", "tsx", BENCH_ECHO_SCRIPT, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  let exited = false;
  const gone = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  return new Promise((resolve, reject) => {
    const pid = child.pid;
    if (pid === undefined) {
      reject(new Error("could not spawn bench-echo-server"));
      return;
    }
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`bench-echo-server printed no PORT line within ${timeoutMs} ms`));
    }, timeoutMs);
    void gone.then(() => {
      clearTimeout(timer);
      reject(new Error("bench-echo-server exited before printing its port"));
    });
    let text = "";
    let port: number | undefined;
    let markFirst = () => {};
    const first = new Promise<void>((r) => {
      markFirst = r;
    });
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      text += chunk;
      if (port !== undefined) {
        if (text.includes("FIRST-CALL\n")) markFirst();
        return;
      }
      const m = /PORT (\d+)\n/.exec(text);
      if (m === null) return;
      clearTimeout(timer);
      port = Number(m[1]);
      text = text.slice(m.index + m[0].length);
      if (text.includes("FIRST-CALL\n")) markFirst();
      resolve({
        child,
        pid,
        port,
        address: `127.0.0.1:${port}`,
        firstCall: () => first,
        kill: async () => {
          if (!exited) {
            try {
              process.kill(pid, "SIGKILL");
            } catch {
              // already gone
            }
          }
          await gone;
        },
      });
    });
  });
}

function arg(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const server = await startBenchEcho({
    id: arg(argv, "--id") ?? "echo",
    port: Number(arg(argv, "--port") ?? 0),
    header: argv.includes("--header"),
    delayMs: Number(arg(argv, "--delay-ms") ?? 0),
    onFirstCall: () => process.stdout.write("FIRST-CALL\n"),
  });
  process.stdout.write(`PORT ${server.port}\n`);
  const stop = () => {
    server.close();
    process.exit(0);
  };
  stopWhenParentGoes(stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
