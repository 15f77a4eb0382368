// FrameBackend.afterRoundTrip over real sockets: the PING that paces the channel's release of queued
// calls (channel.ts, Readiness). A node:http2 server counts the PINGs it receives; a raw peer that
// never answers PINGs shows that a closed connection ends the wait. Every server, socket and backend is
// closed after each test.
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, describe, test } from "node:test";
import { settingsFrame } from "../../src/http2/frame.ts";
import { FrameBackend } from "../../src/platform/h2-backend.ts";
import { waitFor } from "../support/echo-backend.ts";

const closers: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const close of closers.reverse()) await close();
});

function backendTo(port: number): FrameBackend {
  const b = new FrameBackend({
    address: { kind: "tcp", host: "127.0.0.1", port },
    onStateChange: () => {},
    backoff: { initialMs: 60_000, maxMs: 60_000, multiplier: 1, jitter: 0 },
  });
  closers.push(() => b.destroy());
  b.start();
  return b;
}

describe("FrameBackend.afterRoundTrip", () => {
  test("answers once the backend acked a PING sent behind what was queued, at most 2 PINGs per connection", async () => {
    const pings: string[] = [];
    const server = http2.createServer();
    server.on("session", (s) => s.on("ping", (payload: Buffer) => pings.push(payload.toString("latin1"))));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as net.AddressInfo).port;
    const b = backendTo(port);
    await waitFor(() => b.state.kind === "ready", 5000, "the backend to be ready");

    let answered = 0;
    b.afterRoundTrip(() => answered++);
    assert.equal(answered, 0, "answered synchronously");
    await waitFor(() => answered === 1, 5000, "the first round trip");
    assert.deepEqual(pings, ["rosterRT"]);

    // Two more: the second PING is the connection's last in the window; the third is not sent.
    b.afterRoundTrip(() => answered++);
    await waitFor(() => answered === 2, 5000, "the second round trip");
    b.afterRoundTrip(() => answered++);
    assert.equal(answered, 2, "answered synchronously");
    await waitFor(() => answered === 3, 5000, "the third round trip (answered without a PING)");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(pings, ["rosterRT", "rosterRT"]);
  });

  test("a connection that closes before the ack ends the wait", async () => {
    // Speaks just enough HTTP/2 to be ready (its SETTINGS), never answers a PING, closes on demand.
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("data", () => {});
      s.write(settingsFrame([]));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    );
    const b = backendTo((server.address() as net.AddressInfo).port);
    await waitFor(() => b.state.kind === "ready", 5000, "the backend to be ready");

    let answered = 0;
    b.afterRoundTrip(() => answered++);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(answered, 0, "answered although the peer never acked");
    for (const s of sockets) s.destroy();
    await waitFor(() => answered === 1, 5000, "the round trip to end with the connection");
    assert.equal(b.state.kind, "transient-failure");
  });
});
