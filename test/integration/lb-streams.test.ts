// Streams through `roster lb` over real sockets: flow control end to end on 200 MB transfers (the balancer
// runs in its own process so its memory can be watched), cancellation, and deadlines.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { parseGrpcTimeout } from "../../src/core/grpc-timeout.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import {
  type ChildScript,
  type EchoBackend,
  EchoClient,
  echoPath,
  encodeEchoRequest,
  grpcFrame,
  spawnEchoBackend,
  startEchoBackend,
  streamPayload,
  waitFor,
} from "../support/echo-backend.ts";
import { spawnLbProcess } from "../support/lb-process.ts";

const MESSAGE = 64 * 1024;
const MESSAGES = 3200; // 200 MiB
const TOTAL = MESSAGE * MESSAGES;
const MB = 1024 * 1024;

const children: ChildScript[] = [];
const closers: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const close of closers.reverse()) await close();
  for (const c of children) await c.kill();
});

function errorOf(p: Promise<unknown>): Promise<grpc.ServiceError> {
  return p.then(
    () => assert.fail("the call succeeded"),
    (e: grpc.ServiceError) => e,
  );
}

describe("200 MB through a balancer in its own process", () => {
  let backendAddress = "";

  before(async () => {
    const backend = await spawnEchoBackend("big");
    children.push(backend);
    backendAddress = `127.0.0.1:${backend.port}`;
  });

  /**
   * Starts a fresh balancer process (so one transfer's garbage does not hide the next one's growth), makes
   * a warm-up call, runs `transfer` against it and returns its RSS just before and its peak during.
   */
  async function rssGrowth(
    transfer: (client: EchoClient) => Promise<void>,
  ): Promise<{ baseline: number; peak: number }> {
    const rss: { at: number; bytes: number }[] = [];
    const lb = await spawnLbProcess("round_robin", [backendAddress], (bytes) =>
      rss.push({ at: performance.now(), bytes }),
    );
    children.push(lb);
    const client = new EchoClient(`127.0.0.1:${lb.port}`);
    try {
      await client.echo({ message: "warm-up" }, { deadlineMs: 5000 });
      const seen = rss.length;
      await waitFor(() => rss.length >= seen + 2, 3000, "two RSS reports from the balancer");
      const baseline = rss[rss.length - 1]!.bytes;
      const from = performance.now();
      await transfer(client);
      const reportsBefore = rss.length;
      await waitFor(() => rss.length > reportsBefore, 3000, "an RSS report after the transfer");
      const during = rss.filter((r) => r.at >= from).map((r) => r.bytes);
      assert.ok(during.length >= 3, `only ${during.length} RSS reports during the transfer`);
      return { baseline, peak: Math.max(...during) };
    } finally {
      client.close();
      await lb.kill();
    }
  }

  test("a client stream of 200 MB reaches a slowly reading backend intact while the balancer's RSS stays flat", async (t) => {
    let wroteAllAt = 0;
    let summaryAt = 0;
    const started = performance.now();
    const { baseline, peak } = await rssGrowth(async (client) => {
      const md = new grpc.Metadata();
      // The backend stops reading for 20 ms after every MiB: at most ~50 MiB/s, slower than the client.
      md.set("x-read-pause-ms", "20");
      md.set("x-read-pause-every", "16");
      const sent = createHash("sha256");
      let done!: (v: { err: grpc.ServiceError | null; summary: unknown }) => void;
      const result = new Promise<{ err: grpc.ServiceError | null; summary: unknown }>((r) => {
        done = r;
      });
      const call = client.clientStream({ deadlineMs: 30_000, metadata: md }, (err, summary) => {
        summaryAt = performance.now();
        done({ err, summary });
      });
      for (let i = 0; i < MESSAGES; i++) {
        const payload = streamPayload(i, MESSAGE);
        sent.update(payload);
        if (!call.write({ message: "", payload, delay_ms: 0 })) await once(call, "drain");
      }
      call.end();
      wroteAllAt = performance.now();
      const { err, summary } = await result;
      assert.equal(err, null, err?.details);
      assert.deepEqual(summary, {
        messages: MESSAGES,
        bytes: TOTAL,
        sha256: sent.digest("hex"),
        served_by: "big",
      });
    });
    const growth = (peak - baseline) / MB;
    t.diagnostic(
      `${(TOTAL / MB).toFixed(0)} MiB in ${((summaryAt - started) / 1000).toFixed(1)} s; client finished writing ` +
        `${(summaryAt - wroteAllAt).toFixed(0)} ms before the backend finished reading; balancer RSS ` +
        `${(baseline / MB).toFixed(0)} → peak ${(peak / MB).toFixed(0)} MiB (+${growth.toFixed(1)})`,
    );
    assert.ok(growth < 100, `the balancer's RSS grew by ${growth.toFixed(1)} MiB`);
  });

  test("a server stream of 200 MB reaches a slowly reading client intact while the balancer's RSS stays flat", async (t) => {
    const started = performance.now();
    const { baseline, peak } = await rssGrowth(async (client) => {
      const call = client.serverStream({ count: MESSAGES, size: MESSAGE }, { deadlineMs: 30_000 });
      const received = createHash("sha256");
      let messages = 0;
      let bytes = 0;
      call.on("data", (reply: { payload: Buffer; served_by: string }) => {
        messages++;
        bytes += reply.payload.length;
        received.update(reply.payload);
        // Stop reading for 20 ms after every MiB: at most ~50 MiB/s, slower than the backend writes.
        if (messages % 16 === 0) {
          call.pause();
          setTimeout(() => call.resume(), 20);
        }
      });
      // grpc-js emits 'status' as soon as the trailers arrive, possibly before the buffered messages
      // were read: wait for 'end' too.
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        let s: grpc.StatusObject | undefined;
        let ended = false;
        call.on("error", () => {});
        call.on("status", (st: grpc.StatusObject) => {
          s = st;
          if (ended) resolve(st);
        });
        call.on("end", () => {
          ended = true;
          if (s !== undefined) resolve(s);
        });
      });
      assert.equal(status.code, Status.OK, status.details);
      assert.equal(messages, MESSAGES);
      assert.equal(bytes, TOTAL);
      assert.equal(status.metadata.get("x-bytes")[0], String(TOTAL));
      assert.equal(status.metadata.get("x-sha256")[0], received.digest("hex"), "the payload bytes changed");
    });
    const growth = (peak - baseline) / MB;
    t.diagnostic(
      `${(TOTAL / MB).toFixed(0)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s; balancer RSS ` +
        `${(baseline / MB).toFixed(0)} → peak ${(peak / MB).toFixed(0)} MiB (+${growth.toFixed(1)})`,
    );
    assert.ok(growth < 100, `the balancer's RSS grew by ${growth.toFixed(1)} MiB`);
  });
});

