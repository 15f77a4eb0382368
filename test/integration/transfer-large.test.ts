// roster/transfer past 4 GiB: a payload of 4 GiB + 5 MiB + 12345 bytes, generated on the fly (never
// stored), uploaded through `roster lb` and through `roster serve`. Every process's RSS grows by at
// most 64 MiB, and the server's digest — computed over the bytes its target was given — is the
// client's. Each upload moves about 1 GiB on the wire (the payload is ~1/4 random; zstd level 3).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { callFunction, upload } from "../../src/transfer/index.ts";
import { type ChildScript, spawnScript } from "../support/echo-backend.ts";
import {
  childrenOf,
  type ProxyProcess,
  RssWatch,
  startRosterLb,
  startRosterServe,
} from "../support/proxy-process.ts";
import { generatedPayload, type LastUpload } from "../support/transfer-server.ts";

const MiB = 1024 * 1024;
const SIZE = 4 * 1024 * MiB + 5 * MiB + 12345;
const RSS_LIMIT = 64 * MiB;
const SERVER = fileURLToPath(new URL("../support/transfer-server.ts", import.meta.url));

async function uploadAndCheck(
  t: { diagnostic(message: string): void },
  address: string,
  watch: RssWatch,
  pids: Record<string, number>,
) {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    // One small call first, so connections and code are warm when the baseline is taken.
    await callFunction(client, "last-upload", null);
    watch.start({ client: process.pid, ...pids });
    let progressCalls = 0;
    let lastBytes = 0;
    const started = Date.now();
    const result = await upload(client, generatedPayload(SIZE, MiB / 4), {
      name: "big",
      onProgress: (p) => {
        assert.ok(p.bytes >= lastBytes && p.total === SIZE);
        lastBytes = p.bytes;
        progressCalls++;
      },
    });
    const growth = watch.stop();
    const seconds = (Date.now() - started) / 1000;
    t.diagnostic(
      `${(SIZE / MiB).toFixed(0)} MiB in ${seconds.toFixed(1)} s, ${(result.wireBytes / MiB).toFixed(0)} MiB on the wire; ` +
        `RSS growth MiB: ${Object.entries(growth)
          .map(([k, v]) => `${k} ${(v / MiB).toFixed(1)}`)
          .join(", ")}`,
    );
    assert.equal(result.size, SIZE);
    assert.equal(lastBytes, SIZE);
    assert.ok(progressCalls >= SIZE / MiB - 1, `progress called ${progressCalls} times`);
    const seen = await callFunction<LastUpload>(client, "last-upload", null);
    assert.deepEqual(seen, { name: "big", size: SIZE, digest: result.digest, written: SIZE });
    assert.ok(result.wireBytes < SIZE / 2, `zstd should halve this payload: ${result.wireBytes} bytes sent`);
    for (const [name, bytes] of Object.entries(growth)) {
      assert.ok(bytes <= RSS_LIMIT, `${name} RSS grew ${(bytes / MiB).toFixed(1)} MiB (limit 64)`);
    }
    return { result, growth };
  } finally {
    client.close();
  }
}

describe("transfers past 4 GiB", { timeout: 600_000 }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "roster-transfer-large-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe("through roster lb", () => {
    let server: ChildScript;
    let lb: ProxyProcess;
    before(async () => {
      server = await spawnScript(SERVER, []);
      lb = await startRosterLb(dir, `backends: [127.0.0.1:${server.port}]\n`);
    });
    after(async () => {
      await lb?.stop();
      await server?.kill();
    });

    it("uploads 4 GiB + 5 MiB with bounded memory in client, balancer and server, checksum verified", async (t) => {
      await uploadAndCheck(t, lb.address, new RssWatch(), { lb: lb.pid, server: server.pid });
    });
  });

  describe("through roster serve", () => {
    let serve: ProxyProcess;
    before(async () => {
      serve = await startRosterServe(SERVER, 1);
    });
    after(async () => {
      await serve?.stop();
    });

    it("uploads 4 GiB + 5 MiB with bounded memory in client, supervisor and worker, checksum verified", async (t) => {
      const workers = childrenOf(serve.pid);
      assert.ok(workers.length >= 1, "roster serve has a worker");
      const pids: Record<string, number> = { supervisor: serve.pid };
      for (const [i, pid] of workers.entries()) pids[`child-${i}`] = pid;
      await uploadAndCheck(t, serve.address, new RssWatch(), pids);
    });
  });
});
