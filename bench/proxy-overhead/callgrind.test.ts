// node --import tsx --test bench/proxy-overhead/callgrind.test.ts
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  dumpFiles,
  instructionsOf,
  parseCallgrindDump,
  parseVgdbList,
  valgrindProgram,
} from "./callgrind.ts";

// Shaped like a valgrind 3.19 dump of an idle process (callgrind_control -d).
const IDLE_DUMP = `# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 2331
cmd:  sleep 8
part: 1

desc: Timerange: Basic block 0 - 70930
desc: Trigger: dump

positions: line
events: Ir
summary: 0


fn=(0) 0x000000000001ab70
0 5

totals: 5
`;

describe("parseCallgrindDump", () => {
  it("reads pid, cmd, events and prefers totals over the header's summary", () => {
    const dump = parseCallgrindDump(IDLE_DUMP);
    assert.equal(dump.pid, 2331);
    assert.equal(dump.cmd, "sleep 8");
    assert.deepEqual(dump.events, ["Ir"]);
    assert.deepEqual(dump.totals, [5]);
    assert.equal(instructionsOf(dump), 5);
  });

  it("sums the totals of several parts, per event", () => {
    const text = [
      "pid: 7",
      "events: Ir Dr",
      "part: 1",
      "summary: 10 1",
      "totals: 100 10",
      "part: 2",
      "summary: 20 2",
      "totals: 250 20",
    ].join("\n");
    const dump = parseCallgrindDump(text);
    assert.deepEqual(dump.totals, [350, 30]);
    assert.equal(instructionsOf(dump), 350);
  });

  it("falls back to summary: when no totals: line is there", () => {
    const dump = parseCallgrindDump("pid: 9\nevents: Ir\nsummary: 123456789012\n");
    assert.equal(instructionsOf(dump), 123456789012);
  });

  it("does not take cost lines or fn= lines for totals", () => {
    const dump = parseCallgrindDump("events: Ir\nfn=(1) main\n0 999\ncalls=1 0\ntotals: 42\n");
    assert.equal(instructionsOf(dump), 42);
  });

  it("refuses a dump without Ir or without totals", () => {
    assert.throws(() => instructionsOf(parseCallgrindDump("events: Dr\ntotals: 3\n")), /no Ir event/);
    assert.throws(() => instructionsOf(parseCallgrindDump("events: Ir\n")), /no totals/);
    assert.throws(() => parseCallgrindDump("events: Ir\ntotals: 12x\n"), /not numeric/);
  });
});

describe("parseVgdbList / valgrindProgram", () => {
  const listing = [
    "use --pid=2331 for /usr/bin/valgrind.bin --tool=callgrind --trace-children=yes --callgrind-out-file=/tmp/x/callgrind.out.%p /usr/bin/node /repo/bin/roster.js lb --listen 127.0.0.1:1",
    "use --pid=40 for /usr/bin/valgrind.bin --tool=callgrind /usr/sbin/nginx -p /tmp/n -c /tmp/n/nginx.conf",
    "some other line",
  ].join("\n");

  it("lists the pids with their command lines", () => {
    const found = parseVgdbList(listing);
    assert.deepEqual([...found.keys()], [2331, 40]);
    assert.equal(valgrindProgram(found.get(2331)!), "/usr/bin/node");
    assert.equal(valgrindProgram(found.get(40)!), "/usr/sbin/nginx");
  });
});

describe("dumpFiles", () => {
  it("keeps the numbered dumps of one pid, in dump order", () => {
    const names = [
      "callgrind.out.12",
      "callgrind.out.12.10",
      "callgrind.out.12.2",
      "callgrind.out.123.1",
      "callgrind.out.12.1",
      "callgrind.out.12.1.tmp",
    ];
    assert.deepEqual(
      dumpFiles(names, 12).map((file) => file.name),
      ["callgrind.out.12.1", "callgrind.out.12.2", "callgrind.out.12.10"],
    );
    assert.equal(dumpFiles(names, 12)[0]!.thread, undefined);
  });

  it("reads the thread of --separate-threads=yes files", () => {
    const names = [
      "callgrind.out.7.2-03",
      "callgrind.out.7.1-02",
      "callgrind.out.7.1-01",
      "callgrind.out.7-01",
    ];
    assert.deepEqual(
      dumpFiles(names, 7).map((file) => [file.dump, file.thread]),
      [
        [1, 1],
        [1, 2],
        [2, 3],
      ],
    );
  });
});
