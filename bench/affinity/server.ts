// bench/affinity's server process: `serve()` (roster serve's library API) with the site service
// module, the policy under test and the x-tenant classifier. Forked by run.ts with an IPC channel:
// it sends { type: "ready", address, workers } once listening, answers { type: "workers" } with the
// workers' status, { type: "scale", n } by scaling to n workers (server.scale: added workers ready,
// removed ones drained and gone) and answering with the workers, and on { type: "close" } closes the
// server and exits. Its workers exit with it
// (a worker ends when its supervisor's IPC channel closes).
import { fileURLToPath } from "node:url";
import { createDefaultRegistry } from "../../src/core/policies/registry.ts";
import { serve } from "../../src/server/index.ts";

export interface ServerConfig {
  readonly workers: number;
  readonly policy: string;
  readonly policyConfig: Record<string, unknown>;
  readonly history: number;
  readonly maxSkillAge: number | undefined;
  readonly skillsDir: string;
}

export type ToServer = { type: "workers" } | { type: "scale"; n: number } | { type: "close" };
export type FromServer =
  | { type: "ready"; address: string; pids: number[] }
  | { type: "workers"; pids: number[] }
  | { type: "error"; message: string };

const send = (m: FromServer) => process.send?.(m);

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as ServerConfig;
  const server = await serve({
    module: fileURLToPath(new URL("./site-service.ts", import.meta.url)),
    workers: config.workers,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    policy: createDefaultRegistry().resolve(config.policy, config.policyConfig),
    classifier: { header: "x-tenant" },
    skills: {
      history: config.history,
      ...(config.maxSkillAge !== undefined ? { maxSkillAge: config.maxSkillAge } : {}),
      dir: config.skillsDir,
    },
    drainGraceMs: 2000,
  });
  const pids = () =>
    server.workers().flatMap((w) => (w.pid !== undefined && w.state === "ready" ? [w.pid] : []));
  process.on("message", (m: ToServer) => {
    if (m.type === "workers") send({ type: "workers", pids: pids() });
    else if (m.type === "scale") {
      server.scale(m.n).then(
        () => send({ type: "workers", pids: pids() }),
        (err: Error) => send({ type: "error", message: err.message }),
      );
    } else if (m.type === "close") {
      void server.close().finally(() => process.exit(0));
    }
  });
  process.on("disconnect", () => {
    void server.close().finally(() => process.exit(0));
  });
  send({ type: "ready", address: server.address, pids: pids() });
}

main().catch((err: Error) => {
  send({ type: "error", message: err.message });
  process.exit(1);
});
