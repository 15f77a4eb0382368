// roster serve --policy resume: workers learn skills per class (ORCA résumés), each class settles on
// few workers, and a killed worker's calls are handled as before while its skills return with its successor.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { type RosterServer, serve } from "../../src/server/index.ts";

const fixture = fileURLToPath(new URL("../fixtures/cache-service.ts", import.meta.url));
const protoPath = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));
const listen = { kind: "tcp", host: "127.0.0.1", port: 0 } as const;
const CLASSES = Array.from({ length: 8 }, (_, i) => `tenant-${i}`);

type Echo = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: { served_by: string }) => void,
) => void;

function client(target: string): { call(tenant: string): Promise<string>; close(): void } {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath, { keepCase: true })) as unknown as {
    roster: { demo: { Echo: grpc.ServiceClientConstructor } };
  };
  const c = new pkg.roster.demo.Echo(target, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Echo: Echo;
  };
  return {
    call: (tenant) =>
      new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        md.set("x-tenant", tenant);
        md.set("x-roster-class", "forged-by-client"); // replaced by the classifier
        c.Echo({ payload: Buffer.alloc(8) }, md, { deadline: Date.now() + 10_000 }, (err, res) =>
          err || !res ? reject(err) : resolve(res.served_by),
        );
      }),
    close: () => c.close(),
  };
}

/** Runs `total` calls over the classes in turn, `concurrency` at a time; class → worker → calls. */
async function run(
  c: ReturnType<typeof client>,
  total: number,
  concurrency: number,
  failures: string[],
): Promise<Map<string, Map<string, number>>> {
  const spread = new Map<string, Map<string, number>>();
  let next = 0;
  const lane = async () => {
    while (next < total) {
      const tenant = CLASSES[next++ % CLASSES.length]!;
      try {
        const worker = (await c.call(tenant)).replace(/-\d+$/, "");
        const m = spread.get(tenant) ?? new Map<string, number>();
        m.set(worker, (m.get(worker) ?? 0) + 1);
        spread.set(tenant, m);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return spread;
}

/** Per class, the share of its calls that went to its two busiest workers. */
function topTwoShares(spread: Map<string, Map<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [tenant, m] of spread) {
    const counts = [...m.values()].sort((a, b) => b - a);
    const total = counts.reduce((a, b) => a + b, 0);
    out[tenant] = ((counts[0] ?? 0) + (counts[1] ?? 0)) / total;
  }
  return out;
}

describe("roster serve --policy resume with 4 workers and 8 classes", () => {
  let server: RosterServer | undefined;
  const skillsDir = mkdtempSync(join(tmpdir(), "roster-skills-"));
  before(async () => {
    server = await serve({
      module: fixture,
      workers: 4,
      listen,
      policy: createDefaultRegistry().resolve("resume", {}),
      classifier: { header: "x-tenant" },
      skills: { history: 20, dir: skillsDir },
    });
  });
  after(async () => {
    await server?.close();
    rmSync(skillsDir, { recursive: true, force: true });
  });

  it("sends each class mostly to at most 2 workers once skills are learned", {
    timeout: 60_000,
  }, async () => {
    const c = client(server!.address);
    const failures: string[] = [];
    await run(c, 1600, 8, failures); // warm-up
    const spread = await run(c, 1600, 8, failures);
    c.close();
    assert.deepEqual(failures, []);
    const shares = topTwoShares(spread);
    const detail = JSON.stringify(
      Object.fromEntries([...spread].map(([k, m]) => [k, Object.fromEntries(m)])),
    );
    for (const [tenant, share] of Object.entries(shares)) {
      assert.ok(share >= 0.8, `${tenant}: top-2 share ${share.toFixed(2)}; spread ${detail}`);
    }
    // Every worker published a résumé naming classes, none of them the client's forged one.
    for (const b of server!.lb.channel.status()) {
      assert.ok(b.orca !== undefined && b.orca.classes > 0, `${b.key} has no skills`);
      assert.ok(!("forged-by-client" in b.orca.topSkills), `${b.key} learned the forged class`);
    }
  });

  it("handles a killed worker's calls as before, and its skills return with its successor", {
    timeout: 60_000,
  }, async () => {
    const c = client(server!.address);
    const failures: string[] = [];
    const before = server!.lb.channel.status().find((b) => b.key.startsWith("worker-1."));
    assert.ok(before?.orca !== undefined && before.orca.classes > 0, "worker 1 has skills before the kill");
    const learned = Object.keys(before.orca.topSkills);
    const load = run(c, 2000, 8, failures);
    await new Promise((r) => setTimeout(r, 1500));
    const victim = server!.workers().find((w) => w.worker === 1)!;
    process.kill(victim.pid!, "SIGKILL");
    await load;
    // Bounded wait for the successor's first résumé.
    let successor: ReturnType<RosterServer["lb"]["channel"]["status"]>[number] | undefined;
    for (let i = 0; i < 100 && successor?.orca === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      successor = server!.lb.channel
        .status()
        .find((b) => b.key.startsWith("worker-1.") && b.key !== before.key);
    }
    c.close();
    assert.deepEqual(failures, [], "idempotent calls all succeeded across the kill");
    assert.ok(successor?.orca !== undefined, "the new worker 1 published a résumé");
    assert.equal(
      server!.lb.channel.status().filter((b) => b.key === before.key).length,
      0,
      "old worker gone",
    );
    const reloaded = Object.keys(successor.orca.topSkills);
    assert.ok(
      learned.some((k) => reloaded.includes(k)),
      `skills before ${JSON.stringify(learned)}, after ${JSON.stringify(reloaded)}`,
    );
  });
});
