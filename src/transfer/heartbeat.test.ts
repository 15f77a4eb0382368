import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { resultOf, withHeartbeats } from "./heartbeat.ts";

/** The parts of a grpc-js server-streaming call withHeartbeats uses, recording what it is sent. */
class FakeCall extends EventEmitter {
  cancelled = false;
  readonly written: unknown[] = [];
  ended = false;
  onWrite: (m: unknown) => void = () => {};
  write(m: unknown): boolean {
    this.written.push(m);
    this.onWrite(m);
    return true;
  }
  end(): void {
    this.ended = true;
  }
}

describe("withHeartbeats", () => {
  it("beats while the work runs, then sends the result and ends", async () => {
    const call = new FakeCall();
    let finish!: (v: string) => void;
    const beats = new Promise<void>((resolve) => {
      call.onWrite = () => {
        if (call.written.length === 2) resolve();
      };
    });
    withHeartbeats(() => new Promise<string>((r) => (finish = r)), { intervalMs: 1 })(call);
    await beats;
    finish("done");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(call.written.slice(0, 2), [
      {
        heartbeat: {
          seq: 1,
          elapsed_ms: (call.written[0] as { heartbeat: { elapsed_ms: number } }).heartbeat.elapsed_ms,
        },
      },
      {
        heartbeat: {
          seq: 2,
          elapsed_ms: (call.written[1] as { heartbeat: { elapsed_ms: number } }).heartbeat.elapsed_ms,
        },
      },
    ]);
    assert.deepEqual(call.written.at(-1), { result: "done" });
    assert.equal(call.ended, true);
  });

  it("aborts the work's signal when the call is cancelled, and sends nothing more", async () => {
    const call = new FakeCall();
    let seen: AbortSignal | undefined;
    withHeartbeats((_c, signal) => {
      seen = signal;
      return new Promise((_r, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    })(call);
    await new Promise((r) => setImmediate(r));
    call.cancelled = true;
    call.emit("cancelled");
    await new Promise((r) => setImmediate(r));
    assert.equal(seen?.aborted, true);
    assert.equal(call.written.length, 0);
    assert.equal(call.ended, false);
  });

  it("ends the call with the work's gRPC status when it fails", async () => {
    const call = new FakeCall();
    const errors: unknown[] = [];
    call.on("error", (e) => errors.push(e));
    withHeartbeats(() => {
      throw { code: grpc.status.NOT_FOUND, details: "no such model" };
    })(call);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(errors, [{ code: grpc.status.NOT_FOUND, details: "no such model" }]);
  });
});

describe("resultOf", () => {
  const stream = () => Object.assign(new EventEmitter(), { cancel() {} });

  it("skips heartbeats and resolves with the result once the call ends OK", async () => {
    const s = stream();
    let beats = 0;
    const p = resultOf(s, { onHeartbeat: () => beats++ });
    s.emit("data", { heartbeat: { seq: 1 } });
    s.emit("data", { heartbeat: { seq: 2 } });
    s.emit("data", { result: 42 });
    s.emit("status", { code: grpc.status.OK, details: "", metadata: new grpc.Metadata() });
    assert.equal(await p, 42);
    assert.equal(beats, 2);
  });

  it("rejects a call that ends OK without a result, and a call that fails", async () => {
    const s = stream();
    const p = resultOf(s);
    s.emit("data", { heartbeat: { seq: 1 } });
    s.emit("status", { code: grpc.status.OK, details: "", metadata: new grpc.Metadata() });
    await assert.rejects(p, /ended OK without a result/);
    const f = stream();
    const q = resultOf(f);
    f.emit("error", Object.assign(new Error("boom"), { code: grpc.status.UNAVAILABLE }));
    await assert.rejects(q, { code: grpc.status.UNAVAILABLE });
  });

  it("cancels a call that stays silent for staleAfterMs", async () => {
    const s = stream();
    let cancelled = false;
    s.cancel = () => {
      cancelled = true;
      s.emit("error", Object.assign(new Error("Cancelled"), { code: grpc.status.CANCELLED }));
    };
    await assert.rejects(resultOf(s, { staleAfterMs: 5 }), /no heartbeat for 5 ms/);
    assert.equal(cancelled, true);
  });
});
