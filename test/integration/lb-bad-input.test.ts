// Bad input at the front of `roster lb`, sent with raw node:net and node:http2 clients: HTTP/1.1,
// non-gRPC content types and methods, malformed grpc-timeout, oversized headers. Each must get a clear
// answer, must not disturb other calls or connections, and must not crash the balancer; at the end a
// normal call still works and no client connection is left open.
import assert from "node:assert/strict";
import { once } from "node:events";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { Status } from "../../src/core/status.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import type { FrontLimits } from "../../src/proxy/proxy-options.ts";
import {
  decodeEchoReply,
  type EchoBackend,
  EchoClient,
  echoPath,
  encodeEchoRequest,
  grpcFrame,
  startEchoBackend,
  waitFor,
} from "../support/echo-backend.ts";

const { NGHTTP2_FLAG_END_STREAM } = http2.constants;

interface RawResult {
  headers: http2.IncomingHttpHeaders;
  /** The response headers ended the stream (a trailers-only response). */
  headersOnly: boolean;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
  rstCode: number | undefined;
}

/** One request on `session`, bounded by `timeoutMs` (then reset, and the result says so). */
function rawRequest(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body: Buffer | undefined,
  timeoutMs = 3000,
): Promise<RawResult> {
  return new Promise((resolve) => {
    const result: RawResult = {
      headers: {},
      headersOnly: false,
      trailers: {},
      body: Buffer.alloc(0),
      rstCode: 0,
    };
    const req = session.request(headers);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), timeoutMs);
    req.on("error", () => {});
    req.on("response", (h, flags) => {
      result.headers = h;
      result.headersOnly = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    req.on("trailers", (t) => {
      result.trailers = t;
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("close", () => {
      clearTimeout(timer);
      result.body = Buffer.concat(chunks);
      result.rstCode = req.rstCode;
      resolve(result);
    });
    req.end(body);
  });
}

function grpcHeaders(extra: http2.OutgoingHttpHeaders = {}): http2.OutgoingHttpHeaders {
  return {
    ":method": "POST",
    ":path": echoPath("Echo"),
    "content-type": "application/grpc",
    te: "trailers",
    ...extra,
  };
}

const echoBody = () => grpcFrame(encodeEchoRequest({ message: "raw" }));

/** A header value of `n` bytes that HPACK cannot shrink much. */
function filler(n: number, seed: number): string {
  let s = "";
  let x = seed;
  // Bounded by n.
  while (s.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    s += (x >>> 8).toString(36);
  }
  return s.slice(0, n);
}

/** `total` bytes of metadata in values of at most 20 KiB each (under nghttp2's 64 KiB per-field limit). */
function bigMetadata(total: number): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (let i = 0; i * 20 * 1024 < total; i++)
    out[`x-big-${i}`] = filler(Math.min(20 * 1024, total - i * 20 * 1024), i);
  return out;
}

describe("bad input at the front", () => {
  let backend: EchoBackend;
  let lb: Lb;
  const sessions: http2.ClientHttp2Session[] = [];
  const clients: EchoClient[] = [];
  const frontEvents: string[] = [];

  before(async () => {
    backend = await startEchoBackend({ id: "bad0" });
    lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
      policy: createDefaultRegistry().resolve("round_robin", {}),
      onFrontEvent: (message) => frontEvents.push(message),
    });
    await waitFor(() => lb.channel.status()[0]?.state === "ready", 5000, "the backend ready");
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const s of sessions) s.destroy();
    await lb.close(1000);
    await backend.close();
  });

  /** A raw HTTP/2 connection, returned once both sides' SETTINGS are acknowledged. */
  async function connect(): Promise<http2.ClientHttp2Session> {
    const session = http2.connect(`http://${lb.server.address}`, {
      // Let the client send header blocks far larger than nghttp2's default 64 KiB.
      maxSendHeaderBlockLength: 1024 * 1024,
    });
    session.on("error", () => {});
    sessions.push(session);
    await once(session, "remoteSettings");
    // Our SETTINGS ACK went out before the PING, so once the PING is answered the balancer has it.
    await new Promise<void>((resolve, reject) => {
      session.ping((err) => (err ? reject(err) : resolve()));
    });
    return session;
  }

  async function grpcStillWorks(): Promise<void> {
    const c = new EchoClient(lb.server.address);
    clients.push(c);
    const reply = await c.echo({ message: "still here" }, { deadlineMs: 3000 });
    assert.equal(reply.message, "still here");
    assert.equal(reply.served_by, "bad0");
  }

  test("an HTTP/1.1 request gets an HTTP/1.1 505 saying what the port speaks, and gRPC works after it", async () => {
    const socket = net.connect(lb.server.port!, "127.0.0.1");
    socket.on("error", () => {});
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const closed = once(socket, "close");
    const guard = setTimeout(() => socket.destroy(), 3000);
    await closed;
    clearTimeout(guard);
    const answer = Buffer.concat(chunks).toString("latin1");
    assert.match(answer, /^HTTP\/1\.1 505 /);
    assert.match(answer, /gRPC over HTTP\/2/);
    const [head, body] = answer.split("\r\n\r\n");
    assert.match(head ?? "", new RegExp(`content-length: ${Buffer.byteLength(body ?? "")}`, "i"));
    assert.ok(frontEvents.includes("rejected a non-HTTP/2 connection"), frontEvents.join("; "));
    await grpcStillWorks();
  });

  test("an HTTP/2 request whose content-type is not application/grpc gets 415 with a message", async () => {
    const session = await connect();
    const before = backend.stats().calls;
    for (const contentType of [undefined, "application/json", "text/plain"]) {
      const headers = grpcHeaders();
      if (contentType === undefined) delete headers["content-type"];
      else headers["content-type"] = contentType;
      const r = await rawRequest(session, headers, echoBody());
      assert.equal(r.headers[":status"], 415, `content-type ${contentType}`);
      assert.match(r.body.toString(), /application\/grpc/);
      assert.ok(r.headers["grpc-status"] !== undefined && r.headers["grpc-status"] !== "0");
      assert.match(decodeURIComponent(String(r.headers["grpc-message"])), new RegExp(contentType ?? "none"));
    }
    assert.equal(backend.stats().calls, before, "a rejected request reached the backend");
    assert.ok(!session.destroyed);
  });

  test("a GET gets 405 with a message", async () => {
    const session = await connect();
    const r = await rawRequest(session, { ":method": "GET", ":path": echoPath("Echo") }, undefined);
    assert.equal(r.headers[":status"], 405);
    assert.match(r.body.toString(), /POST/);
    assert.ok(!session.destroyed);
  });

  test("a malformed grpc-timeout gets a trailers-only gRPC status whose message names grpc-timeout", async () => {
    const session = await connect();
    const before = backend.stats().calls;
    for (const timeout of ["abc", "123456789S", "5", "1.5S", "-1S", "10x"]) {
      const r = await rawRequest(session, grpcHeaders({ "grpc-timeout": timeout }), echoBody());
      assert.equal(r.headers[":status"], 200, timeout);
      assert.ok(r.headersOnly, `grpc-timeout "${timeout}": not a trailers-only response`);
      assert.equal(r.headers["grpc-status"], String(Status.INTERNAL), timeout);
      assert.match(decodeURIComponent(String(r.headers["grpc-message"])), /grpc-timeout/, timeout);
    }
    assert.equal(backend.stats().calls, before, "a call with a malformed deadline reached the backend");
    // A well-formed one on the same connection goes through.
    const ok = await rawRequest(session, grpcHeaders({ "grpc-timeout": "2S" }), echoBody());
    assert.equal(ok.trailers["grpc-status"], "0");
    assert.equal(decodeEchoReply(ok.body.subarray(5)).message, "raw");
  });

  test("100 KiB of metadata on an established connection: the call fails with RESOURCE_EXHAUSTED naming the limit and the same connection serves the next call", async () => {
    const session = await connect();
    const before = backend.stats().calls;
    const r = await rawRequest(session, grpcHeaders(bigMetadata(100 * 1024)), echoBody());
    assert.equal(
      r.headers["grpc-status"],
      String(Status.RESOURCE_EXHAUSTED),
      `got ${JSON.stringify(r.headers)} rst ${r.rstCode}`,
    );
    assert.match(String(r.headers["grpc-message"]), /limits\.maxHeaderListSize/);
    assert.equal(backend.stats().calls, before);
    assert.ok(!session.destroyed, "the client connection was closed");
    const ok = await rawRequest(session, grpcHeaders(), echoBody());
    assert.equal(ok.trailers["grpc-status"], "0");
  });

  test("after all of it a normal call succeeds and every client connection is closed", async () => {
    await grpcStillWorks();
    for (const c of clients) c.close();
    for (const s of sessions) s.close();
    await waitFor(
      () => lb.server.connections() === 0,
      3000,
      `no client connection (${lb.server.connections()} open)`,
    );
    assert.equal(
      lb.channel.status().reduce((n, s) => n + s.inFlight, 0),
      0,
      "the balancer still counts calls in flight",
    );
  });
});

