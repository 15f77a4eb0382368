import assert from "node:assert/strict";
import { test } from "node:test";
import { loadLbConfig } from "./lb.ts";

test("live settings overlay the flags, are validated like a file, and their errors name the key", () => {
  const flags = { backend: ["127.0.0.1:1", "127.0.0.1:2"], policy: "least_request" };
  assert.equal(loadLbConfig(flags).clusters.get("default")!.policy.name, "least_request");
  const live = loadLbConfig(flags, {
    text: "policy: { name: round_robin }\nqueueTimeoutMs: 500\n",
    where: "etcd k",
  });
  assert.equal(live.clusters.get("default")!.policy.name, "round_robin");
  assert.equal(live.queueTimeoutMs, 500);
  // A live membership replaces the flags' one, whichever kind.
  const members = loadLbConfig(flags, { text: "discovery: etcd://127.0.0.1:2379/x\n", where: "etcd k" });
  assert.deepEqual(members.clusters.get("default")!.backends, []);
  assert.equal(members.clusters.get("default")!.discovery?.kind, "etcd");
  const cases: Array<[string, RegExp]> = [
    ["policy: fastest\n", /^etcd k: policy: unknown policy "fastest"/],
    ["policy: [\n", /^etcd k: is not valid YAML/],
    ["polcy: round_robin\n", /^etcd k: unknown setting "polcy"/],
    ["settings: etcd://h:1/other\n", /^etcd k: settings: cannot be set from the live settings/],
  ];
  for (const [text, re] of cases)
    assert.throws(
      () => loadLbConfig(flags, { text, where: "etcd k" }),
      (err: Error) => re.test(err.message),
      text,
    );
  assert.throws(
    () => loadLbConfig({ ...flags, settings: "etcd://h:1/" }),
    /^ConfigError: --settings: .*names no key/,
  );
});
