// HTTP/2 attacks on the front of `roster lb`, each sent as raw frames over a plain socket (the raw
// client in test/support/raw-h2.ts builds them with Roster's own encoders; the balancer is judged by the
// bytes it sends back), while a grpc-js "victim" client makes Echo calls through the same balancer.
// For every attack: the victim's calls all succeed, the balancer still serves afterwards, and the
// attack gets its specific answer (GOAWAY code, RST_STREAM code, socket closed within a bound, buffers
// bounded). Each attack is bounded to a few seconds.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import {
  CONNECTION_PREFACE,
  ErrorCode,
  errorCodeName,
  Flag,
  FrameReader,
  FrameType,
  MAX_MAX_FRAME_SIZE,
  pingFrame,
  rstStreamFrame,
  SettingId,
  settingsFrame,
  windowUpdateFrame,
} from "../../src/http2/frame.ts";
import { defaultFrontKeepalive } from "../../src/proxy/front-keepalive.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import type { FrontLimits } from "../../src/proxy/server.ts";
import {
  type EchoBackend,
  EchoClient,
  echoPath,
  startEchoBackend,
  waitFor,
} from "../support/echo-backend.ts";
import { dataFrame, echoBody, grpcRequestHeaders, RawH2, rawFrame } from "../support/raw-h2.ts";

interface RelayConnection {
  /** RST_STREAM frames the balancer sent to the backend on this connection. */
  rstToBackend: number;
  /** GOAWAY codes the backend sent to the balancer on this connection. */
  goawaysFromBackend: number[];
}

/**
 * A TCP relay in front of a backend that reads the HTTP/2 frames going both ways: how many connections
 * the balancer opened, how many RST_STREAMs it sent on each, and every GOAWAY the backend answered.
 */
