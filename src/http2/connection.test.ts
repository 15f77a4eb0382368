import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ConnectionHandler, type H2Stream, Http2Connection, type StreamOwner } from "./connection.ts";
import {
  CONNECTION_PREFACE,
  ErrorCode,
  Flag,
  FrameReader,
  FrameType,
  frameHeader,
  goawayFrame,
  pingFrame,
  rstStreamFrame,
  SETTINGS_ACK,
  SettingId,
  settingsFrame,
  windowUpdateFrame,
} from "./frame.ts";
import { HpackDecoder, HpackEncoder } from "./hpack.ts";
import { poisonFreedSlabs } from "./out-buffer.ts";

/** One frame as the tables write them. */
interface F {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([frameHeader(payload.length, type, flags, id), payload]);
}

const REQUEST = [
  ":method",
  "POST",
  ":scheme",
  "http",
  ":path",
  "/pkg.Echo/Echo",
  ":authority",
  "x",
  "content-type",
  "application/grpc",
  "te",
  "trailers",
];

/** A server-role connection with a recording owner for every stream, already past the preface. */
function server(settings: ConstructorParameters<typeof Http2Connection>[2] = {}) {
  const events: string[] = [];
  const streams: H2Stream[] = [];
  let errors: string[] = [];
  let drained = 0;
  const owner: StreamOwner = {
    onHeaders: (s, h, end) => events.push(`headers ${s.id} ${h.join(",")}${end ? " end" : ""}`),
    onData: (s, d, end) => events.push(`data ${s.id} ${d.length}${end ? " end" : ""}`),
    onReset: (s, code, byPeer) => events.push(`reset ${s.id} ${code}${byPeer ? " by peer" : ""}`),
    onWritable: (s) => events.push(`writable ${s.id}`),
  };
  const handler: ConnectionHandler = {
    onOutput: () => {},
    onStream: (s, h, end) => {
      s.owner = owner;
      streams.push(s);
      events.push(`stream ${s.id} ${h[5]}${end ? " end" : ""}`);
    },
    onStreamHeadersTooLarge: (s, size) => {
      events.push(`too large ${s.id}`);
      assert.ok(size > 0);
      conn.resetStream(s, ErrorCode.REFUSED_STREAM);
    },
    onConnectionError: (code, message) => {
      errors.push(`${code} ${message}`);
    },
    onDrained: () => drained++,
  };
  const conn = new Http2Connection("server", handler, settings);
  conn.start();
  const encoder = new HpackEncoder();
  /** The output as frames, written at once (its control frames reported written) unless `held`. */
  const take = (held = false): F[] => {
    const out: F[] = [];
    const reader = new FrameReader(1 << 24);
    for (const b of conn.takeOutput() ?? []) {
      reader.push(b, (type, flags, id, payload) =>
        out.push({ type, flags, id, payload: Buffer.from(payload) }),
      );
    }
    if (!held) conn.controlFramesWritten(conn.takenControlFrames);
    return out;
  };
  conn.receive(Buffer.concat([CONNECTION_PREFACE, settingsFrame([])]), 0);
  take();
  return {
    conn,
    events,
    streams,
    get errors() {
      const e = errors;
      errors = [];
      return e;
    },
    get drained() {
      return drained;
    },
    send: (...frames: Buffer[]) => conn.receive(Buffer.concat(frames), 0),
    take,
    headers: (id: number, list: string[], flags: number = Flag.END_HEADERS) =>
      frame(FrameType.HEADERS, flags, id, encoder.encode(list)),
    encoder,
  };
}

/** The GOAWAY code in `frames`, or undefined. */
function goawayCode(frames: F[]): number | undefined {
  const g = frames.find((f) => f.type === FrameType.GOAWAY);
  return g?.payload.readUInt32BE(4);
}

function rstCodes(frames: F[]): string[] {
  return frames
    .filter((f) => f.type === FrameType.RST_STREAM)
    .map((f) => `${f.id}:${f.payload.readUInt32BE(0)}`);
}

