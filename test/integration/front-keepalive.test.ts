// Keepalive on the front connections: a client that pings too often gets GOAWAY ENHANCE_YOUR_CALM
// "too_many_pings" (as gRPC servers send it) and its open call still finishes; pings at the allowed
// interval, or with calls between them, are fine; a client that stops answering our pings is
// disconnected. Real roster lb, real grpc-js backend, raw node:http2 and TCP clients.
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { ENHANCE_YOUR_CALM, type FrontKeepalive } from "../../src/proxy/front-keepalive.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import { type EchoBackend, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** EchoRequest { message = 1: string, delay_ms = 3: uint32 } as one gRPC message (length-prefixed). */
function echoRequest(message: string, delayMs: number): Buffer {
  const text = Buffer.from(message);
  const delay: number[] = [];
  for (let v = delayMs; ; v >>>= 7) {
    if (v < 0x80) {
      delay.push(v);
      break;
    }
    delay.push((v & 0x7f) | 0x80);
  }
  const body = Buffer.concat([Buffer.from([0x0a, text.length]), text, Buffer.from([0x18, ...delay])]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

/** One Echo call over a raw session; resolves with its grpc-status (or "reset: CODE"). */
function rawEcho(session: http2.ClientHttp2Session, delayMs: number): Promise<string> {
  return new Promise((resolve) => {
    const stream = session.request({
      ":method": "POST",
      ":path": "/roster.test.Echo/Echo",
      "content-type": "application/grpc",
      te: "trailers",
    });
    let status: string | undefined;
    stream.on("response", (h) => {
      if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
    });
    stream.on("trailers", (t) => {
      status = String(t["grpc-status"]);
    });
    stream.on("data", () => {});
    stream.on("error", () => {});
    stream.on("close", () => resolve(status ?? `reset: ${stream.rstCode}`));
    stream.end(echoRequest("hi", delayMs));
  });
}

function ping(session: http2.ClientHttp2Session): Promise<void> {
  return new Promise((resolve, reject) => {
    session.ping((err) => (err ? reject(err) : resolve()));
  });
}

interface Goaway {
  code: number;
  debug: string;
}

/** A raw HTTP/2 client session, once connected (a ping sent before that is cancelled by node). */
async function connect(port: number): Promise<{ session: http2.ClientHttp2Session; goaways: Goaway[] }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const goaways: Goaway[] = [];
  session.on("goaway", (code, _last, data) => goaways.push({ code, debug: data?.toString() ?? "" }));
  session.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("close", () => reject(new Error("session closed before it connected")));
  });
  return { session, goaways };
}

