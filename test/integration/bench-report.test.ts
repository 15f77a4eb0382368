// `roster bench` acceptance: --compare over two servers with --workers 2 merges the workers' histograms,
// counts per-backend shares from the x-roster-backend header, and writes an HTML report whose charts
// render in headless Chromium (Debian `chromium` driven by playwright-core): the test finds drawn canvases
// with the series colours in their pixels, and no request leaves the file.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { PALETTE } from "../../src/bench/html.ts";
import type { BenchReport } from "../../src/bench/report.ts";
import { BENCH_ECHO_PROTO, type BenchEchoChild, spawnBenchEcho } from "../support/bench-echo-server.ts";
import { expectSuccess, runRoster } from "../support/roster-cli.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const dir = mkdtempSync(join(tmpdir(), "roster-bench-report-"));
const servers: BenchEchoChild[] = [];
let report: BenchReport;
let html: string;

before(async () => {
  servers.push(...(await Promise.all(["a", "b"].map((id) => spawnBenchEcho(["--id", id, "--header"])))));
  const json = join(dir, "report.json");
  html = join(dir, "report.html");
  const r = await runRoster(
    [
      "bench",
      "--compare",
      servers.map((s) => s.address).join(","),
      "--proto",
      BENCH_ECHO_PROTO,
      "--call",
      "roster.benchtest.Echo/Unary",
      "--payload-size",
      "64",
      "--concurrency",
      "4",
      "--connections",
      "2",
      "--workers",
      "2",
      "--warmup",
      "300ms",
      "--duration",
      "1s",
      "--slice",
      "500ms",
      "--json",
      json,
      "--html",
      html,
    ],
    { timeoutMs: 30_000 },
  );
  expectSuccess(r, "bench --compare --workers 2");
  assert.match(r.stdout, /ratio/);
  report = JSON.parse(readFileSync(json, "utf8")) as BenchReport;
});

after(async () => {
  await Promise.all(servers.map((s) => s.kill()));
  rmSync(dir, { recursive: true, force: true });
});

describe("roster bench --compare --workers 2 --html", { timeout: 60_000 }, () => {
  it("merges both workers' records and counts each target's backend", () => {
    assert.equal(report.targets.length, 2);
    assert.equal(report.generator.processes.length, 2, "one cost entry per worker process");
    assert.equal(report.ratios.length, 1);
    for (const [i, t] of report.targets.entries()) {
      assert.ok(t.calls > 0, `${t.target} made calls`);
      assert.equal(t.errorCount, 0);
      assert.deepEqual(
        t.backends.map((b) => [b.backend, b.calls]),
        [[["a", "b"][i]!, t.calls]],
      );
      // Two slices of 500 ms per target, alternating.
      assert.ok(t.measuredMs >= 900 && t.measuredMs <= 1500, `${t.target} measured ${t.measuredMs} ms`);
    }
  });

  it("renders its charts in headless Chromium", async (t) => {
    if (!existsSync(CHROMIUM)) {
      assert.fail(
        `${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to check the HTML report`,
      );
    }
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 20_000 });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
      const problems: string[] = [];
      const requests: string[] = [];
      page.on("pageerror", (e) => problems.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      page.on("request", (r) => requests.push(r.url()));
      await page.goto(pathToFileURL(html).href);
      await page.waitForSelector("body[data-charts=drawn]", { timeout: 10_000 });
      assert.deepEqual(problems, []);
      assert.deepEqual(requests, [pathToFileURL(html).href], "the report fetches nothing");

      const colours = PALETTE.slice(0, 2).map((hex) =>
        [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16)),
      );
      const canvases = await page.evaluate((wanted) => {
        // Runs in the page; the test's tsconfig has no DOM types, so name the little it uses.
        interface Canvas {
          width: number;
          height: number;
          getContext(kind: "2d"): {
            getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
          } | null;
          closest(selector: string): { id: string } | null;
        }
        const doc = (globalThis as unknown as { document: { querySelectorAll(s: string): Iterable<Canvas> } })
          .document;
        return [...doc.querySelectorAll("canvas")].map((canvas) => {
          const ctx = canvas.getContext("2d");
          if (ctx === null) return { id: "", drawn: 0, series: [0, 0] };
          const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
          let drawn = 0;
          const series = wanted.map(() => 0);
          for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3]! === 0) continue;
            drawn++;
            wanted.forEach(([r, g, b], k) => {
              if (
                Math.abs(data[i]! - r!) < 24 &&
                Math.abs(data[i + 1]! - g!) < 24 &&
                Math.abs(data[i + 2]! - b!) < 24
              ) {
                series[k]!++;
              }
            });
          }
          return { id: canvas.closest("div[id]")?.id ?? "", drawn, series };
        });
      }, colours);
      t.diagnostic(JSON.stringify(canvases));
      assert.deepEqual(
        canvases.map((c) => c.id),
        ["over-time", "distribution", "throughput"],
      );
      for (const c of canvases) {
        assert.ok(c.drawn > 2000, `${c.id}: only ${c.drawn} pixels drawn`);
        for (const [k, n] of c.series.entries()) {
          assert.ok(n > 50, `${c.id}: the line of target ${k + 1} is missing (${n} pixels of its colour)`);
        }
      }
    } finally {
      await browser.close();
    }
  });
});
