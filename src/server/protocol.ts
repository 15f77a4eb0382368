/**
 * IPC between the `roster serve` supervisor and its workers (child_process.fork's channel).
 * Tagged unions, one place.
 */

/** Passed to a worker in the ROSTER_WORKER environment variable (JSON). */
export interface WorkerConfig {
  /** Absolute path of the user's service module. */
  readonly module: string;
  /** Unix socket path to serve on. */
  readonly socket: string;
  readonly id: string;
  /** Worker skills (server/resume.ts): settings and the file they persist to. */
  readonly skills?: { history?: number; maxSkillAge?: number; file?: string };
}

export type WorkerMessage =
  /** Serving: health says SERVING on every service; calls may be sent to `socket`. */
  | { type: "ready"; socket: string; idempotentPaths: string[]; services: string[] }
  /** Cannot start (bad module, bind failure): the message is for the user, as is. */
  | { type: "fatal"; message: string }
  /**
   * Got SIGTERM itself (alone, or with its whole process group, as systemd and container runtimes
   * send it): asks the supervisor to drain it, so that it leaves the balancer before its socket closes.
   */
  | { type: "leaving" };

export type SupervisorMessage =
  /** Report NOT_SERVING on health; keep serving calls. */
  | { type: "not-serving" }
  /** Stop: NOT_SERVING, finish open calls within `graceMs`, exit 0. */
  | { type: "drain"; graceMs: number };
