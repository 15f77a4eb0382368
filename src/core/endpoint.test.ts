import assert from "node:assert/strict";
import { it } from "node:test";
import { applyUpdate } from "./discovery.ts";
import { formatAddress, parseAddress, staticEndpoint } from "./endpoint.ts";

it("parses TCP, bracketed IPv6 and unix addresses and formats them back", () => {
  const table: Array<[string, string]> = [
    ["127.0.0.1:50051", "127.0.0.1:50051"],
    ["localhost:1", "localhost:1"],
    ["[::1]:8080", "[::1]:8080"],
    ["unix:/run/a.sock", "unix:/run/a.sock"],
    ["unix:///run/b.sock", "unix:/run/b.sock"],
    [" 10.0.0.1:443 ", "10.0.0.1:443"],
  ];
  for (const [text, formatted] of table)
    assert.equal(formatAddress(parseAddress(text, "f")), formatted, text);
});

it("rejects malformed addresses with a message naming the field", () => {
  const bad: Array<[string, RegExp]> = [
    ["nohost", /is not HOST:PORT or unix:PATH/],
    [":50051", /is not HOST:PORT/],
    ["host:", /has no valid port/],
    ["host:http", /has no valid port/],
    ["host:70000", /above 65535/],
    ["::1:80", /write IPv6 hosts as \[HOST\]:PORT/],
    ["[::1]80", /is not \[IPV6\]:PORT/],
    ["unix:", /empty unix socket path/],
  ];
  for (const [text, re] of bad) {
    assert.throws(
      () => parseAddress(text, "backends[2]"),
      (e: Error) => e.message.startsWith("backends[2]: ") && re.test(e.message),
      text,
    );
  }
});

it("applies discovery updates without touching the previous map", () => {
  const a = staticEndpoint({ kind: "tcp", host: "a", port: 1 });
  const b = staticEndpoint({ kind: "tcp", host: "b", port: 1 });
  const start = applyUpdate(new Map(), { kind: "reset", endpoints: [a] });
  const added = applyUpdate(start, { kind: "add", endpoints: [b] });
  assert.deepEqual([...start.keys()], ["a:1"]);
  assert.deepEqual([...added.keys()], ["a:1", "b:1"]);
  assert.deepEqual([...applyUpdate(added, { kind: "remove", keys: ["a:1"] }).keys()], ["b:1"]);
  assert.equal(applyUpdate(added, { kind: "not-found" }).size, 0);
});
