// roster serve while its only worker restarts: calls made in the gap wait for the successor (bounded
// by their deadline) instead of failing at once with "no backends".
import assert from "node:assert/strict";
import { after, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type RosterServer, serve } from "../../src/server/index.ts";
import { createDemoClient } from "../support/demo-client.ts";
import { waitFor } from "../support/echo-backend.ts";

const example = fileURLToPath(new URL("../../examples/echo-service.ts", import.meta.url));

let server: RosterServer | undefined;
after(async () => {
  await server?.close();
});

it("calls made while the only worker restarts after a crash wait for its successor and succeed", {
  timeout: 60_000,
}, async () => {
  server = await serve({ module: example, workers: 1, listen: { kind: "tcp", host: "127.0.0.1", port: 0 } });
  const s = server;
  const client = createDemoClient(s.address);
  try {
    await client.echo("Echo", 0, 10_000);
    const pid = s.workers()[0]!.pid!;
    process.kill(pid, "SIGKILL");
    await waitFor(
      () => s.workers()[0]!.pid !== pid || s.workers()[0]!.state !== "ready",
      10_000,
      "the crash to be seen",
    );
    // The worker is gone and its successor not ready: these calls find no ready backend.
    const stateThen = s.workers()[0]!.state;
    const during = await Promise.allSettled(Array.from({ length: 20 }, () => client.echo("Echo", 0, 20_000)));
    const failed = during
      .filter((r) => r.status === "rejected")
      .map((r) => String((r as PromiseRejectedResult).reason));
    assert.deepEqual(failed, [], "calls made during the restart failed");
    assert.notEqual(stateThen, "ready", "the calls were not made in the gap");
    assert.equal(s.workers()[0]!.state, "ready");
    assert.equal(s.workers()[0]!.restarts, 1);
  } finally {
    client.close();
  }
});
