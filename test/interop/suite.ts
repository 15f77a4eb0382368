// Registers the interop conformance cases as node:test tests: every case in ./cases.ts with every client,
// against the target getTarget() returns when the test runs (a server directly, or a balancer in front of it).
import { describe, it } from "node:test";
import { INTEROP_CASES } from "./cases.ts";
import { runGrpcJsCase } from "./grpc-js-client.ts";
import { runPythonCase } from "./python-client.ts";

export const INTEROP_CLIENTS = ["grpc-js", "python"] as const;
export type InteropClient = (typeof INTEROP_CLIENTS)[number];

const runners: Record<InteropClient, (name: string, target: string) => Promise<void>> = {
  "grpc-js": runGrpcJsCase,
  // One python process per case (~0.15 s each): a crash or hang stays confined to its case. A missing
  // python3-grpcio makes these tests fail with an install hint; they are never skipped.
  python: runPythonCase,
};

/** Defines one test per case and client, named `${label}: ${case} (${client})`. */
export function defineInteropSuite(label: string, getTarget: () => string): void {
  describe(`interop (${label})`, () => {
    for (const name of INTEROP_CASES) {
      for (const client of INTEROP_CLIENTS) {
        it(`${label}: ${name} (${client})`, { timeout: 45_000 }, () => runners[client](name, getTarget()));
      }
    }
  });
}
