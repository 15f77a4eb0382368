// Dispatch by name (roster/transfer): functions chosen by the x-func-name metadata, bytes and JSON
// payloads, UNIMPLEMENTED listing the known names, with a plain grpc-js client and with createClient.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createClient } from "../../src/client/index.ts";
import {
  callFunction,
  callFunctionStream,
  defineDispatchService,
  dispatchDefinition,
} from "../../src/transfer/index.ts";
import { waitFor } from "../support/echo-backend.ts";
import { type RunningServer, startServices } from "../support/grpc-server.ts";

describe("dispatch by name", () => {
  let server: RunningServer;
  let client: grpc.Client;
  let started = 0;
  let aborted = 0;

  before(async () => {
    server = await startServices([
      defineDispatchService({
        heartbeatMs: 50,
        functions: {
          add: ({ a, b }: { a: number; b: number }) => a + b,
          reverse: (bytes: Buffer) => Buffer.from(bytes).reverse(),
          slow: async ({ ms }: { ms: number }, { signal }) => {
            started++;
            await new Promise((resolve, reject) => {
              const t = setTimeout(resolve, ms);
              signal.addEventListener("abort", () => {
                clearTimeout(t);
                aborted++;
                reject(signal.reason);
              });
            });
            return { slept: ms };
          },
          fails: () => {
            throw { code: grpc.status.FAILED_PRECONDITION, details: "not today" };
          },
        },
      }),
    ]);
    client = new grpc.Client(server.address, grpc.credentials.createInsecure());
  });
  after(async () => {
    client.close();
    await server.close();
  });

  it("runs each of three named functions with its own payload kind", async () => {
    assert.equal(await callFunction(client, "add", { a: 2, b: 40 }), 42);
    const reversed = await callFunction<Buffer>(client, "reverse", Buffer.from([1, 2, 3]));
    assert.deepEqual([...reversed], [3, 2, 1]);
    assert.deepEqual(await callFunction(client, "slow", { ms: 20 }), { slept: 20 });
  });

  it("answers an unknown name with UNIMPLEMENTED listing the known ones", async () => {
    await assert.rejects(callFunction(client, "nope", {}), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.UNIMPLEMENTED);
      assert.match(err.details, /unknown function "nope"; known: add, fails, reverse, slow/);
      return true;
    });
    await assert.rejects(callFunctionStream(client, "nope", {}), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.UNIMPLEMENTED);
      assert.match(err.details, /known: add, fails, reverse, slow/);
      return true;
    });
  });

  it("answers a call without the name with UNIMPLEMENTED naming the metadata key", async () => {
    const m = dispatchDefinition().Call!;
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, { json: "1" }, (e) =>
        resolve(e!),
      ),
    );
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.match(err.details, /set metadata x-func-name; known: add/);
  });

  it("passes a function's gRPC status through and rejects bad JSON as INVALID_ARGUMENT", async () => {
    await assert.rejects(callFunction(client, "fails", null), { code: grpc.status.FAILED_PRECONDITION });
    const m = dispatchDefinition().Call!;
    const md = new grpc.Metadata();
    md.set("x-func-name", "add");
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, { json: "{" }, md, (e) =>
        resolve(e!),
      ),
    );
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  });

  it("sends heartbeats on CallStream while a function runs and resolves with its result", async () => {
    let beats = 0;
    const out = await callFunctionStream(client, "slow", { ms: 400 }, { onHeartbeat: () => beats++ });
    assert.deepEqual(out, { slept: 400 });
    assert.ok(beats >= 2, `expected heartbeats every 50 ms over 400 ms, got ${beats}`);
  });

  it("cancels the function when the caller aborts", async () => {
    const abort = new AbortController();
    const p = callFunctionStream(client, "slow", { ms: 60_000 }, { signal: abort.signal });
    const before = started;
    await waitFor(() => started > before, 5000, "the function to start");
    abort.abort();
    await assert.rejects(p, { code: grpc.status.CANCELLED });
    await waitFor(() => aborted === 1, 5000, "the function to see the cancellation");
  });

  it("works the same through createClient", async () => {
    const thick = createClient({ definition: dispatchDefinition(), target: `ipv4:${server.address}` });
    try {
      assert.equal(await callFunction(thick as never, "add", { a: 1, b: 1 }), 2);
      let beats = 0;
      assert.deepEqual(
        await callFunctionStream(thick as never, "slow", { ms: 200 }, { onHeartbeat: () => beats++ }),
        { slept: 200 },
      );
      assert.ok(beats >= 1);
      await assert.rejects(callFunction(thick as never, "nope", 1), { code: grpc.status.UNIMPLEMENTED });
    } finally {
      thick.close();
    }
  });
});
