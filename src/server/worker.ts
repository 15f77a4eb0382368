import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { loadServiceModule, ServiceModuleError } from "./define.ts";
import type { SupervisorMessage, WorkerConfig, WorkerMessage } from "./protocol.ts";
import { WorkerResume } from "./resume.ts";

/**
 * A worker process of `roster serve`: loads the user's service module, serves it with grpc-js on a
 * unix socket together with grpc.health.v1 and reflection, and tells the supervisor over IPC when it is
 * SERVING. On "drain" it reports NOT_SERVING, lets calls finish, and exits 0.
 *
 * Every handler is timed under its call's class, and the skills are published on the ORCA
 * out-of-band stream (server/resume.ts) for the `resume` policy.
 */

/** grpc-js server options: see docs/configuration.md ("roster serve" defaults) for why each. */
export const workerServerOptions: grpc.ServerOptions = {
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5000,
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.max_concurrent_streams": 1000,
};

/** How long a worker that got SIGTERM waits for the supervisor's "drain" before draining by itself. */
const LEAVING_ANSWER_MS = 2000;

function send(message: WorkerMessage): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env.ROSTER_WORKER ?? "null") as WorkerConfig | null;
  if (config === null || process.send === undefined) {
    process.stderr.write("roster worker: start me through `roster serve`, not directly\n");
    process.exit(2);
  }
  let services: Awaited<ReturnType<typeof loadServiceModule>>;
  let resume: WorkerResume;
  try {
    resume = new WorkerResume({
      ...(config.skills?.history !== undefined ? { history: config.skills.history } : {}),
      ...(config.skills?.maxSkillAge !== undefined ? { maxSkillAge: config.skills.maxSkillAge } : {}),
      ...(config.skills?.file !== undefined ? { skillsFile: config.skills.file } : {}),
      log: (line) => process.stderr.write(`${line}\n`),
    });
    services = await loadServiceModule(config.module, (metadata) => resume.begin(metadata));
  } catch (err) {
    const message =
      err instanceof ServiceModuleError ? err.message : `service module failed: ${(err as Error).message}`;
    send({ type: "fatal", message });
    process.exitCode = 3;
    return;
  }
  const server = new grpc.Server({
    ...workerServerOptions,
    interceptors: services.flatMap((s) => [...s.interceptors]),
  });
  const health = new HealthImplementation({ "": "NOT_SERVING" });
  health.addToServer(server);
  resume.addToServer(server);
  for (const s of services) {
    server.addService(s.definition, s.implementation);
    health.setStatus(s.name, "NOT_SERVING");
    if (s.packageDefinition !== undefined) new ReflectionService(s.packageDefinition).addToServer(server);
  }
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${config.socket}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  for (const s of services) health.setStatus(s.name, "SERVING");
  health.setStatus("", "SERVING");
  send({
    type: "ready",
    socket: config.socket,
    idempotentPaths: services.flatMap((s) => s.idempotentPaths),
    services: services.map((s) => s.name),
  });

  const notServing = () => {
    health.setStatus("", "NOT_SERVING");
    for (const s of services) health.setStatus(s.name, "NOT_SERVING");
  };
  let draining = false;
  const drain = (graceMs: number) => {
    if (draining) return;
    draining = true;
    notServing();
    // ORCA streams never end by themselves; the balancer reconnects to the next worker.
    resume.close();
    const force = setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, graceMs);
    force.unref();
    server.tryShutdown(() => process.exit(0));
  };
  process.on("message", (m: SupervisorMessage) => {
    if (m.type === "drain") drain(m.graceMs);
    else if (m.type === "not-serving") notServing();
  });
  // The supervisor going away (its IPC channel closes) ends the worker too: no orphans.
  process.on("disconnect", () => {
    resume.persistNow();
    server.forceShutdown();
    process.exit(0);
  });
  // Ctrl-C reaches the whole process group: the supervisor drives the shutdown, so SIGINT is ignored
  // here. A SIGTERM (to this worker alone, or to the group) asks the supervisor to drain it: it takes
  // the worker out of the balancer, then sends "drain", so the front never dials a socket that is gone.
  // Without a supervisor, or if it does not answer, the worker drains by itself.
  process.on("SIGTERM", () => {
    if (draining) return;
    if (!process.connected) {
      drain(10_000);
      return;
    }
    send({ type: "leaving" });
    setTimeout(() => drain(10_000), LEAVING_ANSWER_MS).unref();
  });
  process.on("SIGINT", () => {});
}

void main().catch((err: Error) => {
  send({ type: "fatal", message: `worker failed to start: ${err.message}` });
  process.exitCode = 3;
});