describe("front keepalive", () => {
  let backend: EchoBackend;
  const lbs: Lb[] = [];
  const sessions: http2.ClientHttp2Session[] = [];

  const lbWith = async (keepalive: Partial<FrontKeepalive>) => {
    const lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
      policy: createDefaultRegistry().resolve("round_robin", {}),
      limits: {
        keepalive: {
          minPingIntervalMs: 5000,
          maxPingStrikes: 2,
          permitWithoutCalls: true,
          keepaliveTimeMs: 0,
          keepaliveTimeoutMs: 20_000,
          ...keepalive,
        },
        maxConnectionAgeGraceMs: 5000,
      },
    });
    lbs.push(lb);
    return lb;
  };
  const open = async (port: number) => {
    const c = await connect(port);
    sessions.push(c.session);
    return c;
  };

  before(async () => {
    backend = await startEchoBackend({ id: "b" });
  });
  after(async () => {
    for (const s of sessions) s.destroy();
    for (const lb of lbs) await lb.close(100);
    await backend.close();
  });

  it("sends GOAWAY ENHANCE_YOUR_CALM too_many_pings on the fourth ping too soon; other connections go on", async () => {
    const lb = await lbWith({ minPingIntervalMs: 1000, maxPingStrikes: 2 });
    const { session, goaways } = await open(lb.server.port!);
    const other = await open(lb.server.port!);
    // A call first: calls reset strikes, so the pings after it start from zero.
    assert.equal(await rawEcho(session, 0), "0");
    // Ping 1 is fine, 2 and 3 are strikes 1 and 2 (tolerated), 4 is strike 3: GOAWAY.
    for (let i = 0; i < 4; i++) await ping(session).catch(() => {});
    for (let i = 0; i < 100 && goaways.length === 0; i++) await sleep(10);
    assert.ok(goaways.length >= 1, "a GOAWAY arrived");
    assert.equal(goaways[0]!.code, ENHANCE_YOUR_CALM);
    assert.equal(goaways[0]!.debug, "too_many_pings");
    // (A node:http2 client — grpc-js's too — destroys its session on a GOAWAY with an error code, so
    // calls open at that moment fail on the client's side; the balancer lets them finish.)
    for (let i = 0; i < 100 && !session.destroyed; i++) await sleep(10);
    assert.equal(session.destroyed, true);
    // Other connections are not affected.
    assert.equal(await rawEcho(other.session, 0), "0");
    assert.deepEqual(other.goaways, []);
  });

  it("accepts pings at the allowed interval, and pings with calls between them", async () => {
    const lb = await lbWith({ minPingIntervalMs: 150, maxPingStrikes: 1 });
    const { session, goaways } = await open(lb.server.port!);
    // Six pings 600 ms apart: four times the allowed interval, so a late timer or a busy balancer cannot
    // make two of them look too close (one more strike than allowed would close the connection).
    for (let i = 0; i < 6; i++) {
      await ping(session);
      await sleep(600);
    }
    // Pings 10 ms apart, each pair with a call between: the call forgives the strike.
    for (let i = 0; i < 6; i++) {
      await ping(session);
      assert.equal(await rawEcho(session, 0), "0");
    }
    await sleep(100);
    assert.deepEqual(goaways, []);
    assert.equal(session.closed, false);
    assert.equal(await rawEcho(session, 0), "0");
  });

  it("closes a connection whose client does not answer the front's keepalive ping", async () => {
    const lb = await lbWith({ keepaliveTimeMs: 200, keepaliveTimeoutMs: 200 });
    // A client that speaks the preface and an empty SETTINGS frame, then reads (and drops) what comes
    // but never answers anything — our PING included.
    const mute = net.connect(lb.server.port!, "127.0.0.1");
    mute.on("error", () => {});
    mute.resume();
    const closedAt = new Promise<number>((r) => mute.once("close", () => r(Date.now())));
    // Taken before the connection exists: the balancer's keepalive clock for it cannot start earlier.
    const started = Date.now();
    await new Promise<void>((r) => mute.once("connect", () => r()));
    mute.write(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    mute.write(Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0])); // SETTINGS, no parameters
    // A real client that answers pings (nghttp2 does so by itself) on the same balancer.
    const { session, goaways } = await open(lb.server.port!);
    let pingsReceived = 0;
    session.on("ping", () => pingsReceived++);
    assert.equal(await rawEcho(session, 0), "0");
    const closed = await Promise.race([closedAt, sleep(20_000).then(() => -1)]);
    assert.notEqual(closed, -1, "the mute connection was not closed within 20 s");
    // keepaliveTimeMs + keepaliveTimeoutMs = 400 ms after the connection at the earliest (timers never
    // fire early; 50 ms of slack for clock granularity).
    assert.ok(closed - started >= 350, `closed after ${closed - started} ms, before the keepalive time`);
    // The answering client is still connected after several keepalive rounds, counted as they come.
    await waitFor(() => pingsReceived >= 3, 20_000, "3 keepalive pings to the answering client");
    assert.equal(session.closed || session.destroyed, false);
    assert.deepEqual(goaways, []);
    assert.equal(await rawEcho(session, 0), "0");
    mute.destroy();
  });

  it("closes a connection idle for idleTimeoutMs with GOAWAY NO_ERROR, but not one with a quiet call open", async () => {
    const lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
      policy: createDefaultRegistry().resolve("round_robin", {}),
      limits: { idleTimeoutMs: 300 },
    });
    lbs.push(lb);
    const busy = await open(lb.server.port!);
    // A call whose backend answers after 900 ms: three idle periods without a frame, but a call is open.
    const slow = rawEcho(busy.session, 900);
    const idle = await open(lb.server.port!);
    assert.equal(await rawEcho(idle.session, 0), "0");
    for (let i = 0; i < 200 && !idle.session.destroyed; i++) await sleep(10);
    assert.equal(idle.session.destroyed, true, "the idle connection was closed");
    assert.ok(idle.goaways.length >= 1, "a GOAWAY came first");
    for (const g of idle.goaways) assert.equal(g.code, http2.constants.NGHTTP2_NO_ERROR);
    assert.equal(await slow, "0", "the quiet call finished");
    assert.deepEqual(busy.goaways, [], "no GOAWAY while the call was open");
  });

  it("is on by default: defaults come from defaultFrontKeepalive", async () => {
    const lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
      policy: createDefaultRegistry().resolve("round_robin", {}),
    });
    lbs.push(lb);
    const { session, goaways } = await open(lb.server.port!);
    // Default: 5 s between pings, 2 strikes: four pings back to back → GOAWAY.
    for (let i = 0; i < 4; i++) await ping(session).catch(() => {});
    for (let i = 0; i < 100 && goaways.length === 0; i++) await sleep(10);
    assert.equal(goaways[0]?.code, ENHANCE_YOUR_CALM);
    const client = new EchoClient(`127.0.0.1:${lb.server.port}`);
    try {
      const reply = await client.echo({ message: "still serving" }, { deadlineMs: 5000 });
      assert.equal(reply.served_by, "b");
    } finally {
      client.client.close();
    }
  });
});
