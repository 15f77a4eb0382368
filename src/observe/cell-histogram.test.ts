import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Registry } from "prom-client";
import { createCellHistogram } from "./cell-histogram.ts";

describe("createCellHistogram", () => {
  it("exports cumulative buckets, +Inf, sum and count per cell, like prom-client's Histogram", async () => {
    const registry = new Registry();
    const h = createCellHistogram({
      name: "t_seconds",
      help: "test",
      buckets: [1, 2],
      registers: [registry],
    });
    const a = h.cell({ k: "a" });
    h.observe(a, 0.5);
    h.observe(a, 1);
    h.observe(a, 1.5);
    h.observe(a, 9);
    const text = await registry.metrics();
    assert.equal(
      text,
      [
        "# HELP t_seconds test",
        "# TYPE t_seconds histogram",
        't_seconds_bucket{k="a",le="1"} 2',
        't_seconds_bucket{k="a",le="2"} 3',
        't_seconds_bucket{k="a",le="+Inf"} 4',
        't_seconds_sum{k="a"} 12',
        't_seconds_count{k="a"} 4',
        "",
      ].join("\n"),
    );
  });

  it("shows a cell only once observed, and never after removeCell", async () => {
    const registry = new Registry();
    const h = createCellHistogram({ name: "t", help: "h", buckets: [1], registers: [registry] });
    const a = h.cell({ k: "a" });
    assert.doesNotMatch(await registry.metrics(), /t_count/);
    h.observe(a, 0);
    assert.match(await registry.metrics(), /^t_count\{k="a"\} 1$/m);
    h.removeCell(a);
    assert.doesNotMatch(await registry.metrics(), /t_count/);
  });

  it("keeps a copy of the labels given", async () => {
    const h = createCellHistogram({ name: "t", help: "h", buckets: [1] });
    const labels = { k: "a" };
    const a = h.cell(labels);
    labels.k = "changed";
    assert.equal(a.labels["k"], "a");
  });

  it("rejects unsorted or non-finite buckets and bad names", () => {
    assert.throws(
      () => createCellHistogram({ name: "t", help: "h", buckets: [2, 1] }),
      /strictly increasing/,
    );
    assert.throws(
      () => createCellHistogram({ name: "t", help: "h", buckets: [1, 1] }),
      /strictly increasing/,
    );
    assert.throws(() => createCellHistogram({ name: "t", help: "h", buckets: [Infinity] }), /finite/);
    assert.throws(
      () => createCellHistogram({ name: "bad-name", help: "h", buckets: [1] }),
      /invalid metric name/,
    );
  });

  it("refuses a second metric of the same name in one registry", () => {
    const registry = new Registry();
    createCellHistogram({ name: "t", help: "h", buckets: [1], registers: [registry] });
    assert.throws(
      () => createCellHistogram({ name: "t", help: "h", buckets: [1], registers: [registry] }),
      /already been registered/,
    );
  });
});
