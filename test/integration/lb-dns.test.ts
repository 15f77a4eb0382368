// `roster lb` with members from DNS (dns://NAME:PORT): the name "localhost", resolved by getaddrinfo.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { parseDiscoveryUrl } from "../../src/discovery/target.ts";
import { startLb } from "../../src/proxy/lb.ts";
import { EchoClient, startEchoBackend } from "../support/echo-backend.ts";

test("a cluster whose members are a DNS name's addresses serves calls", async () => {
  const backend = await startEchoBackend({ id: "dns-member" });
  const events: string[] = [];
  const lb = await startLb({
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    clusters: new Map([
      [
        "default",
        {
          backends: [],
          discovery: parseDiscoveryUrl(`dns://localhost:${backend.port}?refreshMs=200`, "discovery"),
          policy: createDefaultRegistry().resolve("round_robin", {}),
        },
      ],
    ]),
    onDiscoveryEvent: (e) => events.push(e.kind),
  });
  const client = new EchoClient(`127.0.0.1:${lb.server.port}`);
  try {
    for (let i = 0; i < 5; i++) {
      const reply = await client.echo({ message: "x" }, { deadlineMs: 5000 });
      assert.equal(reply.served_by, "dns-member");
    }
    assert.ok([...lb.channel.backends()].some((b) => b.key === `127.0.0.1:${backend.port}`));
    assert.deepEqual(events.slice(0, 1), ["resolved"]);
  } finally {
    client.close();
    await lb.close(500);
    await backend.close();
  }
});