/** A balancer over `n` fresh echo backends, all ready; `close` stops everything. */
async function freshBalancer(
  n: number,
  limits: Partial<FrontLimits> = {},
): Promise<{ lb: Lb; backends: EchoBackend[]; close(): Promise<void> }> {
  const backends: EchoBackend[] = [];
  for (let i = 0; i < n; i++) backends.push(await startEchoBackend({ id: `fresh${i}` }));
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    backends: backends.map((b) => staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: b.port })),
    policy: createDefaultRegistry().resolve("round_robin", {}),
    limits,
  });
  await waitFor(() => lb.channel.status().every((s) => s.state === "ready"), 5000, "all backends ready");
  return {
    lb,
    backends,
    async close() {
      await lb.close(500);
      for (const b of backends) await b.close();
    },
  };
}

describe("oversized headers before the client has acknowledged the balancer's SETTINGS", () => {
  test("100 KiB of metadata as the first request of a new connection fails alone: every backend connection survives and the next call succeeds", async (t) => {
    const { lb, close } = await freshBalancer(3);
    const session = http2.connect(`http://${lb.server.address}`, { maxSendHeaderBlockLength: 1024 * 1024 });
    session.on("error", () => {});
    const client = new EchoClient(lb.server.address);
    try {
      // Sent at once: the balancer's SETTINGS (with its header list limit) are not acknowledged yet.
      const r = await rawRequest(session, grpcHeaders(bigMetadata(100 * 1024)), echoBody());
      const outcome =
        r.rstCode !== 0
          ? `rst ${r.rstCode}`
          : `grpc-status ${r.headers["grpc-status"] ?? r.trailers["grpc-status"]} ${r.headers["grpc-message"] ?? ""}`;
      t.diagnostic(`the oversized request got ${outcome}`);
      assert.notEqual(r.trailers["grpc-status"], "0", "the oversized call succeeded");
      const states = lb.channel.status().map((s) => `${s.key} ${s.state} ${s.error ?? ""}`);
      const next = await client.echo({ message: "next" }, { deadlineMs: 3000 }).then(
        () => "OK",
        (e: grpc.ServiceError) => `${e.code} ${e.details}`,
      );
      assert.equal(next, "OK", `the next call failed after an oversized request (${outcome})`);
      assert.ok(
        lb.channel.status().every((s) => s.state === "ready"),
        `backend connections lost: ${states.join("; ")}`,
      );
    } finally {
      client.close();
      session.destroy();
      await close();
    }
  });
});

