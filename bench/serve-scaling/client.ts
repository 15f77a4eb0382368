// The load of bench/serve-scaling: grpc-js clients of roster.demo.Echo (proto/roster/demo/echo.proto),
// closed loop at a fixed concurrency, with a warm-up and one measured window.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));

export interface EchoReply {
  payload: Buffer;
  served_by: string;
}

interface EchoRequest {
  payload: Buffer;
  work_us: number;
  sleep_us: number;
}

interface EchoClient extends grpc.Client {
  Echo(
    request: EchoRequest,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, reply?: EchoReply) => void,
  ): grpc.ClientUnaryCall;
}

type EchoClientConstructor = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => EchoClient;

let ctor: EchoClientConstructor | undefined;

function clientConstructor(): EchoClientConstructor {
  if (ctor === undefined) {
    const def = protoLoader.loadSync(PROTO, { keepCase: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      roster: { demo: { Echo: EchoClientConstructor } };
    };
    ctor = pkg.roster.demo.Echo;
  }
  return ctor;
}

export interface Echo {
  call(workUs: number): Promise<EchoReply>;
  close(): void;
}

export const PAYLOAD = Buffer.alloc(64, 7);
const DEADLINE_MS = 10_000;

/**
 * One grpc-js channel to 127.0.0.1:port, on its own subchannel pool: one HTTP/2 connection that no
 * other client of this process shares.
 */
export function connectEcho(port: number): Echo {
  const Client = clientConstructor();
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  return {
    call(workUs) {
      return new Promise((resolve, reject) => {
        client.Echo(
          { payload: PAYLOAD, work_us: workUs, sleep_us: 0 },
          { deadline: Date.now() + DEADLINE_MS },
          (err, reply) => (err !== null || reply === undefined ? reject(err) : resolve(reply)),
        );
      });
    },
    close: () => client.close(),
  };
}

export interface DriveOptions {
  concurrency: number;
  workUs: number;
  warmupMs: number;
  durationMs: number;
  /** Called right before the measured window opens / right after it closes (take CPU snapshots). */
  onWindowStart(): void;
  onWindowEnd(): void;
}

export interface Window {
  /** Length of the measured window, seconds. */
  elapsedS: number;
  /** Calls that completed OK inside the window. */
  calls: number;
  errors: number;
  firstError: string | undefined;
  /** Latency of each call completed OK inside the window (ms), sorted. */
  latenciesMs: Float64Array;
  /** Calls per `served_by` of the replies, inside the window. */
  servedBy: Record<string, number>;
  /** Replies whose payload was not the one sent. */
  badPayloads: number;
}

/** Upper bound of calls per lane, so the loop ends even if the clock misbehaves. */
const MAX_CALLS_PER_LANE = 5_000_000;

/**
 * Closed loop: `concurrency` lanes spread over `clients`, each sending its next call as soon as the
 * previous one ends. Calls ending during the warm-up are not counted; the window counts the calls
 * that end between onWindowStart and onWindowEnd, which keeps the load steady at both edges.
 */
export async function drive(clients: readonly Echo[], o: DriveOptions): Promise<Window> {
  let phase: "warmup" | "measure" | "stop" = "warmup";
  let latencies = new Float64Array(65_536);
  let calls = 0;
  let errors = 0;
  let badPayloads = 0;
  let firstError: string | undefined;
  const servedBy: Record<string, number> = {};
  const lane = async (client: Echo): Promise<void> => {
    for (let i = 0; i < MAX_CALLS_PER_LANE && phase !== "stop"; i++) {
      const t0 = performance.now();
      try {
        const reply = await client.call(o.workUs);
        if (phase !== "measure") continue;
        const ms = performance.now() - t0;
        if (calls === latencies.length) {
          const bigger = new Float64Array(latencies.length * 2);
          bigger.set(latencies);
          latencies = bigger;
        }
        latencies[calls++] = ms;
        servedBy[reply.served_by] = (servedBy[reply.served_by] ?? 0) + 1;
        if (!PAYLOAD.equals(reply.payload)) badPayloads++;
      } catch (err) {
        if (phase === "measure") {
          errors++;
          firstError ??= (err as Error).message;
        }
        await new Promise((r) => setTimeout(r, 10)); // a failing target must not spin the loop
      }
    }
  };
  const lanes = Promise.all(
    Array.from({ length: o.concurrency }, (_, i) => lane(clients[i % clients.length]!)),
  );
  await new Promise((r) => setTimeout(r, o.warmupMs));
  o.onWindowStart();
  const start = performance.now();
  phase = "measure";
  await new Promise((r) => setTimeout(r, o.durationMs));
  phase = "stop";
  const elapsedS = (performance.now() - start) / 1000;
  o.onWindowEnd();
  await lanes; // bounded by the calls' deadline
  return {
    elapsedS,
    calls,
    errors,
    firstError,
    latenciesMs: latencies.slice(0, calls).sort(),
    servedBy,
    badPayloads,
  };
}
