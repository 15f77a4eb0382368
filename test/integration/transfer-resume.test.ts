// roster/transfer resumption: a balancer killed (SIGKILL) in the middle of an upload and of a download.
// The client's channel lists two `roster lb`s (pick_first): when the first dies, the transfer opens a
// new call through the second and continues from the last acknowledged offset — the server's target
// is given every byte exactly once, at most one chunk is sent twice (window 1), and the digest matches.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { callFunction, download, upload } from "../../src/transfer/index.ts";
import { type ChildScript, spawnScript } from "../support/echo-backend.ts";
import { type ProxyProcess, startRosterLb } from "../support/proxy-process.ts";
import { generatedPayload, type LastUpload } from "../support/transfer-server.ts";

const MiB = 1024 * 1024;
const SIZE = 192 * MiB + 777;
const SERVER = fileURLToPath(new URL("../support/transfer-server.ts", import.meta.url));

describe("resumed transfers after the balancer is killed", { timeout: 180_000 }, () => {
  let dir: string;
  let server: ChildScript;
  let lbs: ProxyProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "roster-transfer-resume-"));
    server = await spawnScript(SERVER, []);
  });
  after(async () => {
    for (const lb of lbs) await lb.stop();
    await server?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Two balancers in front of the server, and a client that uses the first while it lives. */
  async function twoBalancers(): Promise<{ first: ProxyProcess; client: grpc.Client }> {
    for (const lb of lbs) await lb.stop();
    lbs = [];
    const yaml = `backends: [127.0.0.1:${server.port}]\n`;
    lbs.push(await startRosterLb(dir, yaml), await startRosterLb(dir, yaml));
    const target = `ipv4:${lbs.map((l) => l.address).join(",")}`;
    const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ pick_first: {} }] }),
      "grpc.initial_reconnect_backoff_ms": 100,
    });
    return { first: lbs[0]!, client };
  }

  it("an upload continues from the last acknowledged offset, re-sending at most one chunk", async (t) => {
    const { first, client } = await twoBalancers();
    try {
      let killed: Promise<void> | undefined;
      let bytesAtKill = 0;
      const result = await upload(client, generatedPayload(SIZE), {
        name: "resumed",
        window: 1,
        retries: 10,
        onProgress: (p) => {
          if (killed === undefined && p.bytes >= 64 * MiB) {
            bytesAtKill = p.bytes;
            killed = first.kill();
          }
        },
      });
      assert.ok(killed !== undefined, "the balancer was killed mid-way");
      await killed;
      assert.ok(bytesAtKill < SIZE);
      assert.equal(result.size, SIZE);
      // One break; a new call may also fail once more while the channel finds the second balancer.
      assert.ok(result.attempts >= 2, `attempts: ${result.attempts}`);
      assert.ok(result.resentChunks <= 1, `re-sent ${result.resentChunks} chunks`);
      t.diagnostic(`killed at ${bytesAtKill} bytes acknowledged; re-sent ${result.resentChunks} chunk(s)`);
      const seen = await callFunction<LastUpload>(client, "last-upload", null);
      // `written` counts what the target was given over both calls: each byte once.
      assert.deepEqual(seen, { name: "resumed", size: SIZE, digest: result.digest, written: SIZE });
    } finally {
      client.close();
    }
  });

  it("a download continues from the bytes already written, and the digest covers them all", async () => {
    const { first, client } = await twoBalancers();
    try {
      let killed: Promise<void> | undefined;
      let written = 0;
      const digest = createHash("sha256");
      const result = await download(
        client,
        { name: String(SIZE) },
        {
          write: (chunk: Buffer, offset: number) => {
            assert.equal(offset, written, "the sink is written in order, each byte once");
            digest.update(chunk);
            written += chunk.length;
          },
        },
        {
          retries: 10,
          onProgress: (p) => {
            if (killed === undefined && p.bytes >= 64 * MiB) killed = first.kill();
          },
        },
      );
      assert.ok(killed !== undefined, "the balancer was killed mid-way");
      await killed;
      assert.ok(result.attempts >= 2, `attempts: ${result.attempts}`);
      assert.equal(result.size, SIZE);
      assert.equal(written, SIZE);
      assert.equal(result.digest, digest.digest("hex"));
    } finally {
      client.close();
    }
  });
});
