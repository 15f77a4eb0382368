import assert from "node:assert/strict";
import { it } from "node:test";
import { createDefaultRegistry } from "../core/policies/registry.ts";
import { StaticDiscovery } from "../discovery/static.ts";
import { systemClock, systemRandom } from "../platform/system.ts";
import { Channel } from "./channel.ts";

function channel(policy: string): Channel {
  return new Channel({
    name: "default",
    discovery: new StaticDiscovery([]),
    target: "static",
    policy: createDefaultRegistry().resolve(policy, {}),
    deps: { clock: systemClock, random: systemRandom },
  });
}

it("changes resume's settings live, and says when another policy needs a restart", () => {
  const c = channel("resume");
  assert.equal(c.reconfigurePolicy("resume", { variance: 2, backlogHistory: 5 }), true);
  assert.throws(() => c.reconfigurePolicy("resume", { variance: -1 }), /policy\.variance/);
  assert.equal(c.reconfigurePolicy("least_request", {}), false);
  assert.equal(channel("round_robin").reconfigurePolicy("round_robin", {}), false);
});
