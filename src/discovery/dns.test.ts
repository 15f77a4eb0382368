import assert from "node:assert/strict";
import { test } from "node:test";
import type { DiscoveryUpdate } from "../core/discovery.ts";
import { DnsDiscovery, type DnsDiscoveryEvent, formatDnsTarget, parseDnsUrl, type Resolve } from "./dns.ts";

test("dns:// URLs: NAME:PORT, gRPC's dns:///NAME:PORT, an optional refresh; errors name the field", () => {
  assert.deepEqual(parseDnsUrl("dns://app.internal:50051", "d"), {
    host: "app.internal",
    port: 50051,
    refreshMs: 30_000,
  });
  assert.deepEqual(parseDnsUrl("dns:///app:1?refreshMs=250", "d"), { host: "app", port: 1, refreshMs: 250 });
  assert.equal(formatDnsTarget(parseDnsUrl("dns:///app:1?refreshMs=250", "d")), "dns://app:1?refreshMs=250");
  assert.throws(() => parseDnsUrl("dns://app", "discovery"), /^ConfigError: discovery: .*HOST:PORT/);
  assert.throws(() => parseDnsUrl("dns://app:1?refreshMs=5", "discovery"), /at least 100/);
  assert.throws(() => parseDnsUrl("dns://unix:/x", "discovery"), /is not dns:\/\/NAME:PORT/);
});

/** A resolver answering from a script, one answer per call (the last repeats). */
function scripted(answers: Array<string[] | NodeJS.ErrnoException>): Resolve & { calls: number } {
  const r = Object.assign(
    async (_host: string) => {
      const a = answers[Math.min(r.calls, answers.length - 1)]!;
      r.calls++;
      if (a instanceof Error) throw a;
      return a;
    },
    { calls: 0 },
  );
  return r;
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`getaddrinfo ${code} app`), { code });
}

async function collect(
  d: DnsDiscovery,
  resolver: { calls: number },
  calls: number,
): Promise<DiscoveryUpdate[]> {
  const abort = new AbortController();
  const updates: DiscoveryUpdate[] = [];
  const done = (async () => {
    for await (const u of d.watch("", abort.signal)) updates.push(u);
  })();
  const end = Date.now() + 5000;
  // Bounded: 5 s.
  while (resolver.calls < calls && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  abort.abort();
  await done;
  return updates;
}

const keysOf = (u: DiscoveryUpdate) => (u.kind === "reset" ? u.endpoints.map((e) => e.key) : u.kind);

test("each change of the address set is one reset; an unchanged answer yields nothing; a failure keeps the last set", async () => {
  const resolve = scripted([
    ["10.0.0.2", "10.0.0.1"],
    ["10.0.0.1", "10.0.0.2"],
    errno("EAI_AGAIN"),
    ["10.0.0.1", "10.0.0.3", "::1"],
  ]);
  const events: DnsDiscoveryEvent[] = [];
  const d = new DnsDiscovery({
    target: { host: "app", port: 7, refreshMs: 100 },
    resolve,
    onEvent: (e) => events.push(e),
  });
  const updates = await collect(d, resolve, 4);
  assert.deepEqual(updates.map(keysOf), [
    ["10.0.0.1:7", "10.0.0.2:7"],
    ["10.0.0.1:7", "10.0.0.3:7", "[::1]:7"],
  ]);
  assert.ok(
    events.some((e) => e.kind === "failed" && e.keeping === 2),
    JSON.stringify(events),
  );
});

test("a name that does not exist at first is not-found (calls fail saying so); it is found when it appears", async () => {
  const resolve = scripted([errno("ENOTFOUND"), errno("ENOTFOUND"), ["10.0.0.9"]]);
  const d = new DnsDiscovery({ target: { host: "app", port: 7, refreshMs: 100 }, resolve });
  const updates = await collect(d, resolve, 3);
  assert.deepEqual(updates.map(keysOf), ["not-found", ["10.0.0.9:7"]]);
});
