import assert from "node:assert/strict";
import { it } from "node:test";
import { FakeClock } from "../../../test/support/fake-clock.ts";
import { ScriptedRandom } from "../../../test/support/seeded-random.ts";
import { staticEndpoint } from "../endpoint.ts";
import { PendingRequests } from "../load/pending-requests.ts";
import type { Candidate, PickResult } from "../picker.ts";
import { leastRequest } from "./least-request.ts";

function candidates(n: number): Candidate[] {
  return Array.from({ length: n }, (_, i) => ({
    key: `w${i}`,
    endpoint: staticEndpoint({ kind: "unix", path: `/w${i}` }),
    load: new PendingRequests(),
  }));
}

const key = (r: PickResult) => (r.kind === "pick" ? r.candidate.key : r.kind);
const ctx = { path: "/p.S/M", header: () => undefined };

it("scans every candidate when there are no more than choiceCount, taking the least loaded", () => {
  const c = candidates(3);
  c[0]!.load.begin(0);
  c[2]!.load.begin(0);
  const p = leastRequest.create(leastRequest.parseConfig({ choiceCount: 3 }), {
    clock: new FakeClock(),
    random: new ScriptedRandom([0.99]),
  });
  assert.equal(key(p.update(c).pick(ctx)), "w1");
});

it("shares ties in turn during a full scan, so equal workers get equal calls", () => {
  const c = candidates(3);
  const picker = leastRequest
    .create(leastRequest.parseConfig({ choiceCount: 4 }), {
      clock: new FakeClock(),
      random: new ScriptedRandom([0]),
    })
    .update(c);
  assert.deepEqual(
    Array.from({ length: 6 }, () => key(picker.pick(ctx))),
    ["w0", "w1", "w2", "w0", "w1", "w2"],
  );
});