describe("HTTP/2 connection (server role): connection errors the RFC names", () => {
  // Each row: frames sent after the preface and SETTINGS → the GOAWAY code the connection must send.
  const rows: [string, (c: ReturnType<typeof server>) => Buffer[], number][] = [
    ["DATA on stream 0", () => [frame(FrameType.DATA, 0, 0, Buffer.alloc(1))], ErrorCode.PROTOCOL_ERROR],
    [
      "DATA on an idle stream",
      () => [frame(FrameType.DATA, 0, 5, Buffer.alloc(1))],
      ErrorCode.PROTOCOL_ERROR,
    ],
    ["HEADERS on stream 0", (c) => [c.headers(0, REQUEST)], ErrorCode.PROTOCOL_ERROR],
    ["HEADERS opening an even (server) stream id", (c) => [c.headers(2, REQUEST)], ErrorCode.PROTOCOL_ERROR],
    [
      "HEADERS without END_STREAM on a stream id below one already opened",
      (c) => [c.headers(5, REQUEST), c.headers(3, REQUEST)],
      ErrorCode.PROTOCOL_ERROR,
    ],
    ["SETTINGS on a stream", () => [frame(FrameType.SETTINGS, 0, 1)], ErrorCode.PROTOCOL_ERROR],
    [
      "SETTINGS of 5 bytes",
      () => [frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5))],
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "SETTINGS ACK with a payload",
      () => [frame(FrameType.SETTINGS, Flag.ACK, 0, Buffer.alloc(6))],
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    ["SETTINGS_ENABLE_PUSH 2", () => [settingsFrame([[SettingId.ENABLE_PUSH, 2]])], ErrorCode.PROTOCOL_ERROR],
    [
      "SETTINGS_INITIAL_WINDOW_SIZE 2^31",
      () => [settingsFrame([[SettingId.INITIAL_WINDOW_SIZE, 2 ** 31]])],
      ErrorCode.FLOW_CONTROL_ERROR,
    ],
    [
      "SETTINGS_MAX_FRAME_SIZE below 16384",
      () => [settingsFrame([[SettingId.MAX_FRAME_SIZE, 100]])],
      ErrorCode.PROTOCOL_ERROR,
    ],
    ["PING of 7 bytes", () => [frame(FrameType.PING, 0, 0, Buffer.alloc(7))], ErrorCode.FRAME_SIZE_ERROR],
    ["PING on a stream", () => [frame(FrameType.PING, 0, 1, Buffer.alloc(8))], ErrorCode.PROTOCOL_ERROR],
    ["RST_STREAM on stream 0", () => [rstStreamFrame(0, 8)], ErrorCode.PROTOCOL_ERROR],
    ["RST_STREAM on an idle stream", () => [rstStreamFrame(7, 8)], ErrorCode.PROTOCOL_ERROR],
    [
      "RST_STREAM of 3 bytes",
      () => [frame(FrameType.RST_STREAM, 0, 1, Buffer.alloc(3))],
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    ["WINDOW_UPDATE of 0 for the connection", () => [windowUpdateFrame(0, 0)], ErrorCode.PROTOCOL_ERROR],
    [
      "WINDOW_UPDATE of 3 bytes",
      () => [frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(3))],
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "WINDOW_UPDATE past 2^31-1 for the connection",
      () => [windowUpdateFrame(0, 2 ** 31 - 1)],
      ErrorCode.FLOW_CONTROL_ERROR,
    ],
    ["GOAWAY on a stream", () => [frame(FrameType.GOAWAY, 0, 1, Buffer.alloc(8))], ErrorCode.PROTOCOL_ERROR],
    [
      "PUSH_PROMISE from a client",
      () => [frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, Buffer.alloc(4))],
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "a frame above SETTINGS_MAX_FRAME_SIZE",
      () => [frame(FrameType.DATA, 0, 1, Buffer.alloc(16_385))],
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "CONTINUATION without HEADERS",
      () => [frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, Buffer.alloc(1))],
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "a header block interrupted by a PING",
      (c) => [c.headers(1, REQUEST, 0), pingFrame(false, Buffer.alloc(8))],
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "a CONTINUATION flood (65 frames)",
      (c) => [
        c.headers(1, REQUEST, 0),
        ...Array.from({ length: 65 }, () => frame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(0))),
      ],
      ErrorCode.ENHANCE_YOUR_CALM,
    ],
    [
      "an HPACK index past the tables",
      () => [frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from([0xff, 0x7f]))],
      ErrorCode.COMPRESSION_ERROR,
    ],
    [
      "DATA padding as long as the frame",
      (c) => [c.headers(1, REQUEST), frame(FrameType.DATA, Flag.PADDED, 1, Buffer.from([4, 0, 0, 0]))],
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "DATA beyond the connection window (65535 before our WINDOW_UPDATE counts: 17 MiB)",
      (c) => [
        c.headers(1, REQUEST),
        ...Array.from({ length: 1100 }, () => frame(FrameType.DATA, 0, 1, Buffer.alloc(16_384))),
      ],
      ErrorCode.FLOW_CONTROL_ERROR,
    ],
  ];
  for (const [name, frames, code] of rows) {
    it(`answers ${name} with GOAWAY ${code}`, () => {
      const c = server({ initialWindowSize: 2 ** 31 - 1, maxConnectionBufferBytes: 0 });
      // The window rows need the stream window out of the way and the connection window held back
      // (nothing is consumed); the other rows ignore both.
      c.send(...frames(c));
      assert.equal(goawayCode(c.take()), code);
      assert.equal(c.conn.state, "closed");
      assert.equal(c.errors.length, 1);
    });
  }

  it("answers bytes that are not the preface with GOAWAY PROTOCOL_ERROR", () => {
    const conn = new Http2Connection("server", { onOutput: () => {} });
    conn.start();
    conn.takeOutput();
    conn.receive(Buffer.from("GET / HTTP/1.1\r\n\r\n"), 0);
    const out = Buffer.concat(conn.takeOutput() ?? []);
    assert.equal(out[3], FrameType.GOAWAY);
    assert.equal(out.readUInt32BE(13), ErrorCode.PROTOCOL_ERROR);
  });

  it("closes a connection whose first frame is not SETTINGS", () => {
    const conn = new Http2Connection("server", { onOutput: () => {} });
    conn.start();
    conn.takeOutput();
    conn.receive(Buffer.concat([CONNECTION_PREFACE, pingFrame(false, Buffer.alloc(8))]), 0);
    assert.equal(conn.state, "closed");
  });
});

