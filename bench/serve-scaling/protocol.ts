// IPC between bench/serve-scaling/run.ts and the server entries it starts (roster-entry.ts,
// cluster-entry.ts), over child_process's IPC channel.

/** The entry is serving on 127.0.0.1:port; `workers` are the pids of the processes running the handler. */
export type EntryMessage =
  | { type: "ready"; port: number; workers: number[] }
  | { type: "failed"; message: string };

/** Nothing is sent to entries: they stop on SIGTERM/SIGINT, or when the IPC channel closes. */
/** The service module every configuration serves: examples/echo-service.ts, its calls counted. */
export const SERVICE_MODULE_RELATIVE = "./counted-service.ts";