describe("cancellation and deadlines", () => {
  let backend: EchoBackend;
  let lb: Lb;
  let client: EchoClient;

  before(async () => {
    backend = await startEchoBackend({ id: "c0" });
    lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
      policy: createDefaultRegistry().resolve("round_robin", {}),
    });
    client = new EchoClient(lb.server.address);
    closers.push(
      () => backend.close(),
      () => lb.close(1000),
      () => client.close(),
    );
  });

  // The cancellation tests give calls a 60 s deadline and wait at most 10 s: only the cancellation the
  // balancer forwards can end the backend's call in that time (not its deadline, not its end).
  test("a client cancelling a server stream mid-stream: the backend sees the cancellation", async () => {
    const before = backend.stats().cancelled;
    const call = client.serverStream({ count: 100_000, size: 1024, interval_ms: 5 }, { deadlineMs: 60_000 });
    let messages = 0;
    call.on("data", () => messages++);
    call.on("error", () => {});
    await waitFor(() => messages >= 10, 5000, "10 messages");
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.cancel();
    await waitFor(() => backend.stats().cancelled > before, 10_000, "the backend to see the cancellation");
    assert.equal((await status).code, Status.CANCELLED);
    await waitFor(() => backend.stats().active === 0, 10_000, "no call open on the backend");
    await waitFor(
      () => lb.channel.status().every((s) => s.inFlight === 0),
      10_000,
      "the balancer to count no call in flight",
    );
  });

  test("a client cancelling a bidi stream: the backend sees the cancellation", async () => {
    const before = backend.stats().cancelled;
    const call = client.bidi({ deadlineMs: 60_000 });
    call.on("error", () => {});
    call.write({ message: "one", payload: Buffer.alloc(0), delay_ms: 0 });
    await once(call, "data");
    call.cancel();
    await waitFor(() => backend.stats().cancelled > before, 10_000, "the backend to see the cancellation");
  });

  test("a 200 ms deadline on a call the backend holds 30 s: DEADLINE_EXCEEDED long before the answer, the backend sees the cancellation and got a shorter deadline", async () => {
    const before = backend.stats().cancelled;
    const t0 = performance.now();
    const err = await errorOf(client.echo({ delay_ms: 30_000 }, { deadlineMs: 200 }));
    const ms = performance.now() - t0;
    assert.equal(err.code, Status.DEADLINE_EXCEEDED, err.details);
    assert.ok(ms < 15_000, `the call took ${ms} ms: it waited for the backend's answer`);
    await waitFor(() => backend.stats().cancelled > before, 10_000, "the backend to see the cancellation");
    const budget = backend.stats().last_deadline_budget_ms;
    assert.ok(budget > 0 && budget < 200, `the backend's deadline was ${budget} ms away`);
  });

  test("the balancer enforces grpc-timeout itself and forwards it minus the time spent", async () => {
    // A raw HTTP/2 backend that records what arrives and never answers.
    const seen: { timeout: string | undefined; rstCode?: number; closedAt?: number }[] = [];
    const silent = http2.createServer();
    silent.on("stream", (s, headers) => {
      const entry: (typeof seen)[number] = { timeout: headers["grpc-timeout"] as string | undefined };
      seen.push(entry);
      s.on("error", () => {});
      s.on("data", () => {});
      s.on("close", () => {
        entry.rstCode = s.rstCode;
        entry.closedAt = performance.now();
      });
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise<void>((resolve) => silent.close(() => resolve())));
    const rawLb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [
        staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: (silent.address() as { port: number }).port }),
      ],
      policy: createDefaultRegistry().resolve("round_robin", {}),
    });
    closers.push(() => rawLb.close(1000));
    await waitFor(() => rawLb.channel.status()[0]?.state === "ready", 5000, "the backend ready");

    // A raw client: no deadline timer of its own, so only the balancer can end the call.
    const session = http2.connect(`http://${rawLb.server.address}`);
    session.on("error", () => {});
    closers.push(() => session.destroy());
    const t0 = performance.now();
    const req = session.request({
      ":method": "POST",
      ":path": echoPath("Echo"),
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": "200m",
    });
    req.on("error", () => {});
    req.end(grpcFrame(encodeEchoRequest({ message: "x" })));
    let headers: http2.IncomingHttpHeaders = {};
    let endStream = false;
    req.on("response", (h, flags) => {
      headers = h;
      endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    req.resume();
    // Only the balancer ends the call: if it did not, this guard would, without a grpc-status.
    const guard = setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 10_000);
    await once(req, "close");
    clearTimeout(guard);
    const ms = performance.now() - t0;
    assert.equal(headers["grpc-status"], String(Status.DEADLINE_EXCEEDED), JSON.stringify(headers));
    assert.ok(endStream, "the deadline status was not trailers-only");
    assert.ok(ms >= 190, `the balancer ended the call after ${ms} ms, before its deadline`);

    await waitFor(() => seen[0]?.closedAt !== undefined, 10_000, "the backend stream to be reset");
    const forwarded = parseGrpcTimeout(seen[0]!.timeout ?? "");
    assert.ok(
      forwarded !== undefined && forwarded < 200 && forwarded > 100,
      `the backend got grpc-timeout ${seen[0]!.timeout}`,
    );
    assert.equal(seen[0]!.rstCode, http2.constants.NGHTTP2_CANCEL);
  });
});