describe("HTTP/2 connection (server role): streams", () => {
  it("delivers a request, its DATA and its end, and answers SETTINGS and PING with ACKs", () => {
    const c = server();
    c.send(settingsFrame([[SettingId.MAX_FRAME_SIZE, 32_768]]), pingFrame(false, Buffer.from("abcdefgh")));
    const acks = c.take();
    assert.deepEqual(
      acks.map((f) => [f.type, f.flags]),
      [
        [FrameType.SETTINGS, Flag.ACK],
        [FrameType.PING, Flag.ACK],
      ],
    );
    assert.equal(acks[1]!.payload.toString(), "abcdefgh");
    c.send(c.headers(1, REQUEST), frame(FrameType.DATA, Flag.END_STREAM, 1, Buffer.alloc(10)));
    assert.deepEqual(c.events, ["stream 1 /pkg.Echo/Echo", "data 1 10 end"]);
  });

  it("refuses malformed requests with RST_STREAM PROTOCOL_ERROR and keeps the connection", () => {
    const c = server();
    const bad = [
      [":method", "POST", ":scheme", "http", ":path", "/a/b", "Content-Type", "x"], // uppercase
      [":method", "POST", ":scheme", "http", ":path", "/a/b", "connection", "close"],
      [":method", "POST", ":scheme", "http", ":path", "/a/b", "te", "gzip"],
      [":method", "POST", ":scheme", "http"], // no :path
      [":method", "POST", "x", "y", ":scheme", "http", ":path", "/a/b"], // pseudo after regular
      [":method", "POST", ":scheme", "http", ":path", "/a/b", ":foo", "1"],
    ];
    c.send(...bad.map((h, i) => c.headers(1 + 2 * i, h)));
    assert.deepEqual(
      rstCodes(c.take()),
      bad.map((_, i) => `${1 + 2 * i}:${ErrorCode.PROTOCOL_ERROR}`),
    );
    assert.equal(c.conn.state, "open");
    assert.deepEqual(c.events, []);
  });

  it("refuses streams past MAX_CONCURRENT_STREAMS with REFUSED_STREAM", () => {
    const c = server({ maxConcurrentStreams: 2 });
    c.send(c.headers(1, REQUEST), c.headers(3, REQUEST), c.headers(5, REQUEST));
    assert.deepEqual(rstCodes(c.take()), [`5:${ErrorCode.REFUSED_STREAM}`]);
    assert.equal(c.streams.length, 2);
  });

  it("reports a header list past the limit per stream and keeps HPACK in sync (HPACK bomb)", () => {
    const c = server({ maxHeaderListSize: 16 * 1024 });
    const big = "v".repeat(200);
    // The value is indexed once, then referenced by one byte each: a small block, a large list.
    const list = [...REQUEST, "x-big", big];
    for (let i = 0; i < 200; i++) list.push("x-big", big);
    c.send(c.headers(1, list), c.headers(3, REQUEST));
    assert.deepEqual(c.events, ["too large 1", "stream 3 /pkg.Echo/Echo"]);
    assert.equal(c.conn.state, "open");
  });

  it("gives a stream's window back only as its owner consumes, and the connection's at once", () => {
    const c = server({ initialWindowSize: 40_000, connectionWindowSize: 40_000 });
    c.send(
      c.headers(1, REQUEST),
      frame(FrameType.DATA, 0, 1, Buffer.alloc(16_000)),
      frame(FrameType.DATA, 0, 1, Buffer.alloc(16_000)),
    );
    const before = c.take().filter((f) => f.type === FrameType.WINDOW_UPDATE);
    assert.deepEqual(
      before.map((f) => [f.id, f.payload.readUInt32BE(0)]),
      [[0, 32_000]],
    );
    // Beyond the stream's window now: 8000 left.
    c.send(frame(FrameType.DATA, 0, 1, Buffer.alloc(9000)));
    assert.deepEqual(rstCodes(c.take()), [`1:${ErrorCode.FLOW_CONTROL_ERROR}`]);
    const c2 = server({ initialWindowSize: 40_000 });
    c2.send(
      c2.headers(1, REQUEST),
      frame(FrameType.DATA, 0, 1, Buffer.alloc(16_000)),
      frame(FrameType.DATA, 0, 1, Buffer.alloc(16_000)),
    );
    c2.take();
    c2.conn.consume(c2.streams[0]!, 32_000);
    const updates = c2.take().filter((f) => f.type === FrameType.WINDOW_UPDATE);
    assert.deepEqual(
      updates.map((f) => [f.id, f.payload.readUInt32BE(0)]),
      [[1, 32_000]],
    );
  });

  it("queues DATA beyond the peer's window, sends it on WINDOW_UPDATE, and sends trailers after it", () => {
    const c = server();
    c.send(
      settingsFrame([[SettingId.INITIAL_WINDOW_SIZE, 10]]),
      c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM),
    );
    c.take();
    const s = c.streams[0]!;
    c.conn.sendHeaders(s, [":status", "200"], false);
    c.conn.sendData(s, Buffer.alloc(25), false);
    c.conn.sendHeaders(s, ["grpc-status", "0"], true);
    let out = c.take();
    assert.deepEqual(
      out.map((f) => [f.type, f.payload.length]),
      [
        [FrameType.HEADERS, out[0]!.payload.length],
        [FrameType.DATA, 10],
      ],
    );
    assert.equal(s.pendingBytes, 15);
    c.send(windowUpdateFrame(1, 100));
    out = c.take();
    assert.deepEqual(
      out.map((f) => [f.type, f.flags & Flag.END_STREAM]),
      [
        [FrameType.DATA, 0],
        [FrameType.HEADERS, Flag.END_STREAM],
      ],
    );
    const decoder = new HpackDecoder();
    const trailers = decoder.decode(out[1]!.payload);
    assert.equal(trailers.kind === "compression-error" ? "error" : "decoded", "decoded");
    assert.equal(s.closed, true);
  });

  it("resets the rest of a request with NO_ERROR when the response ends first (RFC 9113 §8.1)", () => {
    const c = server();
    c.send(c.headers(1, REQUEST));
    c.take();
    c.conn.sendHeaders(c.streams[0]!, [":status", "200", "grpc-status", "3"], true);
    assert.deepEqual(rstCodes(c.take()), [`1:${ErrorCode.NO_ERROR}`]);
    assert.equal(c.conn.activeStreams, 0);
  });

  it("tells the owner about a peer reset, and ignores frames in flight on the closed stream", () => {
    const c = server();
    c.send(
      c.headers(1, REQUEST),
      rstStreamFrame(1, ErrorCode.CANCEL),
      frame(FrameType.DATA, 0, 1, Buffer.alloc(5)),
    );
    assert.deepEqual(c.events, ["stream 1 /pkg.Echo/Echo", `reset 1 ${ErrorCode.CANCEL} by peer`]);
    assert.equal(c.conn.state, "open");
  });

  it("ignores trailers in flight on a stream it already closed (HPACK kept in sync)", () => {
    const c = server();
    c.send(c.headers(1, REQUEST), rstStreamFrame(1, ErrorCode.CANCEL));
    c.send(c.headers(1, ["x-trailer", "1"], Flag.END_HEADERS | Flag.END_STREAM));
    c.send(c.headers(3, REQUEST, Flag.END_HEADERS | Flag.END_STREAM));
    assert.equal(c.conn.state, "open");
    assert.deepEqual(c.events.at(-1), "stream 3 /pkg.Echo/Echo end");
  });

  it("answers PRIORITY rules: wrong length and self-dependency reset the stream, otherwise ignored", () => {
    const c = server();
    const prio = (id: number, dep: number, len = 5) => {
      const p = Buffer.alloc(len);
      if (len >= 4) p.writeUInt32BE(dep, 0);
      return frame(FrameType.PRIORITY, 0, id, p);
    };
    c.send(prio(1, 3), prio(3, 3), prio(5, 1, 4));
    assert.deepEqual(rstCodes(c.take()), [
      `3:${ErrorCode.PROTOCOL_ERROR}`,
      `5:${ErrorCode.FRAME_SIZE_ERROR}`,
    ]);
    assert.equal(c.conn.state, "open");
  });

  it("ignores frames of unknown types", () => {
    const c = server();
    c.send(frame(0x42, 0, 0, Buffer.alloc(3)));
    assert.equal(c.conn.state, "open");
    assert.deepEqual(c.take(), []);
  });
});

