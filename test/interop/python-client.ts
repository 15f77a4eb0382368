// Runs interop cases with the Python grpcio client (test/interop/python_client.py) in a child process.
// Uses Debian's /usr/bin/python3 (python3-grpcio, python3-protobuf) and /usr/bin/protoc (protobuf-compiler):
// the python on PATH may be another interpreter without grpc. The messages_pb2 / empty_pb2 modules are
// generated with protoc into a directory under os.tmpdir() named after a hash of the protos, once per process.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isInteropCase } from "./cases.ts";
import { TESTING_PROTO_DIR } from "./proto.ts";

export const PYTHON = "/usr/bin/python3";
export const PROTOC = "/usr/bin/protoc";
const SCRIPT = fileURLToPath(new URL("./python_client.py", import.meta.url));
const PB2_PROTOS = ["messages.proto", "empty.proto"] as const;
/** Bound on one python process (its calls have 10 s deadlines; startup takes ~0.1 s). */
const PROCESS_TIMEOUT_MS = 30_000;
const INSTALL_HINT =
  "install Debian's python3-grpcio, python3-protobuf and protobuf-compiler (apt-get install python3-grpcio " +
  "python3-protobuf protobuf-compiler)";

let availability: string | null | undefined;

/** Why the python client cannot run, or null when it can. */
export function pythonUnavailableReason(): string | null {
  if (availability !== undefined) return availability;
  if (!existsSync(PYTHON)) {
    availability = `${PYTHON} not found; ${INSTALL_HINT}`;
  } else if (!existsSync(PROTOC)) {
    availability = `${PROTOC} not found; ${INSTALL_HINT}`;
  } else {
    const probe = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"], {
      timeout: 15_000,
      encoding: "utf8",
    });
    availability =
      probe.status === 0
        ? null
        : `${PYTHON} cannot import grpc / google.protobuf (${(probe.stderr || probe.error?.message || "").trim()}); ${INSTALL_HINT}`;
  }
  return availability;
}

/** Whether /usr/bin/python3 has grpcio and protobuf, and protoc is installed. */
export function pythonAvailable(): boolean {
  return pythonUnavailableReason() === null;
}

let pb2Dir: string | undefined;

/** Generates messages_pb2.py / empty_pb2.py (once per process, reused across processes by content hash). */
export function pythonPb2Dir(): string {
  if (pb2Dir !== undefined && existsSync(pb2Dir)) return pb2Dir;
  const hash = createHash("sha256");
  for (const name of PB2_PROTOS) hash.update(name).update(readFileSync(join(TESTING_PROTO_DIR, name)));
  const dir = join(tmpdir(), `roster-interop-pb2-${hash.digest("hex").slice(0, 16)}`);
  const complete = (d: string) =>
    PB2_PROTOS.every((p) => existsSync(join(d, p.replace(".proto", "_pb2.py"))));
  if (!complete(dir)) {
    // Generate into a private directory and rename it into place, so concurrent processes never see a
    // half-written one.
    const staging = mkdtempSync(join(tmpdir(), "roster-interop-pb2-staging-"));
    const res = spawnSync(PROTOC, ["-I", TESTING_PROTO_DIR, `--python_out=${staging}`, ...PB2_PROTOS], {
      timeout: 30_000,
      encoding: "utf8",
    });
    if (res.status !== 0) {
      rmSync(staging, { recursive: true, force: true });
      throw new Error(`protoc failed (${res.status ?? res.error?.message}): ${res.stderr}`);
    }
    try {
      renameSync(staging, dir);
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      if (!complete(dir)) throw err;
    }
  }
  pb2Dir = dir;
  return dir;
}

interface CaseResult {
  case: string;
  ok: boolean;
  error: string | null;
  ms: number;
}

function parseTarget(target: string): { host: string; port: number } {
  const colon = target.lastIndexOf(":");
  const port = Number(target.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port <= 0)
    throw new Error(`bad target "${target}", want host:port`);
  return { host: target.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port };
}

function runProcess(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(PYTHON, args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1", PYTHONNOUSERSITE: "1", GRPC_VERBOSITY: "ERROR" },
      });
    } catch (err) {
      reject(err);
      return;
    }
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(
          new Error(`python client timed out after ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`),
        );
      } else {
        resolve({ code, stdout, stderr });
      }
    });
  });
}

/**
 * Runs cases (in order, in one python process) against target ("host:port") and returns each case's result.
 * Rejects if python is unavailable, the process fails to report a case, or it times out.
 */
export async function runPythonCases(
  names: readonly string[],
  target: string,
): Promise<Map<string, CaseResult>> {
  const reason = pythonUnavailableReason();
  if (reason !== null) throw new Error(`python interop client unavailable: ${reason}`);
  for (const name of names) if (!isInteropCase(name)) throw new Error(`unknown interop case "${name}"`);
  const { host, port } = parseTarget(target);
  const args = [SCRIPT, "--server_host", host, "--server_port", String(port), "--pb2_dir", pythonPb2Dir()];
  args.push("--test_case", names.join(","), "--json");
  const { code, stdout, stderr } = await runProcess(args, PROCESS_TIMEOUT_MS);
  const results = new Map<string, CaseResult>();
  for (const line of stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const r = JSON.parse(line) as CaseResult;
    if (!r.ok && stderr.trim() !== "") r.error += `\npython stderr:\n${stderr.trim().slice(-4000)}`;
    results.set(r.case, r);
  }
  const missing = names.filter((n) => !results.has(n));
  if (missing.length > 0) {
    throw new Error(
      `python client (exit ${code}) reported no result for ${missing.join(", ")}\nstdout:\n${stdout}\nstderr:\n${stderr}`,
    );
  }
  return results;
}

/** Runs one interop case with the python client against target ("host:port"); rejects if it fails. */
export async function runPythonCase(name: string, target: string): Promise<void> {
  const result = (await runPythonCases([name], target)).get(name)!;
  if (!result.ok) throw new Error(`python ${name} against ${target}: ${result.error}`);
}
