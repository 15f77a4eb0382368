import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../core/errors.ts";
import { decodeMember, encodeMember, formatEtcdTarget, parseEtcdHosts, parseEtcdUrl } from "./etcd-target.ts";

test("etcd:// URLs give the hosts as client URLs and the prefix without trailing slashes", () => {
  assert.deepEqual(parseEtcdUrl("etcd://127.0.0.1:2379/services/echo/", "discovery"), {
    hosts: ["http://127.0.0.1:2379"],
    prefix: "services/echo",
  });
  assert.deepEqual(parseEtcdUrl("etcd://a:1,b:2//x", "d"), {
    hosts: ["http://a:1", "http://b:2"],
    prefix: "/x",
  });
  assert.equal(formatEtcdTarget(parseEtcdUrl("etcd://a:1,b:2/p", "d")), "etcd://a:1,b:2/p");
});

test("bad etcd URLs and host lists are ConfigErrors naming the field", () => {
  const cases: [string, RegExp][] = [
    ["dns://a:1/p", /is not etcd:\/\/HOST:PORT\/PREFIX/],
    ["etcd://a:1", /no key prefix/],
    ["etcd://a:1/", /prefix is empty/],
    ["etcd:///p", /names no etcd host/],
    ["etcd://a/p", /HOST:PORT/],
    ["etcd://a:99999/p", /above 65535/],
    ["etcd://unix:/x/p", /./],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseEtcdUrl(text, "clusters.x.discovery"),
      (err: unknown) =>
        err instanceof ConfigError && err.field === "clusters.x.discovery" && message.test(err.message),
      text,
    );
  }
  assert.throws(() => parseEtcdHosts("https://a:1", "--etcd"), /TLS/);
  assert.throws(() => parseEtcdHosts(" , ", "--etcd"), /at least one/);
  assert.deepEqual(parseEtcdHosts("http://a:1, b:2", "--etcd"), ["http://a:1", "http://b:2"]);
});

test("a member record round-trips; version becomes a label; bad values say what is wrong", () => {
  const e = decodeMember(encodeMember({ address: "[::1]:5", weight: 2, labels: { z: "a" }, version: "v1" }));
  assert.deepEqual(e, {
    key: "[::1]:5",
    address: { kind: "tcp", host: "::1", port: 5 },
    weight: 2,
    labels: { z: "a", version: "v1" },
  });
  assert.deepEqual(decodeMember('{"address":"unix:/run/x.sock"}'), {
    key: "unix:/run/x.sock",
    address: { kind: "unix", path: "/run/x.sock" },
    weight: 1,
    labels: {},
  });
  assert.equal(decodeMember("nope"), "the value is not JSON");
  assert.equal(decodeMember("[1]"), "the value is not a JSON object");
  assert.equal(decodeMember("{}"), "address: missing or not a string");
  assert.match(String(decodeMember('{"address":"x"}')), /HOST:PORT/);
  assert.equal(decodeMember('{"address":"a:1","weight":0}'), "weight: must be a number > 0");
  assert.equal(decodeMember('{"address":"a:1","labels":{"k":1}}'), "labels.k: must be a string");
  assert.equal(decodeMember('{"address":"a:1","version":3}'), "version: must be a string");
});
