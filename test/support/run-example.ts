import { spawn } from "node:child_process";

/**
 * Runs an example script (`node --import tsx FILE`) as a user would, without ROSTER_TARGET so it starts
 * its own servers, and returns its exit code and standard output. Killed after `limitMs`.
 */
export async function runExample(
  file: string,
  extraEnv: NodeJS.ProcessEnv = {},
  limitMs = 60_000,
): Promise<{ code: number | null; out: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv };
  delete env.ROSTER_TARGET;
  const child = spawn(process.execPath, ["--import", "tsx", file], {
    stdio: ["ignore", "pipe", "inherit"],
    env,
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), limitMs);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  clearTimeout(killer);
  return { code, out };
}
