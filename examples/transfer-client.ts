// roster/transfer on the client, run it: `node --import tsx examples/transfer-client.ts`. Serves
// examples/transfer-service.ts in this process (or uses ROSTER_TARGET, e.g. a `roster serve` front), then:
//   1. uploads 64 MiB of JSON lines, generated as they are sent, with progress — zstd shrinks them;
//   2. downloads them back into a file and checks the digest;
//   3. calls functions by name: `add`, `train` (heartbeats while it runs), and an unknown one.
// Outside this repository, import from "roster/transfer".
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { loadDefinedService } from "../src/server/define.ts";
import { callFunction, callFunctionStream, download, upload, zstd } from "../src/transfer/index.ts";
import services from "./transfer-service.ts";

const MiB = 1024 * 1024;

/** `size` bytes of JSON lines, made a piece at a time: the payload is never in memory whole. */
function jsonLines(size: number) {
  return {
    size,
    open: async function* (offset: number) {
      let at = 0;
      // Bounded by size: each turn yields one piece of about 64 KiB.
      for (let i = 0; at < size; i++) {
        const lines: string[] = [];
        for (let j = 0; j < 800; j++) {
          const n = i * 800 + j;
          lines.push(`{"id":${n},"user":"user-${n % 977}","event":"${["view", "click", "buy"][n % 3]}"}\n`);
        }
        let piece = Buffer.from(lines.join(""));
        if (at + piece.length > size) piece = piece.subarray(0, size - at);
        const start = at;
        at += piece.length;
        if (at <= offset) continue;
        yield start < offset ? piece.subarray(offset - start) : piece;
      }
    },
  };
}

async function main(): Promise<void> {
  let server: grpc.Server | undefined;
  let target = process.env.ROSTER_TARGET;
  if (target === undefined) {
    server = new grpc.Server();
    for (const s of services) {
      const loaded = loadDefinedService(s);
      server.addService(loaded.definition, loaded.implementation);
    }
    const port = await new Promise<number>((resolve, reject) =>
      server!.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    target = `127.0.0.1:${port}`;
  }
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    console.log(`zstd: ${zstd().implementation}`);
    let shown = 0;
    const up = await upload(client, jsonLines(64 * MiB), {
      name: "events.jsonl",
      onProgress: (p) => {
        if (p.bytes - shown >= 16 * MiB || p.bytes === p.total) {
          shown = p.bytes;
          console.log(`  uploaded ${(p.bytes / MiB).toFixed(0)} / ${(p.total / MiB).toFixed(0)} MiB`);
        }
      },
    });
    console.log(
      `upload: ${up.size} bytes, ${up.wireBytes} on the wire (${((100 * up.wireBytes) / up.size).toFixed(1)} %), sha256 ${up.digest.slice(0, 16)}…`,
    );
    const copy = join(tmpdir(), `roster-transfer-example-${process.pid}.jsonl`);
    const down = await download(client, { name: "events.jsonl" }, { path: copy });
    rmSync(copy, { force: true });
    console.log(`download: ${down.size} bytes, digest ${down.digest === up.digest ? "matches" : "DIFFERS"}`);

    console.log(`add(2, 40) = ${await callFunction(client, "add", { a: 2, b: 40 })}`);
    let beats = 0;
    const trained = await callFunctionStream(client, "train", { seconds: 3 }, { onHeartbeat: () => beats++ });
    console.log(`train: ${JSON.stringify(trained)} after ${beats} heartbeats`);
    try {
      await callFunction(client, "predict", {});
    } catch (err) {
      const e = err as grpc.ServiceError;
      console.log(`predict: ${grpc.status[e.code]}: ${e.details}`);
    }
  } finally {
    client.close();
    server?.forceShutdown();
  }
}

void main().catch((err: Error) => {
  console.error(err);
  process.exit(1);
});
