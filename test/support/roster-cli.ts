// Runs the `roster` CLI (src/cli/main.ts under tsx) as a child process and collects what it printed.
//
//   const r = await runRoster(["bench", "--target", ...], { timeoutMs: 20_000 });
//   r.code, r.signal, r.stdout, r.stderr
//
// The child is SIGKILLed at the timeout, so a hung run fails the test instead of hanging it.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** src/cli/main.ts; ROSTER_CLI_ENTRY may name another entry with the same commands (development only). */
export const ROSTER_MAIN =
  process.env["ROSTER_CLI_ENTRY"] ?? fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export interface CliOptions {
  readonly timeoutMs?: number;
}

export function runRoster(args: readonly string[], o: CliOptions = {}): Promise<CliResult> {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", ROSTER_MAIN, ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (t: string) => {
    stdout += t;
  });
  child.stderr.setEncoding("utf8").on("data", (t: string) => {
    stderr += t;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
    }, o.timeoutMs ?? 30_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Throws with everything the CLI printed unless it exited 0. */
export function expectSuccess(r: CliResult, what: string): void {
  if (r.code === 0) return;
  throw new Error(
    `${what}: roster exited ${r.code ?? r.signal} after ${r.ms} ms\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`,
  );
}