async function countingRelay(port: number): Promise<{
  port: number;
  conns: RelayConnection[];
  close(): Promise<void>;
}> {
  const conns: RelayConnection[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const c: RelayConnection = { rstToBackend: 0, goawaysFromBackend: [] };
    conns.push(c);
    const outbound = net.connect({ port, host: "127.0.0.1", noDelay: true });
    inbound.setNoDelay(true);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    const up = new FrameReader(MAX_MAX_FRAME_SIZE);
    let prefaceLeft = CONNECTION_PREFACE.length;
    inbound.on("data", (chunk: Buffer) => {
      outbound.write(chunk);
      let b = chunk;
      if (prefaceLeft > 0) {
        const n = Math.min(prefaceLeft, b.length);
        prefaceLeft -= n;
        b = b.subarray(n);
      }
      up.push(b, (type) => {
        if (type === FrameType.RST_STREAM) c.rstToBackend++;
      });
    });
    const down = new FrameReader(MAX_MAX_FRAME_SIZE);
    outbound.on("data", (chunk: Buffer) => {
      inbound.write(chunk);
      down.push(chunk, (type, _flags, _id, payload) => {
        if (type === FrameType.GOAWAY) c.goawaysFromBackend.push(payload.readUInt32BE(4));
      });
    });
    inbound.on("close", () => outbound.destroy());
    outbound.on("close", () => inbound.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  return {
    port: typeof address === "object" && address !== null ? address.port : 0,
    conns,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

interface VictimResult {
  ok: number;
  failed: string[];
  latencies: number[];
}

/** `concurrency` loops of Echo calls until stopped (each call bounded by its 5 s deadline). */
function startVictim(client: EchoClient, concurrency = 4): { stop(): Promise<VictimResult> } {
  let stopped = false;
  const result: VictimResult = { ok: 0, failed: [], latencies: [] };
  const loops = Array.from({ length: concurrency }, async (_, i) => {
    // Bounded by `stopped`, set by the test after its attack (a few seconds).
    while (!stopped) {
      const t = performance.now();
      try {
        const reply = await client.echo({ message: `victim ${i}` }, { deadlineMs: 5000 });
        if (reply.message !== `victim ${i}`) throw new Error(`wrong reply ${reply.message}`);
        result.ok++;
        result.latencies.push(performance.now() - t);
      } catch (err) {
        result.failed.push((err as Error).message);
      }
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return result;
    },
  };
}

describe("HTTP/2 attacks on the balancer's front, with a victim calling through it", () => {
  let backends: EchoBackend[] = [];
  let relays: Awaited<ReturnType<typeof countingRelay>>[] = [];
  let lb: Lb;
  let victimClient: EchoClient;
  const attackers: RawH2[] = [];
  const frontEvents: string[] = [];

  const limits: Partial<FrontLimits> = { maxConcurrentStreams: 100 };

  before(async () => {
    backends = await Promise.all([startEchoBackend({ id: "a0" }), startEchoBackend({ id: "a1" })]);
    relays = await Promise.all(backends.map((b) => countingRelay(b.port)));
    lb = await startLb({
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      backends: relays.map((r) => staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: r.port })),
      policy: createDefaultRegistry().resolve("round_robin", {}),
      limits,
      onFrontEvent: (message) => frontEvents.push(message),
    });
    await waitFor(() => lb.channel.status().every((b) => b.state === "ready"), 5000, "the backends ready");
    victimClient = new EchoClient(lb.server.address);
    await victimClient.echo({ message: "warm" }, { deadlineMs: 3000 });
  });

  after(async () => {
    for (const a of attackers) a.destroy();
    victimClient?.close();
    await lb?.close(500);
    for (const r of relays) await r.close();
    for (const b of backends) await b.close();
  });

  async function attacker(o?: Parameters<typeof RawH2.connect>[1]): Promise<RawH2> {
    const c = await RawH2.connect(lb.server.port!, o);
    attackers.push(c);
    return c;
  }

  /** Runs `attack` with the victim calling; asserts every victim call succeeded and the balancer serves. */
  async function underAttack<T>(attack: () => Promise<T>): Promise<{ result: T; victim: VictimResult }> {
    const victim = startVictim(victimClient);
    let result: T;
    try {
      result = await attack();
    } finally {
      // Let the victim run a little past the attack too (effects that come late).
      await new Promise((r) => setTimeout(r, 100));
    }
    const v = await victim.stop();
    assert.deepEqual(v.failed.slice(0, 5), [], `${v.failed.length} victim calls failed`);
    assert.ok(v.ok > 0, "the victim made no call at all");
    // The balancer still takes new connections and calls.
    const fresh = new EchoClient(lb.server.address);
    try {
      const reply = await fresh.echo({ message: "after" }, { deadlineMs: 3000 });
      assert.equal(reply.message, "after");
    } finally {
      fresh.close();
    }
    return { result, victim: v };
  }

  test("rapid reset (CVE-2023-44487): GOAWAY ENHANCE_YOUR_CALM, socket closed, resets reaching the backends bounded", async () => {
    const calls0 = backends.map((b) => b.stats().calls);
    const conns0 = relays.map((r) => r.conns.length);
    let goaways = 0;
    let streamsSent = 0;
    const { victim } = await underAttack(async () => {
      const until = Date.now() + 2500;
      // Bounded by the clock and 40 connections.
      for (let n = 0; n < 40 && Date.now() < until; n++) {
        const a = await attacker();
        const frames: Buffer[] = [];
        for (let i = 0; i < 500; i++) {
          const id = 1 + 2 * i;
          frames.push(
            a.headersFrame(id, grpcRequestHeaders(), { endStream: false }),
            dataFrame(id, echoBody("x"), true),
            rstStreamFrame(id, ErrorCode.CANCEL),
          );
        }
        streamsSent += 500;
        a.send(...frames);
        const g = await a.goaway(2000);
        assert.equal(errorCodeName(g.code), "ENHANCE_YOUR_CALM", g.debug);
        goaways++;
        await a.closedWithin(2000);
      }
    });
    const seen = backends.map((b, i) => b.stats().calls - calls0[i]!);
    const newConns = relays.map((r, i) => r.conns.length - conns0[i]!);
    const rsts = relays.map((r) => r.conns.map((c) => c.rstToBackend));
    const backendGoaways = relays.flatMap((r) => r.conns.flatMap((c) => c.goawaysFromBackend));
    console.log(
      `rapid reset: ${goaways} attacker connections, ${streamsSent} streams sent; backends saw ${seen} calls (victim ${victim.ok}); backend connections opened ${newConns}; RST_STREAMs per backend connection ${JSON.stringify(rsts)}; backend GOAWAYs ${backendGoaways.map(errorCodeName)}`,
    );
    assert.ok(goaways >= 5, `only ${goaways} attacker connections in the time`);
    // Each attacker connection got at most ~100 streams through (the premature-reset rule's minimum)…
    const attackCalls = seen.reduce((a, b) => a + b, 0) - victim.ok - 1;
    assert.ok(attackCalls <= goaways * 110, `${attackCalls} attack streams reached the backends`);
    // …and no backend connection carried more resets than the budget (500) plus a read's worth, well
    // under nghttp2's 1000 at which the backend closes the balancer's connection.
    for (const perConn of rsts)
      for (const n of perConn) assert.ok(n <= 700, `${n} RST_STREAMs on one connection`);
    // The backends' own defence never fired: no GOAWAY with an error to the balancer.
    assert.deepEqual(backendGoaways.filter((c) => c !== ErrorCode.NO_ERROR).map(errorCodeName), []);
  });
});
