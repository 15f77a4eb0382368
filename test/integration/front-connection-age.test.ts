// Max connection age: a client's one long-lived connection, behind a connection-level balancer, ends up
// spread over the balancers behind it because each roster lb sends GOAWAY when the connection is old.
import assert from "node:assert/strict";
import net from "node:net";
import { it } from "node:test";
import { staticEndpoint } from "../../src/core/endpoint.ts";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { type Lb, startLb } from "../../src/proxy/lb.ts";
import { type EchoBackend, EchoClient, startEchoBackend } from "../support/echo-backend.ts";

/** A TCP proxy handing each new connection to the next target in turn (like an L4 balancer). */
async function connectionBalancer(ports: number[]): Promise<{ port: number; close(): void }> {
  let next = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port: ports[next++ % ports.length]! });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

it("moves one client connection across balancers behind an L4 front by sending GOAWAY at max age", async () => {
  const backends: EchoBackend[] = [];
  const lbs: Lb[] = [];
  try {
    for (const id of ["a", "b"]) {
      const backend = await startEchoBackend({ id });
      backends.push(backend);
      lbs.push(
        await startLb({
          listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
          backends: [staticEndpoint({ kind: "tcp", host: "127.0.0.1", port: backend.port })],
          policy: createDefaultRegistry().resolve("round_robin", {}),
          limits: { maxConnectionAgeMs: 300, maxConnectionAgeGraceMs: 1000 },
        }),
      );
    }
    const front = await connectionBalancer(lbs.map((l) => l.server.port!));
    const client = new EchoClient(`127.0.0.1:${front.port}`);
    const seen = new Map<string, number>();
    const failures: string[] = [];
    const until = Date.now() + 2500;
    // Bounded by time: sequential calls over ~2.5 s, long enough for several max-age GOAWAYs.
    while (Date.now() < until) {
      try {
        const reply = await client.echo({ message: "hi" }, { deadlineMs: 5000 });
        seen.set(reply.served_by, (seen.get(reply.served_by) ?? 0) + 1);
      } catch (err) {
        failures.push((err as Error).message);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    client.client.close();
    front.close();
    assert.deepEqual(failures, [], "no call fails across the GOAWAYs");
    assert.deepEqual(
      [...seen.keys()].sort(),
      ["a", "b"],
      `served by ${JSON.stringify(Object.fromEntries(seen))}`,
    );
  } finally {
    for (const l of lbs) await l.close(100);
    for (const b of backends) await b.close();
  }
});
