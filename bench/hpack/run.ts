// Micro-benchmark of src/http2's HPACK on the blocks of one proxied gRPC call.
//   node --import tsx bench/hpack/run.ts [--rounds 7] [--iterations 200000] [--case NAME] [--json]
// Each case runs on one connection's decoder/encoder in steady state (the block is the second or
// later of its kind, as on a long-lived gRPC connection), warmed up first; the figure is the
// median over rounds of ns per operation (min beside it). Single-threaded, no I/O.
// The machine is shared: wall-clock figures move by 2-3x with other load; compare runs made
// back to back, and check `uptime` first.
import { parseArgs } from "node:util";
import { HpackDecoder, HpackEncoder } from "../../src/http2/hpack.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "7" },
    iterations: { type: "string", default: "200000" },
    case: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
const rounds = Number(args.rounds);
const iterations = Number(args.iterations);
if (!(Number.isInteger(rounds) && rounds > 0))
  throw new Error(`--rounds: a positive integer, got ${args.rounds}`);
if (!(Number.isInteger(iterations) && iterations > 0)) {
  throw new Error(`--iterations: a positive integer, got ${args.iterations}`);
}

// biome-ignore format: one header (name, value) per line
const REQUEST = [
  ":method", "POST",
  ":scheme", "http",
  ":path", "/pkg.Echo/Echo",
  ":authority", "127.0.0.1:50051",
  "content-type", "application/grpc",
  "te", "trailers",
  "grpc-timeout", "99m",
  "user-agent", "grpc-node-js/1.14.7",
  "grpc-accept-encoding", "identity,deflate,gzip",
];
// biome-ignore format: one header (name, value) per line
const RESPONSE = [
  ":status", "200",
  "content-type", "application/grpc+proto",
  "grpc-accept-encoding", "identity,deflate,gzip",
  "grpc-encoding", "identity",
];
const TRAILERS = ["grpc-status", "0", "grpc-message", ""];

/** A steady-state block: what the encoder sends for `list` once the table already holds it. */
function steadyBlock(list: string[]): { encoder: HpackEncoder; decoder: HpackDecoder; block: Buffer } {
  const encoder = new HpackEncoder();
  const decoder = new HpackDecoder();
  decoder.decode(encoder.encode(list));
  const block = encoder.encode(list);
  const r = decoder.decode(block);
  if (r.kind !== "ok" || r.headers.join("\n") !== list.join("\n"))
    throw new Error("bench setup: round trip failed");
  return { encoder, decoder, block };
}

let sink = 0;

type Case = { name: string; what: string; op: () => void; per?: number };

function cases(): Case[] {
  const req = steadyBlock(REQUEST);
  const resp = steadyBlock(RESPONSE);
  const trl = steadyBlock(TRAILERS);
  // One connection each way, as the proxy has: client→proxy, proxy→backend, backend→proxy, proxy→client.
  const front = steadyBlock(REQUEST).decoder;
  const back = new HpackEncoder();
  back.encode(REQUEST);
  const backResp = new HpackDecoder();
  const frontResp = new HpackEncoder();
  const r1 = new HpackEncoder();
  backResp.decode(r1.encode(RESPONSE));
  backResp.decode(r1.encode(TRAILERS));
  frontResp.encode(RESPONSE);
  frontResp.encode(TRAILERS);
  const respBlock = r1.encode(RESPONSE);
  const trlBlock = r1.encode(TRAILERS);

  // HPACK bomb: a 4 KiB entry then 10,000 one-byte references to it, list limit 64 KiB.
  const bombHead = [0x3f, 0xe1, 0x3f, 0x40, 6, ...Buffer.from("x-bomb"), 0x7f, 0x81, 0x1f];
  const bomb = new Uint8Array(bombHead.length + 4096 + 10_000);
  bomb.set(bombHead);
  bomb.fill(0x76, bombHead.length, bombHead.length + 4096);
  bomb.fill(0xbe, bombHead.length + 4096);

  return [
    {
      name: "decode-request",
      what: `decode request block (${req.block.length} B)`,
      op: () => {
        const r = req.decoder.decode(req.block);
        sink += r.kind === "ok" ? r.headers.length : -1;
      },
    },
    {
      name: "encode-request",
      what: "encode request list (9 fields)",
      op: () => {
        sink += req.encoder.encode(REQUEST).length;
      },
    },
    {
      name: "decode-response",
      what: `decode response headers (${resp.block.length} B)`,
      op: () => {
        const r = resp.decoder.decode(resp.block);
        sink += r.kind === "ok" ? r.headers.length : -1;
      },
    },
    {
      name: "encode-response",
      what: "encode response headers (4 fields)",
      op: () => {
        sink += resp.encoder.encode(RESPONSE).length;
      },
    },
    {
      name: "decode-trailers",
      what: `decode trailers (${trl.block.length} B)`,
      op: () => {
        const r = trl.decoder.decode(trl.block);
        sink += r.kind === "ok" ? r.headers.length : -1;
      },
    },
    {
      name: "encode-trailers",
      what: "encode trailers (2 fields)",
      op: () => {
        sink += trl.encoder.encode(TRAILERS).length;
      },
    },
    {
      name: "per-call",
      what: "one proxied call: 3 decodes + 3 encodes",
      op: () => {
        const a = front.decode(req.block);
        if (a.kind === "ok") sink += back.encode(a.headers).length;
        const b = backResp.decode(respBlock);
        if (b.kind === "ok") sink += frontResp.encode(b.headers).length;
        const c = backResp.decode(trlBlock);
        if (c.kind === "ok") sink += frontResp.encode(c.headers).length;
      },
    },
    {
      name: "cold-request",
      what: "first request on a new connection (new encoder + decoder)",
      op: () => {
        const d = new HpackDecoder();
        const r = d.decode(new HpackEncoder().encode(REQUEST));
        sink += r.kind === "ok" ? r.headers.length : -1;
      },
    },
    {
      name: "bomb",
      what: "HPACK bomb, per 1-byte reference past the limit",
      per: 10_001,
      op: () => {
        const r = new HpackDecoder({ maxTableSize: 8192 }).decode(bomb);
        sink += r.kind === "too-large" ? 1 : -1;
      },
    },
  ];
}

function measure(c: Case): { median: number; min: number } {
  const n = c.per === undefined ? iterations : Math.max(1, Math.floor(iterations / 1000));
  for (let i = 0; i < n; i++) c.op(); // warm-up: let V8 optimise
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) c.op();
    const t1 = process.hrtime.bigint();
    samples.push(Number(t1 - t0) / n / (c.per ?? 1));
  }
  samples.sort((a, b) => a - b);
  return { median: samples[Math.floor(samples.length / 2)]!, min: samples[0]! };
}

const all = cases();
const chosen = args.case === undefined ? all : all.filter((c) => c.name === args.case);
if (chosen.length === 0) throw new Error(`--case: one of ${all.map((c) => c.name).join(", ")}`);
const results = chosen.map((c) => ({ name: c.name, what: c.what, ...measure(c) }));
if (sink === 0) console.error("(sink 0)");
if (args.json) {
  console.log(JSON.stringify({ node: process.version, rounds, iterations, results }, null, 2));
} else {
  console.log(
    `node ${process.version}, ${rounds} rounds x ${iterations} iterations, ns per op (median / min)`,
  );
  for (const r of results) {
    console.log(
      `${r.name.padEnd(16)} ${r.median.toFixed(1).padStart(8)} ${r.min.toFixed(1).padStart(8)}   ${r.what}`,
    );
  }
}
