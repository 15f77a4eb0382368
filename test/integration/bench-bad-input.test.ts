// `roster bench` acceptance: bad flags, an unknown method, a method the server does not implement, an
// unreachable target and a proto that fails to parse each give one clear line on stderr, a non-zero exit
// status and no stack trace.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { BENCH_ECHO_PROTO, type BenchEchoChild, spawnBenchEcho } from "../support/bench-echo-server.ts";
import { type CliResult, runRoster } from "../support/roster-cli.ts";

const dir = mkdtempSync(join(tmpdir(), "roster-bench-bad-"));
let server: BenchEchoChild;
let refused: string;

before(async () => {
  server = await spawnBenchEcho(["--id", "bad"]);
  // A port with nothing listening: a server that started and was killed.
  const gone = await spawnBenchEcho(["--id", "gone"]);
  refused = gone.address;
  await gone.kill();
});

after(async () => {
  await server.kill();
  rmSync(dir, { recursive: true, force: true });
});

const call = ["--call", "roster.benchtest.Echo/Unary"];
const quick = ["--calls", "5", "--warmup", "0", "--connect-timeout", "3s"];

function bench(args: readonly string[]): Promise<CliResult> {
  return runRoster(["bench", ...args], { timeoutMs: 20_000 });
}

/** Non-zero exit, no stack trace, and the first stderr line matches `pattern`. */
function clearFailure(r: CliResult, pattern: RegExp, oneLine = true): void {
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  const shown = `exit ${r.code ?? r.signal}, stderr:\n${r.stderr}\nstdout:\n${r.stdout}`;
  assert.notEqual(r.code, 0, shown);
  assert.equal(r.signal, null, shown);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `a stack trace was printed; ${shown}`);
  assert.match(lines[0] ?? "", pattern, shown);
  if (oneLine) assert.equal(lines.length, 1, `expected one line; ${shown}`);
  assert.equal(r.stdout, "", shown);
}

describe("roster bench with bad input", { timeout: 40_000 }, () => {
  it("explains each case in one line and exits non-zero", async () => {
    const badProto = join(dir, "bad.proto");
    writeFileSync(badProto, 'syntax = "proto3";\npackage x;\nmessage M { strin a = 1 }\n');
    // The same service with one method more than the server implements.
    const extraProto = join(dir, "extra.proto");
    writeFileSync(
      extraProto,
      readFileSync(BENCH_ECHO_PROTO, "utf8").replace(
        "service Echo {",
        "service Echo {\n  rpc Missing(EchoRequest) returns (EchoReply);",
      ),
    );
    const target = ["--target", server.address];
    const proto = ["--proto", BENCH_ECHO_PROTO];
    const cases: [string, string[], RegExp, boolean][] = [
      [
        "a bad number",
        [...target, ...proto, ...call, "--concurrency", "lots"],
        /--concurrency: "lots" is not a number/,
        true,
      ],
      ["an unknown flag", [...target, ...proto, ...call, "--bogus"], /unknown option '--bogus'/, false],
      [
        "an unknown method",
        [...target, ...proto, "--call", "roster.benchtest.Echo/Nope", ...quick],
        /--call: roster\.benchtest\.Echo has no method Nope; methods: Unary/,
        true,
      ],
      [
        "an unimplemented method",
        [...target, "--proto", extraProto, "--call", "roster.benchtest.Echo/Missing", ...quick],
        /--call: 127\.0\.0\.1:\d+ does not implement roster\.benchtest\.Echo\/Missing/,
        true,
      ],
      [
        "an unreachable target",
        ["--target", refused, ...proto, ...call, ...quick],
        /--target: cannot reach 127\.0\.0\.1:\d+: .*ECONNREFUSED/,
        true,
      ],
      [
        "a proto that fails to parse",
        [...target, "--proto", badProto, ...call, ...quick],
        /--proto: .*bad\.proto does not parse: illegal token/,
        true,
      ],
      [
        "an unwritable report",
        [...target, ...proto, ...call, "--json", "/nonexistent-dir/r.json", ...quick],
        /--json: cannot write/,
        true,
      ],
    ];
    // Two at a time: each is a Node process starting under tsx on a 2-core machine.
    const results: CliResult[] = [];
    for (let i = 0; i < cases.length; i += 2) {
      results.push(...(await Promise.all(cases.slice(i, i + 2).map(([, args]) => bench(args)))));
    }
    for (const [i, [name, , pattern, oneLine]] of cases.entries()) {
      await it(name, () => clearFailure(results[i]!, pattern, oneLine));
    }
  });
});
