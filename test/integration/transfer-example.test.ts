// examples/transfer-client.ts runs against examples/transfer-service.ts (served in its own process) and
// shows what it says: an upload shrunk by zstd, a download with a matching digest, functions by name
// with heartbeats, and the UNIMPLEMENTED message. Its output is read; no timing is asserted.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import { runExample } from "../support/run-example.ts";

const EXAMPLE = fileURLToPath(new URL("../../examples/transfer-client.ts", import.meta.url));

it("examples/transfer-client.ts uploads, downloads and calls functions by name", {
  timeout: 90_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "roster-transfer-example-"));
  const { code, out } = await runExample(EXAMPLE, { ROSTER_TRANSFER_DIR: dir });
  rmSync(dir, { recursive: true, force: true });
  assert.equal(code, 0, out);
  assert.match(out, /^ {2}uploaded 64 \/ 64 MiB$/m);
  const up = /^upload: 67108864 bytes, (\d+) on the wire/m.exec(out);
  assert.ok(up, out);
  assert.ok(Number(up[1]) < 67108864 / 4, out);
  assert.match(out, /^download: 67108864 bytes, digest matches$/m);
  assert.match(out, /^add\(2, 40\) = 42$/m);
  assert.match(out, /^train: \{"accuracy":0.97\} after [1-9]\d* heartbeats$/m);
  assert.match(out, /^predict: UNIMPLEMENTED: unknown function "predict"; known: add, reverse, train$/m);
});