describe("a header value over 64 KiB (nghttp2's field limit)", () => {
  // Through node:http2 such a block ended the whole client connection with GOAWAY(COMPRESSION_ERROR)
  // (and left it in CLOSE-WAIT). The frame-level front decodes it with the HPACK state kept, refuses
  // only that call, and keeps the connection.
  test("fails only that call, with RESOURCE_EXHAUSTED; the same connection and others keep working", async () => {
    const { lb, backends, close } = await freshBalancer(1);
    const sessions: http2.ClientHttp2Session[] = [];
    const connect = async () => {
      const s = http2.connect(`http://${lb.server.address}`, { maxSendHeaderBlockLength: 1024 * 1024 });
      s.on("error", () => {});
      sessions.push(s);
      await once(s, "remoteSettings");
      return s;
    };
    try {
      const bystander = await connect();
      const offender = await connect();
      let goaway: number | undefined;
      offender.once("goaway", (code: number) => {
        goaway = code;
      });
      const before = backends[0]!.stats().calls;
      const r = await rawRequest(offender, grpcHeaders({ "x-huge": filler(100 * 1024, 7) }), echoBody());
      assert.equal(r.headers["grpc-status"], String(Status.RESOURCE_EXHAUSTED), JSON.stringify(r.headers));
      assert.equal(backends[0]!.stats().calls, before, "the oversized call reached the backend");
      assert.equal((await rawRequest(offender, grpcHeaders(), echoBody())).trailers["grpc-status"], "0");
      assert.equal((await rawRequest(bystander, grpcHeaders(), echoBody())).trailers["grpc-status"], "0");
      assert.equal(goaway, undefined, "the offending connection got a GOAWAY");
      assert.equal(lb.server.connections(), 2);
    } finally {
      for (const s of sessions) s.destroy();
      await close();
    }
  });
});

describe("connections that never speak", () => {
  test("a connection that never sends a byte is closed when the balancer closes", async () => {
    const backend = await startEchoBackend({ id: "silent0" });
    const lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
      policy: createDefaultRegistry().resolve("round_robin", {}),
    });
    const socket = net.connect(lb.server.port!, "127.0.0.1");
    socket.on("error", () => {});
    socket.resume();
    try {
      await once(socket, "connect");
      const closed = once(socket, "close");
      await lb.close(500);
      const result = await Promise.race([
        closed.then(() => "closed"),
        new Promise((r) => setTimeout(() => r("open"), 1500)),
      ]);
      assert.equal(result, "closed", "the silent connection is still open 1.5 s after lb.close()");
    } finally {
      socket.destroy();
      await lb.close(100);
      await backend.close();
    }
  });
});
