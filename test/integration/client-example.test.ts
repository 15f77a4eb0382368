// examples/client-echo.ts (`npm run example:client`) runs and shows what it says: the limiter holding
// 450 of 500 calls in its queue, every call answered or failed by the limiter, and the pool growing past
// one connection's 100 streams, then back to one channel. Its output is read; no timing is asserted.
import assert from "node:assert/strict";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import { runExample } from "../support/run-example.ts";

const EXAMPLE = fileURLToPath(new URL("../../examples/client-echo.ts", import.meta.url));

it("examples/client-echo.ts shows the limiter's queue, balancing, and the pool growing and shrinking", {
  timeout: 90_000,
}, async () => {
  const { code, out } = await runExample(EXAMPLE);
  assert.equal(code, 0, out);
  assert.match(out, /^one call: served by server-[12]$/m);
  assert.match(out, /^limiter, just after sending 500 calls: 50 running, 450 waiting$/m);
  // Every call either answered by a server or ended by the limiter (RESOURCE_EXHAUSTED), nothing else.
  const line = /^500 calls; answered per server: \{(.*)\} failed: \{(.*)\}$/m.exec(out);
  assert.ok(line, out);
  const counts = (text: string) =>
    [...text.matchAll(/'?([\w-]+)'?: (\d+)/g)].map(([, k, v]) => [k!, Number(v)] as const);
  const answered = counts(line[1]!);
  const failed = counts(line[2]!);
  assert.ok(
    failed.every(([k]) => k === "RESOURCE_EXHAUSTED"),
    out,
  );
  assert.equal(
    [...answered, ...failed].reduce((a, [, n]) => a + n, 0),
    500,
    out,
  );
  assert.deepEqual(answered.map(([k]) => k).sort(), ["server-1", "server-2"], out);
  const grew =
    /^pool with 300 calls of 200 ms at once on one server: grew to (\d+) channels, at most (\d+) calls on one$/m.exec(
      out,
    );
  assert.ok(grew, out);
  assert.ok(Number(grew[1]) >= 3, out);
  assert.ok(Number(grew[2]) <= 100, out);
  assert.match(out, /^pool when idle again: 1 channel$/m);
});