describe("HTTP/2 connection: defences", () => {
  it("holds DATA in the stream queues while the platform's write buffer is full, whatever the windows", () => {
    const c = server();
    c.send(c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM));
    c.take();
    const s = c.streams[0]!;
    c.conn.sendHeaders(s, [":status", "200"], false);
    c.conn.holdSend(true);
    c.conn.sendData(s, Buffer.alloc(1000), false);
    c.conn.sendHeaders(s, ["grpc-status", "0"], true);
    // Headers are not held (they are not flow-controlled); DATA and the trailers behind it are.
    assert.deepEqual(
      c.take().map((f) => f.type),
      [FrameType.HEADERS],
    );
    assert.equal(s.pendingBytes, 1000);
    c.send(windowUpdateFrame(0, 100_000), windowUpdateFrame(1, 100_000));
    assert.deepEqual(
      c.take().map((f) => f.type),
      [],
      "a WINDOW_UPDATE does not release held DATA",
    );
    c.conn.holdSend(false);
    const out = c.take();
    assert.deepEqual(
      out.map((f) => [f.type, f.flags & Flag.END_STREAM]),
      [
        [FrameType.DATA, 0],
        [FrameType.HEADERS, Flag.END_STREAM],
      ],
    );
    assert.equal(out[0]!.payload.length, 1000);
    assert.ok(s.closed);
  });

  it("closes a connection whose client resets most streams before their response (rapid reset)", () => {
    const c = server();
    const frames: Buffer[] = [];
    for (let i = 0; i < 120; i++)
      frames.push(c.headers(1 + 2 * i, REQUEST), rstStreamFrame(1 + 2 * i, ErrorCode.CANCEL));
    c.send(...frames);
    assert.equal(goawayCode(c.take()), ErrorCode.ENHANCE_YOUR_CALM);
    // It stopped at the check, not after the 120th stream.
    assert.ok(c.streams.length <= 101, `${c.streams.length} streams were opened`);
  });

  it("closes a connection that keeps opening streams past MAX_CONCURRENT_STREAMS (refused count as premature)", () => {
    const c = server({ maxConcurrentStreams: 10, minStreamsForResetCheck: 100 });
    const frames: Buffer[] = [];
    for (let i = 0; i < 60; i++) frames.push(c.headers(1 + 2 * i, REQUEST));
    c.send(...frames);
    // 10 open, 50 refused: under the rule's minimum of 100 streams, the connection stays.
    assert.equal(rstCodes(c.take()).length, 50);
    assert.equal(c.conn.state, "open");
    const more: Buffer[] = [];
    for (let i = 60; i < 200; i++) more.push(c.headers(1 + 2 * i, REQUEST));
    c.send(...more);
    assert.equal(goawayCode(c.take()), ErrorCode.ENHANCE_YOUR_CALM);
  });

  it("keeps a connection whose client cancels a few calls", () => {
    const c = server();
    const frames: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      frames.push(c.headers(1 + 2 * i, REQUEST, Flag.END_HEADERS | Flag.END_STREAM));
      if (i % 10 === 0) frames.push(rstStreamFrame(1 + 2 * i, ErrorCode.CANCEL));
    }
    c.send(...frames);
    assert.equal(c.conn.state, "open");
  });

  it("closes a connection that floods PINGs faster than their ACKs are taken", () => {
    const c = server({ maxQueuedControlFrames: 100 });
    c.send(...Array.from({ length: 101 }, () => pingFrame(false, Buffer.alloc(8))));
    assert.equal(goawayCode(c.take()), ErrorCode.ENHANCE_YOUR_CALM);
  });

  it("does not count PINGs whose ACKs were written", () => {
    const c = server({ maxQueuedControlFrames: 100 });
    for (let i = 0; i < 5; i++) {
      c.send(...Array.from({ length: 60 }, () => pingFrame(false, Buffer.alloc(8))));
      c.take();
    }
    assert.equal(c.conn.state, "open");
  });

  // Control answers count until the platform reports them written (nghttp2's outbound-queue flood
  // rule), not until they are taken: each row is rounds of [frames the peer sends, answers taken
  // and written ("written"), or taken but stuck in the socket's buffer ("held")] → the round that
  // got GOAWAY ENHANCE_YOUR_CALM (limit 100), or -1.
  const ping = () => pingFrame(false, Buffer.alloc(8));
  const settings = () => settingsFrame([[SettingId.MAX_CONCURRENT_STREAMS, 10]]);
  const floodRows: [string, [() => Buffer, number, "written" | "held"][], number][] = [
    [
      "PINGs whose ACKs are written as they go",
      [
        [ping, 60, "written"],
        [ping, 60, "written"],
        [ping, 60, "written"],
      ],
      -1,
    ],
    [
      "PINGs whose ACKs are taken but not written",
      [
        [ping, 60, "held"],
        [ping, 40, "held"],
        [ping, 1, "held"],
      ],
      2,
    ],
    [
      "SETTINGS whose ACKs are taken but not written",
      [
        [settings, 60, "held"],
        [settings, 41, "held"],
      ],
      1,
    ],
    [
      "a write that completes releases the ACKs before it",
      [
        [ping, 60, "held"],
        [ping, 0, "written"],
        [ping, 100, "held"],
      ],
      -1,
    ],
    ["at the limit exactly, not past it", [[ping, 100, "held"]], -1],
  ];
  for (const [name, rounds, closedAt] of floodRows) {
    it(`control-frame flood: ${name} → ${closedAt < 0 ? "stays open" : `GOAWAY in round ${closedAt}`}`, () => {
      const c = server({ maxQueuedControlFrames: 100 });
      let got = -1;
      let held = 0;
      rounds.forEach(([make, n, written], round) => {
        if (n > 0) c.send(...Array.from({ length: n }, make));
        const frames = c.take(true);
        held += c.conn.takenControlFrames;
        // A write that completes comes after the ones before it (a socket writes in order).
        if (written === "written") {
          c.conn.controlFramesWritten(held);
          held = 0;
        }
        if (got < 0 && goawayCode(frames) === ErrorCode.ENHANCE_YOUR_CALM) got = round;
      });
      assert.equal(got, closedAt);
      assert.equal(c.conn.state, closedAt < 0 ? "open" : "closed");
    });
  }
});

