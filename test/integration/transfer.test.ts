// roster/transfer end to end on one grpc-js server: compression ratio, files both ways, stream sources,
// createClient, cancellation, and the server's answers to bad uploads (a zstd bomb, a wrong digest,
// a chunk out of place).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createClient } from "../../src/client/index.ts";
import { zstd } from "../../src/transfer/codec.ts";
import {
  defineTransferService,
  download,
  type TransferError,
  transferDefinition,
  upload,
} from "../../src/transfer/index.ts";
import { MessageQueue, type UploadReplyMsg } from "../../src/transfer/messages.ts";
import { waitFor } from "../support/echo-backend.ts";
import { type RunningServer, startServices } from "../support/grpc-server.ts";

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** JSON lines, as logs and data exports are: compressible, not trivially. */
function jsonLines(bytes: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  // Bounded by `bytes`.
  for (let i = 0; size < bytes; i++) {
    const line = `{"id":${i},"user":"user-${i % 977}","event":"${["view", "click", "buy"][i % 3]}","ms":${(i * 7919) % 100_000}}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, bytes);
}

describe("roster/transfer", () => {
  let dir: string;
  let server: RunningServer;
  let client: grpc.Client;
  const aborted: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "roster-transfer-"));
    server = await startServices([
      defineTransferService({
        upload: ({ name }) => {
          if (name === "slow") {
            return {
              write: () => new Promise((r) => setTimeout(r, 20)),
              abort: () => {
                aborted.push(name);
              },
            };
          }
          return createWriteStream(join(dir, `up-${basename(name)}`));
        },
        download: ({ name }) => ({ path: join(dir, basename(name)) }),
        chunkSize: 256 * 1024,
        resumeTtlMs: 1000,
      }),
    ]);
    client = new grpc.Client(server.address, grpc.credentials.createInsecure());
  });
  after(async () => {
    client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("compresses a compressible payload on the wire and stores it byte for byte", async () => {
    const payload = jsonLines(32 * MiB);
    const zipped = await upload(client, payload, { name: "lines" });
    const plain = await upload(client, payload, { name: "lines-plain", codec: "identity" });
    assert.equal(zipped.size, payload.length);
    assert.equal(zipped.digest, sha256(payload));
    assert.equal(plain.wireBytes, payload.length);
    const ratio = zipped.wireBytes / payload.length;
    assert.ok(
      ratio < 0.2,
      `zstd level 3 should shrink JSON lines at least 5×, got ratio ${ratio.toFixed(3)}`,
    );
    assert.ok(readFileSync(join(dir, "up-lines")).equals(payload));
    assert.ok(readFileSync(join(dir, "up-lines-plain")).equals(payload));
  });

  it("uploads a file and a stream, downloads into a file, with progress", async () => {
    const data = randomBytes(3 * MiB + 5);
    writeFileSync(join(dir, "random.bin"), data);
    const fromFile = await upload(
      client,
      { path: join(dir, "random.bin") },
      { name: "from-file", chunkSize: 64 * 1024 },
    );
    assert.equal(fromFile.digest, sha256(data));
    const fromStream = await upload(client, Readable.from([data.subarray(0, 1000), data.subarray(1000)]), {
      name: "from-stream",
    });
    assert.equal(fromStream.size, data.length);
    assert.ok(readFileSync(join(dir, "up-from-stream")).equals(data));

    const seen: number[] = [];
    const got = await download(
      client,
      { name: "random.bin" },
      { path: join(dir, "copy.bin") },
      {
        onProgress: (p) => {
          assert.equal(p.total, data.length);
          seen.push(p.bytes);
        },
      },
    );
    assert.equal(got.digest, sha256(data));
    assert.ok(readFileSync(join(dir, "copy.bin")).equals(data));
    // The server's chunk size (256 KiB): 13 chunks, progress after each.
    assert.equal(seen.length, Math.ceil(data.length / (256 * 1024)));
    assert.equal(seen.at(-1), data.length);
  });

  it("works through createClient as through a plain grpc-js client", async () => {
    const thick = createClient({ definition: transferDefinition(), target: `ipv4:${server.address}` });
    try {
      const payload = jsonLines(2 * MiB);
      const up = await upload(thick as never, payload, { name: "thick" });
      assert.equal(up.digest, sha256(payload));
      writeFileSync(join(dir, "thick.bin"), payload);
      const chunks: Buffer[] = [];
      const down = await download(
        thick as never,
        { name: "thick.bin" },
        { write: (c: Buffer) => chunks.push(Buffer.from(c)) },
      );
      assert.equal(down.digest, sha256(payload));
      assert.ok(Buffer.concat(chunks).equals(payload));
    } finally {
      thick.close();
    }
  });

  it("cancels an upload when its signal aborts, and the server drops it after resumeTtlMs", async () => {
    const abort = new AbortController();
    const p = upload(client, randomBytes(4 * MiB), {
      name: "slow",
      chunkSize: 64 * 1024,
      signal: abort.signal,
      onProgress: (pr) => {
        if (pr.bytes >= 256 * 1024) abort.abort();
      },
    });
    await assert.rejects(p, { code: grpc.status.CANCELLED });
    await waitFor(() => aborted.includes("slow"), 5000, "the unfinished upload to expire");
  });

  it("refuses a first message that is not open, a zstd bomb, a chunk out of place and a wrong digest", async () => {
    const m = transferDefinition().Upload!;
    const run = async (messages: unknown[]) => {
      const call = client.makeBidiStreamRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
      ) as grpc.ClientDuplexStream<unknown, UploadReplyMsg>;
      const replies = new MessageQueue<UploadReplyMsg>(call);
      for (const msg of messages) call.write(msg);
      const got: UploadReplyMsg[] = [];
      try {
        // Bounded by the server's replies.
        for (let r = await replies.next(); r !== undefined; r = await replies.next()) got.push(r);
        return { got, error: undefined };
      } catch (error) {
        return { got, error: error as grpc.ServiceError };
      }
    };
    const open = (id: string) => ({
      open: { transfer_id: id, name: id, size: -1, codec: "zstd", checksum: "sha256", resume: false },
    });

    const notOpen = await run([{ chunk: { offset: 0, raw_size: 1, data: Buffer.from([1]) } }]);
    assert.equal(notOpen.error?.code, grpc.status.INVALID_ARGUMENT);

    // 64 MiB of zeros in a frame of a few KiB, claiming 1 KiB: refused before it is expanded.
    const bomb = zstd().compress(Buffer.alloc(64 * MiB), 19);
    const bombed = await run([open("bomb"), { chunk: { offset: 0, raw_size: 1024, data: bomb } }]);
    assert.equal(bombed.error?.code, grpc.status.DATA_LOSS);
    assert.match(bombed.error!.details, /chunk at offset 0/);

    const chunk = zstd().compress(Buffer.from("hello"), 3);
    const misplaced = await run([open("gap"), { chunk: { offset: 10, raw_size: 5, data: chunk } }]);
    assert.equal(misplaced.error?.code, grpc.status.FAILED_PRECONDITION);
    assert.match(misplaced.error!.details, /chunk at offset 10, expected 0/);

    const wrong = await run([
      open("digest"),
      { chunk: { offset: 0, raw_size: 5, data: chunk } },
      { finish: { size: 5, digest: sha256(Buffer.from("hellO")) } },
    ]);
    assert.equal(wrong.error?.code, grpc.status.DATA_LOSS);
    assert.match(wrong.error!.details, /checksum mismatch/);
    assert.deepEqual(
      wrong.got.map((r) => r.kind),
      ["opened", "ack"],
    );
  });

  it("rejects a download of a payload that is not there with the server's error", async () => {
    await assert.rejects(
      download(client, { name: "missing.bin" }, { write: () => {} }, { retries: 0 }),
      (err: TransferError) => {
        assert.equal(err.code, grpc.status.UNKNOWN);
        assert.match(err.details, /ENOENT/);
        return true;
      },
    );
  });
});
