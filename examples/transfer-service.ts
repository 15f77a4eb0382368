// roster/transfer on the server: uploads stored in a folder, downloads read from it, and functions
// called by name. Serve it: `npx roster serve examples/transfer-service.ts --listen 127.0.0.1:50051`,
// then `ROSTER_TARGET=127.0.0.1:50051 node --import tsx examples/transfer-client.ts`.
// Outside this repository, import from "roster/transfer".
import { createWriteStream, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { defineDispatchService, defineTransferService } from "../src/transfer/index.ts";

const dir = process.env.ROSTER_TRANSFER_DIR ?? join(tmpdir(), "roster-transfer-example");
mkdirSync(dir, { recursive: true });
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

export default [
  defineTransferService({
    // basename(): a client names a file, never a path.
    upload: ({ name }) => createWriteStream(join(dir, basename(name))),
    download: ({ name }) => ({ path: join(dir, basename(name)) }),
  }),
  defineDispatchService({
    functions: {
      add: ({ a, b }: { a: number; b: number }) => a + b,
      reverse: (bytes: Buffer) => Buffer.from(bytes).reverse(),
      // A long task: call it with callFunctionStream, which gets a heartbeat every second meanwhile.
      train: async ({ seconds }: { seconds: number }, { signal }) => {
        await sleep(Math.min(seconds, 60) * 1000, signal);
        return { accuracy: 0.97 };
      },
    },
  }),
];