describe("HTTP/2 connection: send-stall sweep (resetStalledStreams)", () => {
  /** A stream with its response begun and `bytes` of DATA queued, the peer's windows as `settings` say. */
  function stalled(bytes: number, peerWindow: number) {
    const c = server();
    c.send(
      settingsFrame([[SettingId.INITIAL_WINDOW_SIZE, peerWindow]]),
      c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM),
    );
    const s = c.streams[0]!;
    c.conn.sendHeaders(s, [":status", "200"], false);
    c.conn.sendData(s, Buffer.alloc(bytes), false);
    c.take();
    return { c, s };
  }

  // Each row: how the queue is stuck, then sweeps as [now, what happened between (or undefined)] →
  // the sweep times that reset the stream (timeout 1000 ms).
  const T = 1000;
  const rows: [
    string,
    (x: ReturnType<typeof stalled>) => void,
    [number, ((x: ReturnType<typeof stalled>) => void)?][],
    number[],
  ][] = [
    ["stream window 0, never opened", () => {}, [[0], [500], [999], [1000], [1500]], [1000]],
    [
      "stream window 0, the first sweep late (the stall is timed from the sweep that saw it)",
      () => {},
      [[400], [1399], [1400]],
      [1400],
    ],
    [
      "stream window opened by a few bytes between sweeps (a slow reader: progress restarts the clock)",
      () => {},
      [
        [0],
        [900, (x) => x.c.send(windowUpdateFrame(1, 5))],
        [1800],
        [2700, (x) => x.c.send(windowUpdateFrame(1, 5))],
        [3600],
        [3699],
        [3700],
      ],
      [3700],
    ],
    [
      "connection window 0 (the stream's own window is large)",
      (x) => x.c.conn.sendData(x.s, Buffer.alloc(70_000), false),
      [[0], [1000]],
      [1000],
    ],
    ["socket not draining (holdSend), windows open", (x) => x.c.conn.holdSend(true), [[0], [1000]], [1000]],
    [
      "the queue emptied before the timeout",
      () => {},
      [[0], [600, (x) => x.c.send(windowUpdateFrame(1, 1_000_000))], [1000], [5000]],
      [],
    ],
  ];
  for (const [name, setup, sweeps, resetAt] of rows) {
    it(`${name}: reset at ${JSON.stringify(resetAt)}`, () => {
      // 100 bytes on a 10-byte stream window, or (row 4) the connection window spent.
      const x = stalled(100, name.startsWith("connection") ? 2 ** 31 - 1 : 10);
      setup(x);
      x.c.take();
      const got: number[] = [];
      for (const [now, between] of sweeps) {
        between?.(x);
        const n = x.c.conn.resetStalledStreams(now, T);
        if (n > 0) got.push(now);
      }
      assert.deepEqual(got, resetAt);
      if (resetAt.length > 0) {
        assert.equal(x.s.closed, true);
        assert.ok(rstCodes(x.c.take()).includes(`1:${ErrorCode.CANCEL}`));
        assert.ok(x.c.events.includes(`reset 1 ${ErrorCode.CANCEL}`), "the owner was told");
        assert.equal(x.c.conn.state, "open", "a stream error only");
      }
    });
  }

  it("resets only the stalled streams of a connection", () => {
    const c = server();
    c.send(
      settingsFrame([[SettingId.INITIAL_WINDOW_SIZE, 10]]),
      c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM),
      c.headers(3, REQUEST, Flag.END_HEADERS | Flag.END_STREAM),
      c.headers(5, REQUEST),
    );
    const [a, b] = c.streams;
    c.conn.sendHeaders(a!, [":status", "200"], false);
    c.conn.sendData(a!, Buffer.alloc(50), false);
    c.conn.sendHeaders(b!, [":status", "200"], false);
    c.conn.sendData(b!, Buffer.alloc(5), false);
    c.take();
    assert.equal(c.conn.resetStalledStreams(0, T), 0);
    assert.equal(c.conn.resetStalledStreams(T, T), 1);
    assert.deepEqual(rstCodes(c.take()), [`1:${ErrorCode.CANCEL}`]);
    assert.equal(c.conn.activeStreams, 2, "3 (all sent) and 5 (nothing queued) stay");
  });
});

