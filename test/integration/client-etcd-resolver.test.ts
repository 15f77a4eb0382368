// The `etcd:` resolver in a plain grpc-js client (src/client/lb/etcd-resolver.ts), against a real etcd
// (Debian's etcd-server) on loopback ports: the channel's endpoints follow the members under a prefix.
import assert from "node:assert/strict";
import { after, before, it } from "node:test";
import { registerRosterPolicies, rosterServiceConfig } from "../../src/client/lb/index.ts";
import { parseAddress } from "../../src/core/endpoint.ts";
import { EtcdRegistration } from "../../src/discovery/etcd-registration.ts";
import { parseEtcdHosts } from "../../src/discovery/etcd-target.ts";
import { type EchoBackend, EchoClient, startEchoBackend, waitFor } from "../support/echo-backend.ts";
import { type EtcdServer, startEtcd } from "../support/etcd-server.ts";

let etcd: EtcdServer;
let backends: EchoBackend[] = [];

before(async () => {
  registerRosterPolicies();
  etcd = await startEtcd();
  backends = await Promise.all([0, 1, 2].map((i) => startEchoBackend({ id: `m${i}` })));
});
after(async () => {
  await Promise.all(backends.map((b) => b.close()));
  await etcd?.dispose();
});

const register = (prefix: string, b: EchoBackend) =>
  new EtcdRegistration({
    target: { hosts: parseEtcdHosts(etcd.endpoint, "etcd"), prefix },
    address: parseAddress(b.address, b.id),
  });

it("a grpc-js client on etcd://HOST:PORT/PREFIX calls the registered members and follows joins and leaves", {
  timeout: 30_000,
}, async () => {
  const [m0, m1, m2] = backends as [EchoBackend, EchoBackend, EchoBackend];
  const r0 = register("client/echo", m0);
  const r1 = register("client/echo", m1);
  await Promise.all([r0.start(), r1.start()]);
  const client = new EchoClient(`etcd://${etcd.endpoint}/client/echo`, {
    "grpc.service_config": rosterServiceConfig("round_robin"),
    "grpc.use_local_subchannel_pool": 1,
  });
  const seen: string[] = [];
  let stopped = false;
  const failures: string[] = [];
  const lanes = Promise.all(
    [0, 1, 2, 3].map(async () => {
      while (!stopped) {
        try {
          seen.push((await client.echo({ message: "x" }, { deadlineMs: 5000 })).served_by);
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    }),
  );
  try {
    await waitFor(() => seen.includes("m0") && seen.includes("m1"), 10_000, "calls on m0 and m1");
    assert.ok(!seen.includes("m2"));
    const r2 = register("client/echo", m2);
    await r2.start();
    const joinedAt = seen.length;
    await waitFor(() => seen.slice(joinedAt).includes("m2"), 5000, "a call on m2 after it registered");
    await r0.close();
    // Calls already picked for m0 may finish there; after a moment none go to it.
    await new Promise((r) => setTimeout(r, 500));
    const leftAt = seen.length;
    await waitFor(() => seen.length >= leftAt + 100, 5000, "100 more calls");
    assert.ok(!seen.slice(leftAt).includes("m0"), "no call on m0 after it left");
    assert.ok(seen.slice(leftAt).includes("m1") && seen.slice(leftAt).includes("m2"));
    await r2.close();
  } finally {
    stopped = true;
    await lanes;
    client.close();
    await r1.close();
  }
  assert.deepEqual(failures, []);
});

it("a bad etcd: target fails calls with UNAVAILABLE naming the problem", async () => {
  const client = new EchoClient("etcd://127.0.0.1:2379", {});
  await assert.rejects(
    client.echo({ message: "x" }, { deadlineMs: 5000 }),
    (err: Error & { code?: number }) => {
      assert.equal(err.code, 14);
      assert.match(err.message, /roster etcd resolver: target: .*has no key prefix/);
      return true;
    },
  );
  client.close();
});
