import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { ConfigError } from "../core/errors.ts";
import { createLogger, LOG_LEVELS, parseLogLevel } from "./log.ts";

describe("createLogger", () => {
  const dir = mkdtempSync(join(tmpdir(), "roster-log-"));
  const saved = process.env["ROSTER_LOG_LEVEL"];
  beforeEach(() => {
    delete process.env["ROSTER_LOG_LEVEL"];
  });
  afterEach(() => {
    if (saved === undefined) delete process.env["ROSTER_LOG_LEVEL"];
    else process.env["ROSTER_LOG_LEVEL"] = saved;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Each logger gets its own file so tests never read each other's lines.
  let n = 0;
  const file = () => join(dir, `log-${n++}.ndjson`);
  const lines = (path: string) =>
    readFileSync(path, "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  it("defaults to info", () => {
    assert.equal(createLogger({ destination: file() }).level, "info");
  });

  it("takes the level from ROSTER_LOG_LEVEL, any case, unless the option is given", () => {
    process.env["ROSTER_LOG_LEVEL"] = "DEBUG";
    assert.equal(createLogger({ destination: file() }).level, "debug");
    assert.equal(createLogger({ level: "warn", destination: file() }).level, "warn");
    process.env["ROSTER_LOG_LEVEL"] = "";
    assert.equal(createLogger({ destination: file() }).level, "info");
  });

  it("rejects an unknown level from the option, naming the field and the levels that exist", () => {
    assert.throws(
      () => createLogger({ level: "verbose", destination: file() }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, "a ConfigError");
        assert.equal(err.field, "logLevel");
        assert.match(err.message, /unknown log level "verbose"/);
        assert.match(err.message, /trace, debug, info, warn, error, fatal, silent/);
        return true;
      },
    );
    assert.throws(() => createLogger({ level: "", destination: file() }), /unknown log level ""/);
  });

  it("rejects an unknown level from the environment, naming ROSTER_LOG_LEVEL", () => {
    process.env["ROSTER_LOG_LEVEL"] = "loud";
    assert.throws(
      () => createLogger({ destination: file() }),
      /^ConfigError: ROSTER_LOG_LEVEL: unknown log level "loud"/,
    );
  });

  it("writes one JSON object per line with level label, ISO time, name and serialised errors", () => {
    const path = file();
    const log = createLogger({ level: "debug", name: "roster-test", destination: path });
    log.debug({ backend: "a:1" }, "picked");
    log.trace("not written at debug");
    log.error({ error: new Error("boom") }, "failed");
    log.child({ cluster: "users" }).warn("child line");
    const [picked, failed, child, ...rest] = lines(path);
    assert.equal(rest.length, 0);
    assert.equal(picked?.["level"], "debug");
    assert.equal(picked?.["name"], "roster-test");
    assert.equal(picked?.["msg"], "picked");
    assert.equal(picked?.["backend"], "a:1");
    assert.match(String(picked?.["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const error = failed?.["error"] as Record<string, unknown>;
    assert.equal(error["message"], "boom");
    assert.equal(error["type"], "Error");
    assert.match(String(error["stack"]), /boom/);
    assert.equal(child?.["cluster"], "users");
    assert.equal(child?.["level"], "warn");
  });

  it("writes nothing at silent", () => {
    const path = file();
    const log = createLogger({ level: "silent", destination: path });
    log.fatal("nope");
    assert.deepEqual(lines(path), []);
  });

  it("fails with a ConfigError when the destination cannot be opened", () => {
    assert.throws(
      () => createLogger({ destination: join(dir, "missing", "dir", "x.log") }),
      /^ConfigError: log destination: cannot open .*ENOENT/,
    );
  });
});

describe("parseLogLevel", () => {
  it("accepts every pino level plus silent, trimmed and in any case", () => {
    assert.deepEqual([...LOG_LEVELS], ["trace", "debug", "info", "warn", "error", "fatal", "silent"]);
    for (const level of LOG_LEVELS) assert.equal(parseLogLevel(` ${level.toUpperCase()} `), level);
  });

  it("names the field it was given", () => {
    assert.throws(() => parseLogLevel("x", "log.level"), /^ConfigError: log\.level: unknown log level "x"/);
  });
});