describe("HTTP/2 connection: content-length (RFC 9113 §8.1.1)", () => {
  const CL = (v: string, ...more: string[]) => [...REQUEST, "content-length", v, ...more];
  const data = (n: number, end: boolean) =>
    frame(FrameType.DATA, end ? Flag.END_STREAM : 0, 1, Buffer.alloc(n));
  const END = Flag.END_HEADERS | Flag.END_STREAM;

  // Server role, a request: frames after the preface → the events its owner saw, and whether stream 1
  // was reset PROTOCOL_ERROR (a stream error: the connection stays open).
  const requestRows: [string, (c: ReturnType<typeof server>) => Buffer[], string[], boolean][] = [
    [
      "10 declared, 4 + 6 sent",
      (c) => [c.headers(1, CL("10")), data(4, false), data(6, true)],
      ["stream 1", "data 1 4", "data 1 6 end"],
      false,
    ],
    [
      "10 declared, 11 sent: the bytes past it never reach the owner",
      (c) => [c.headers(1, CL("10")), data(11, true)],
      ["stream 1", "reset 1 1"],
      true,
    ],
    [
      "10 declared, 6 + 6 sent",
      (c) => [c.headers(1, CL("10")), data(6, false), data(6, false)],
      ["stream 1", "data 1 6", "reset 1 1"],
      true,
    ],
    [
      "10 declared, 9 sent with END_STREAM",
      (c) => [c.headers(1, CL("10")), data(9, true)],
      ["stream 1", "reset 1 1"],
      true,
    ],
    [
      "10 declared, 10 sent, then trailers",
      (c) => [c.headers(1, CL("10")), data(10, false), c.headers(1, ["x-t", "1"], END)],
      ["stream 1", "data 1 10", "headers 1 x-t,1 end"],
      false,
    ],
    [
      "10 declared, 5 sent, then trailers",
      (c) => [c.headers(1, CL("10")), data(5, false), c.headers(1, ["x-t", "1"], END)],
      ["stream 1", "data 1 5", "reset 1 1"],
      true,
    ],
    ["10 declared on HEADERS with END_STREAM", (c) => [c.headers(1, CL("10"), END)], [], true],
    ["0 declared on HEADERS with END_STREAM", (c) => [c.headers(1, CL("0"), END)], ["stream 1 end"], false],
    ["a value that is not digits", (c) => [c.headers(1, CL("1e3")), data(1, true)], [], true],
    ["a negative value", (c) => [c.headers(1, CL("-1")), data(1, true)], [], true],
    ["two different values", (c) => [c.headers(1, CL("4", "content-length", "5")), data(4, true)], [], true],
    [
      "two equal values",
      (c) => [c.headers(1, CL("4", "content-length", "4")), data(4, true)],
      ["stream 1", "data 1 4 end"],
      false,
    ],
    [
      "padding does not count (4 declared, 4 bytes padded with 10)",
      (c) => [
        c.headers(1, CL("4")),
        frame(
          FrameType.DATA,
          Flag.PADDED | Flag.END_STREAM,
          1,
          Buffer.concat([Buffer.from([10]), Buffer.alloc(14)]),
        ),
      ],
      ["stream 1", "data 1 4 end"],
      false,
    ],
    [
      "none declared: any length",
      (c) => [c.headers(1, REQUEST), data(7, true)],
      ["stream 1", "data 1 7 end"],
      false,
    ],
  ];
  for (const [name, frames, events, reset] of requestRows) {
    it(`request: ${name} → ${reset ? "RST_STREAM PROTOCOL_ERROR" : "delivered"}`, () => {
      const c = server();
      c.send(...frames(c));
      assert.deepEqual(
        c.events.map((e) => e.replace(" /pkg.Echo/Echo", "")),
        events,
      );
      assert.deepEqual(rstCodes(c.take()), reset ? [`1:${ErrorCode.PROTOCOL_ERROR}`] : []);
      assert.equal(c.conn.state, "open");
    });
  }

  // Client role, a response on stream 1: frames → the owner's events and whether we reset it.
  const responseRows: [string, (e: HpackEncoder) => Buffer[], string[], boolean][] = [
    [
      "5 declared, 5 sent, trailers",
      (e) => [
        rhead(e, [":status", "200", "content-length", "5"], 0),
        data(5, false),
        rhead(e, ["grpc-status", "0"], Flag.END_STREAM),
      ],
      ["headers", "data 5", "headers end"],
      false,
    ],
    [
      "5 declared, 6 sent",
      (e) => [rhead(e, [":status", "200", "content-length", "5"], 0), data(6, false)],
      ["headers", "reset 1"],
      true,
    ],
    [
      "5 declared, 3 sent, trailers",
      (e) => [
        rhead(e, [":status", "200", "content-length", "5"], 0),
        data(3, false),
        rhead(e, ["grpc-status", "0"], Flag.END_STREAM),
      ],
      ["headers", "data 3", "reset 1"],
      true,
    ],
    [
      "5 declared on a trailers-only response",
      (e) => [rhead(e, [":status", "200", "content-length", "5", "grpc-status", "0"], Flag.END_STREAM)],
      ["reset 1"],
      true,
    ],
    [
      "5 declared on a 204 (no content whatever it declares)",
      (e) => [rhead(e, [":status", "204", "content-length", "5"], Flag.END_STREAM)],
      ["headers end"],
      false,
    ],
  ];
  for (const [name, frames, events, reset] of responseRows) {
    it(`response: ${name} → ${reset ? "RST_STREAM PROTOCOL_ERROR" : "delivered"}`, () => {
      const got: string[] = [];
      const owner: StreamOwner = {
        onHeaders: (_s, _h, end) => got.push(`headers${end ? " end" : ""}`),
        onData: (_s, d, end) => got.push(`data ${d.length}${end ? " end" : ""}`),
        onReset: (_s, code) => got.push(`reset ${code}`),
        onWritable: () => {},
      };
      const conn = new Http2Connection("client", { onOutput: () => {} });
      conn.start();
      conn.receive(settingsFrame([]), 0);
      conn.openStream(REQUEST, true, owner);
      conn.takeOutput();
      conn.receive(Buffer.concat(frames(new HpackEncoder())), 0);
      assert.deepEqual(got, events);
      const out: F[] = [];
      new FrameReader(1 << 24).push(Buffer.concat(conn.takeOutput() ?? []), (type, flags, id, payload) =>
        out.push({ type, flags, id, payload }),
      );
      assert.deepEqual(rstCodes(out), reset ? [`1:${ErrorCode.PROTOCOL_ERROR}`] : []);
      assert.equal(conn.state, "open");
    });
  }
});

