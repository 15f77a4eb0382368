// Starts `roster serve` as a user runs it: the CLI (src/cli/main.ts under tsx) in a child process,
// serving examples/echo-service.ts on 127.0.0.1:0 with an admin port; resolves once its log line says
// where it listens. The caller stops it by its pid (`child`), as every test must.
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));

export interface Running {
  child: ChildProcess;
  address: string;
  admin: string;
  log: string[];
  exited: Promise<number | null>;
}

export async function startServe(workers: number): Promise<Running> {
  const proc = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "src/cli/main.ts",
      "serve",
      "examples/echo-service.ts",
      "--workers",
      String(workers),
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
    ],
    { cwd: root, stdio: ["ignore", "ignore", "pipe"] },
  );
  const log: string[] = [];
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const started = await new Promise<{ address: string; admin: string }>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`roster serve did not start:\n${log.join("\n")}`)),
      30_000,
    );
    let buffered = "";
    proc.stderr!.on("data", (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        log.push(line);
        const m = /"listen":"([^"]+)","admin":"([^"]+)"/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve({ address: m[1]!, admin: m[2]! });
        }
      }
    });
    void exited.then((code) => reject(new Error(`roster serve exited with ${code}:\n${log.join("\n")}`)));
  });
  return { child: proc, ...started, log, exited };
}
