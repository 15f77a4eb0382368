// EtcdDiscovery and EtcdRegistration against a real etcd (Debian's etcd-server) on loopback ports.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { DiscoveryUpdate } from "../../src/core/discovery.ts";
import { parseAddress } from "../../src/core/endpoint.ts";
import { EtcdDiscovery, type EtcdDiscoveryEvent } from "../../src/discovery/etcd.ts";
import { createEtcdClient } from "../../src/discovery/etcd-client.ts";
import { EtcdRegistration } from "../../src/discovery/etcd-registration.ts";
import { parseEtcdHosts } from "../../src/discovery/etcd-target.ts";
import { type EtcdServer, startEtcd } from "../support/etcd-server.ts";

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  await etcd?.dispose();
});

/** Reads a discovery's updates into `latest` (the endpoint keys of the last reset) until aborted. */
function follow(d: EtcdDiscovery, signal: AbortSignal) {
  const state = { latest: undefined as string[] | undefined, updates: 0 };
  const done = (async () => {
    for await (const u of d.watch("", signal)) {
      assert.equal(u.kind, "reset");
      state.latest = (u as Extract<DiscoveryUpdate, { kind: "reset" }>).endpoints.map((e) => e.key).sort();
      state.updates++;
    }
  })();
  return { state, done };
}

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  // Bounded by `ms`.
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const hosts = () => parseEtcdHosts(etcd.endpoint, "etcd");

test("registrations appear in the discovery's membership, and leave it when closed", async () => {
  const target = { hosts: hosts(), prefix: "t1/echo" };
  const abort = new AbortController();
  const d = new EtcdDiscovery({ target });
  const { state, done } = follow(d, abort.signal);
  await until("the first (empty) reset", () => state.latest !== undefined);
  assert.deepEqual(state.latest, []);
  const a = new EtcdRegistration({ target, address: parseAddress("127.0.0.1:1001", "a"), ttlSeconds: 2 });
  const b = new EtcdRegistration({
    target,
    address: parseAddress("127.0.0.1:1002", "b"),
    weight: 3,
    labels: { zone: "x" },
    version: "v7",
    ttlSeconds: 2,
  });
  await Promise.all([a.start(), b.start()]);
  await until("both members", () => state.latest?.length === 2);
  assert.deepEqual(state.latest, ["127.0.0.1:1001", "127.0.0.1:1002"]);
  await a.close();
  await until("a gone", () => state.latest?.length === 1);
  assert.deepEqual(state.latest, ["127.0.0.1:1002"]);
  await b.close();
  await until("b gone", () => state.latest?.length === 0);
  abort.abort();
  await done;
  d.close();
});

test("a member's weight, labels and version reach the endpoint; a bad value is left out and reported", async () => {
  const target = { hosts: hosts(), prefix: "t2" };
  const client = createEtcdClient(target.hosts, 3000);
  await client.put("t2/bad").value("{not json");
  const reg = new EtcdRegistration({
    target,
    address: parseAddress("127.0.0.1:2001", "a"),
    weight: 2.5,
    labels: { zone: "b" },
    version: "1.2.3",
    ttlSeconds: 2,
  });
  await reg.start();
  const events: EtcdDiscoveryEvent[] = [];
  const d = new EtcdDiscovery({ target, onEvent: (e) => events.push(e) });
  const abort = new AbortController();
  const it = d.watch("", abort.signal)[Symbol.asyncIterator]();
  const first = (await it.next()).value as Extract<DiscoveryUpdate, { kind: "reset" }>;
  assert.equal(first.endpoints.length, 1);
  assert.deepEqual(first.endpoints[0], {
    key: "127.0.0.1:2001",
    address: { kind: "tcp", host: "127.0.0.1", port: 2001 },
    weight: 2.5,
    labels: { zone: "b", version: "1.2.3" },
  });
  const bad = events.find((e) => e.kind === "bad-member");
  assert.ok(bad !== undefined && bad.kind === "bad-member" && bad.key === "t2/bad", JSON.stringify(events));
  abort.abort();
  await it.return?.();
  await reg.close();
  await client.delete().key("t2/bad");
  client.close();
  d.close();
});

test("a lease not kept alive expires and its member leaves (what a killed registrant leaves behind)", async () => {
  const target = { hosts: hosts(), prefix: "t3" };
  const client = createEtcdClient(target.hosts, 3000);
  const lease = client.lease(2, { autoKeepAlive: false });
  await lease.put("t3/127.0.0.1:3001").value(JSON.stringify({ address: "127.0.0.1:3001" }));
  const abort = new AbortController();
  const d = new EtcdDiscovery({ target });
  const { state, done } = follow(d, abort.signal);
  await until("the member", () => state.latest?.length === 1);
  const t0 = Date.now();
  await until("the lease's expiry", () => state.latest?.length === 0, 6000);
  // etcd expires a 2 s lease within a few seconds (its lessor checks every 500 ms).
  assert.ok(Date.now() - t0 < 6000);
  abort.abort();
  await done;
  d.close();
  client.close();
});

test("etcd down: the last members are kept, and on its return the prefix is read again and watched", async () => {
  const target = { hosts: hosts(), prefix: "t4" };
  const reg = new EtcdRegistration({ target, address: parseAddress("127.0.0.1:4001", "a"), ttlSeconds: 5 });
  await reg.start();
  const events: EtcdDiscoveryEvent[] = [];
  const abort = new AbortController();
  const d = new EtcdDiscovery({ target, onEvent: (e) => events.push(e) });
  const { state, done } = follow(d, abort.signal);
  await until("the member", () => state.latest?.length === 1);
  await etcd.stop();
  await until("the outage noticed", () => events.some((e) => e.kind === "unavailable"));
  const updatesDuringOutage = state.updates;
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(state.updates, updatesDuringOutage, "nothing yielded while etcd is down");
  assert.deepEqual(state.latest, ["127.0.0.1:4001"]);
  await etcd.start();
  await until("resynced", () => events.some((e) => e.kind === "synced" && e.reconnected), 10_000);
  assert.deepEqual(state.latest, ["127.0.0.1:4001"]);
  // The watch after the reconnection follows changes.
  const other = new EtcdRegistration({ target, address: parseAddress("127.0.0.1:4002", "b"), ttlSeconds: 5 });
  await other.start();
  await until("the new member", () => state.latest?.length === 2, 5000);
  await other.close();
  await reg.close();
  await until("both gone", () => state.latest?.length === 0, 5000);
  abort.abort();
  await done;
  d.close();
});