/** A response HEADERS frame on stream 1 (END_HEADERS and `flags`). */
function rhead(e: HpackEncoder, list: string[], flags: number): Buffer {
  return frame(FrameType.HEADERS, Flag.END_HEADERS | flags, 1, e.encode(list));
}

describe("HTTP/2 connection: graceful close", () => {
  it("sends GOAWAY 2^31-1 and a PING, then GOAWAY with the last stream id when the PING returns, then drains", () => {
    const c = server();
    c.send(c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM));
    c.take();
    c.conn.shutdown();
    const first = c.take();
    assert.deepEqual(
      first.map((f) => f.type),
      [FrameType.GOAWAY, FrameType.PING],
    );
    assert.equal(first[0]!.payload.readUInt32BE(0), 2 ** 31 - 1);
    c.send(pingFrame(true, first[1]!.payload));
    const final = c.take();
    assert.equal(final[0]!.type, FrameType.GOAWAY);
    assert.equal(final[0]!.payload.readUInt32BE(0), 1);
    assert.equal(c.drained, 0);
    c.conn.sendHeaders(c.streams[0]!, [":status", "200", "grpc-status", "0"], true);
    assert.equal(c.drained, 1);
  });
});

describe("HTTP/2 connection (client role)", () => {
  it("opens streams, and a GOAWAY refuses the ones above its last stream id", () => {
    const events: string[] = [];
    const owner: StreamOwner = {
      onHeaders: (s, h) => events.push(`headers ${s.id} ${h.join(",")}`),
      onData: () => {},
      onReset: (s, code, byPeer) => events.push(`reset ${s.id} ${code}${byPeer ? " by peer" : ""}`),
      onWritable: () => {},
    };
    let goaway = "";
    const conn = new Http2Connection("client", {
      onOutput: () => {},
      onGoaway: (last, code) => (goaway = `${last} ${code}`),
    });
    conn.start();
    const out = Buffer.concat(conn.takeOutput() ?? []);
    assert.ok(out.subarray(0, CONNECTION_PREFACE.length).equals(CONNECTION_PREFACE));
    conn.receive(settingsFrame([[SettingId.MAX_CONCURRENT_STREAMS, 2]]), 0);
    assert.ok(conn.remoteSettingsSeen);
    const a = conn.openStream(REQUEST, false, owner)!;
    const b = conn.openStream(REQUEST, false, owner)!;
    assert.equal(conn.openStream(REQUEST, false, owner), undefined, "past the peer's MAX_CONCURRENT_STREAMS");
    assert.deepEqual([a.id, b.id], [1, 3]);
    const encoder = new HpackEncoder();
    conn.receive(frame(FrameType.HEADERS, Flag.END_HEADERS, 1, encoder.encode([":status", "200"])), 0);
    conn.receive(Buffer.concat([goawayFrame(1, ErrorCode.NO_ERROR), SETTINGS_ACK]), 0);
    assert.deepEqual(events, ["headers 1 :status,200", `reset 3 ${ErrorCode.REFUSED_STREAM} by peer`]);
    assert.equal(goaway, `1 ${ErrorCode.NO_ERROR}`);
    assert.equal(conn.canOpenStream(), false);
  });
});

