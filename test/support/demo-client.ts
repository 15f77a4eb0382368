import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** A grpc-js client of roster.demo.Echo (proto/roster/demo/echo.proto) with promise helpers. */
export interface EchoReply {
  payload: Buffer;
  served_by: string;
}

export interface DemoClient {
  echo(
    method: "Echo" | "EchoOnce",
    workUs?: number,
    deadlineMs?: number,
    sleepUs?: number,
  ): Promise<EchoReply>;
  close(): void;
}

const protoPath = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));

export function createDemoClient(target: string): DemoClient {
  const def = protoLoader.loadSync(protoPath, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    roster: { demo: { Echo: grpc.ServiceClientConstructor } };
  };
  const client = new pkg.roster.demo.Echo(
    target,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client &
    Record<
      string,
      (
        req: unknown,
        opts: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res?: EchoReply) => void,
      ) => void
    >;
  const payload = Buffer.alloc(64, 7);
  return {
    echo(method, workUs = 0, deadlineMs = 10_000, sleepUs = 0) {
      return new Promise((resolve, reject) => {
        client[method]!(
          { payload, work_us: workUs, sleep_us: sleepUs },
          { deadline: Date.now() + deadlineMs },
          (err, res) => (err || !res ? reject(err) : resolve(res)),
        );
      });
    },
    close: () => client.close(),
  };
}

/** Runs `total` calls with `concurrency` in flight; returns per-call results (never throws). */
export async function runCalls(
  total: number,
  concurrency: number,
  call: (i: number) => Promise<EchoReply>,
): Promise<Array<{ ok: true; reply: EchoReply } | { ok: false; error: grpc.ServiceError }>> {
  const results: Array<{ ok: true; reply: EchoReply } | { ok: false; error: grpc.ServiceError }> = [];
  let next = 0;
  const lane = async () => {
    while (next < total) {
      const i = next++;
      try {
        results.push({ ok: true, reply: await call(i) });
      } catch (error) {
        results.push({ ok: false, error: error as grpc.ServiceError });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return results;
}