describe("HTTP/2 connection: output written in place", () => {
  it("keeps no caller buffer: DATA queued behind small windows is a copy, its slabs reused only once drained and written (poisoned pool)", () => {
    poisonFreedSlabs(true);
    try {
      const c = server();
      c.send(
        settingsFrame([[SettingId.INITIAL_WINDOW_SIZE, 0]]),
        c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM),
      );
      c.take();
      const s = c.streams[0]!;
      const sent: Buffer[] = [];
      const received: Buffer[] = [];
      const reader = new FrameReader(1 << 24);
      // Output is parsed only once its write is reported, as a socket would read it; each batch is
      // reported written one step later, so slabs are recycled while newer batches are in flight.
      let inFlight: { pieces: Buffer[]; seq: number } | undefined;
      const flush = (): void => {
        if (inFlight !== undefined) {
          for (const b of inFlight.pieces)
            reader.push(b, (type, _flags, _id, payload) => {
              if (type === FrameType.DATA) received.push(Buffer.from(payload));
            });
          c.conn.outputWritten(inFlight.seq);
        }
        const pieces = c.conn.takeOutput();
        inFlight = pieces === undefined ? undefined : { pieces, seq: c.conn.outputSeq };
      };
      const scratch = Buffer.alloc(70_000);
      let x = 11;
      for (let i = 0; i < 300; i++) {
        x = (x * 1103515245 + 12345) % 2147483648;
        // Small (plain copies) and large (slab) pieces mixed, some larger than a slab.
        const n = i % 5 === 0 ? 1 + (x % 200) : 1 + ((x >>> 4) % 69_000);
        const piece = scratch.subarray(0, n);
        piece.fill(i & 0xff);
        sent.push(Buffer.from(piece));
        c.conn.sendData(s, piece, i === 299);
        // The caller reuses its buffer at once.
        scratch.fill(0x55);
        if (i % 3 === 0) c.send(windowUpdateFrame(1, 1 + ((x >>> 3) % 90_000)), windowUpdateFrame(0, 90_000));
        if (i % 4 === 0) flush();
      }
      for (let k = 0; k < 1000 && !s.closed; k++) {
        c.send(windowUpdateFrame(1, 50_000), windowUpdateFrame(0, 50_000));
        flush();
      }
      flush();
      flush();
      assert.equal(s.closed, true);
      assert.deepEqual(Buffer.concat(received), Buffer.concat(sent));
    } finally {
      poisonFreedSlabs(false);
    }
  });
  it("DATA of assorted sizes (copied behind their header, or queued as views) comes out in order, byte for byte, across slab boundaries, and nothing taken is written again", () => {
    const c = server({ initialWindowSize: 1 << 30 });
    // A client window large enough for everything.
    c.send(
      frame(FrameType.SETTINGS, 0, 0, Buffer.from([0, 4, 0x3f, 0xff, 0xff, 0xff])),
      frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.from([0x3f, 0xff, 0, 0])),
      c.headers(1, REQUEST, Flag.END_HEADERS | Flag.END_STREAM),
    );
    c.take();
    const s = c.streams[0]!;
    // Sizes straddle the 1 KiB copy limit and, summed, the 16 KiB slab many times over; a
    // deterministic sequence so that a frame header lands at every distance from a slab's end.
    const sent: Buffer[] = [];
    // The output as taken (views, as a socket would hold them), parsed only at the end: a later frame
    // written into memory already handed out would show here.
    const taken: Buffer[] = [];
    let x = 7;
    for (let i = 0; i < 400; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      const piece = Buffer.alloc(1 + ((x >>> 8) % 3000), i & 0xff);
      sent.push(piece);
      c.conn.sendData(s, piece, i === 399);
      // Some output is taken mid-way, as a flush would.
      if (i % 37 === 0) taken.push(...(c.conn.takeOutput() ?? []));
    }
    taken.push(...(c.conn.takeOutput() ?? []));
    const received: Buffer[] = [];
    const ids = new Set<number>();
    const reader = new FrameReader(1 << 24);
    for (const b of taken) {
      reader.push(b, (type, _flags, id, payload) => {
        assert.equal(type, FrameType.DATA);
        ids.add(id);
        received.push(Buffer.from(payload));
      });
    }
    assert.deepEqual([...ids], [1]);
    assert.equal(received.length, sent.length);
    assert.deepEqual(Buffer.concat(received), Buffer.concat(sent));
  });
});
