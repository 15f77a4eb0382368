import { Backoff, type BackoffOptions, defaultBackoff } from "../core/backoff.ts";
import type { Clock } from "../core/clock.ts";
import type { Endpoint } from "../core/endpoint.ts";
import { Status, statusName } from "../core/status.ts";
import { BackendConnection, type BackendState } from "../platform/backend-connection.ts";
import { systemClock, systemRandom } from "../platform/system.ts";
import { type Call, startCall } from "./grpc-call.ts";
import type { Health, HealthChecker } from "./health-checker.ts";
import {
  decodeHealthResponse,
  encodeHealthRequest,
  ServingStatus,
  servingStatusName,
} from "./health-proto.ts";

/**
 * Active health checking with grpc.health.v1 (https://github.com/grpc/grpc/blob/master/doc/health-checking.md),
 * after gRPC's client-side health checking (gRFC A17), over a connection of its own to each backend.
 *
 * Per backend, one small HTTP/2 connection (platform's BackendConnection: the same dialling, unix
 * sockets, connect timeout, keepalive and reconnect backoff as the data path, with a 64 KiB window).
 * Each time it becomes ready the protocol starts again from Watch, so a restarted backend is judged
 * afresh. State machine of one watch (tagged union `Mode`):
 *
 *   waiting ──connection ready──▶ watching
 *   watching ──message──▶ watching (SERVING → serving; anything else → not-serving)
 *   watching ──UNIMPLEMENTED before any message──▶ polling (Check now, then every intervalMs)
 *   watching ──any other end, or GOAWAY──▶ retrying ──backoff──▶ watching
 *   polling ──Check UNIMPLEMENTED──▶ unimplemented (serving) ──connection re-made──▶ watching
 *   any ──connection transient-failure──▶ waiting (not-serving: "unreachable: …")
 *   any ──abort──▶ stopped
 *
 * Decisions (and why):
 * - A separate connection, not a stream on the data sessions: the data path's sessions come and go with
 *   load (several per backend, GOAWAY hand-overs) and a long-lived Watch would pin one of them.
 * - Hand-encoded messages (health-proto.ts): two one-field messages do not justify a protobuf runtime
 *   and a grpc-js channel (its own resolver, idle timer and 120 s backoff) per backend.
 * - Any status but SERVING is not-serving (A17): UNKNOWN, NOT_SERVING, SERVICE_UNKNOWN (the backend does
 *   not know the configured service name), Check's NOT_FOUND, a Check past `timeoutMs`.
 * - No health service at all (Watch UNIMPLEMENTED, then Check UNIMPLEMENTED) counts as serving, as
 *   grpc-js and A17 do ("act as if health checking is disabled"): turning health checks on for a
 *   cluster must not take out backends that never had the service. It is re-probed on reconnect.
 * - Watch UNIMPLEMENTED falls back to Check polling rather than straight to "serving": some servers
 *   (older grpc-health-check, hand-written ones) implement only Check.
 * - No answer within `timeoutMs` of starting (connecting included) → not-serving, so `unknown` never
 *   lasts longer than `timeoutMs` and the channel can fail calls fast instead of queueing them.
 * - A Watch that ends (or whose connection gets GOAWAY: A17 cancels the Watch then, which also lets a
 *   backend's graceful shutdown finish) after it had answered keeps the last answer for a grace of
 *   `timeoutMs` while it is re-opened — at once if it had lived a second, else after backoff. A backend
 *   recycling its connections (max connection age) so does not flap out of the picker; a dead one
 *   still leaves at once, because its connection (and the data path's) fails. A Watch that ends
 *   without ever answering is not-serving at once. (A17 reports TRANSIENT_FAILURE at once; there the
 *   Watch shares the data connection, whose GOAWAY makes the subchannel reconnect anyway.)
 * - A server that stops reading its socket is found by the connection's keepalive PING (the data
 *   path's `keepaliveMs`), as A17 relies on; pinging every second would trip the ping-abuse limits
 *   of gRPC C-core and Go servers (GOAWAY "too_many_pings") on a quiet Watch.
 */
export interface GrpcHealthOptions {
  /** The service name asked about; "" (the default) is the server's overall health. */
  readonly service?: string;
  /** Check polling period when Watch is unimplemented. Default 1000. */
  readonly intervalMs?: number;
  /** Check deadline; also how long a first answer (or a re-opened Watch's answer) may take. Default 1000. */
  readonly timeoutMs?: number;
  /** HTTP/2 PING keepalive of the health connection (0 = off). Default 20 000, as the data path. */
  readonly keepaliveMs?: number;
  readonly keepaliveTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** Reconnect backoff of the connection, and the retry backoff of a failing Watch. */
  readonly backoff?: BackoffOptions;
  readonly clock?: Clock;
}

export const defaultHealthCheck = { service: "", intervalMs: 1000, timeoutMs: 1000 } as const;

const WATCH_PATH = "/grpc.health.v1.Health/Watch";
const CHECK_PATH = "/grpc.health.v1.Health/Check";
/** A Watch that lived this long before it ended is re-opened at once (A17 resets backoff on a message). */
const STABLE_MS = 1000;

export function createGrpcHealthChecker(options: GrpcHealthOptions = {}): HealthChecker {
  return {
    watch(endpoint, signal, onChange) {
      if (signal.aborted) return;
      new HealthWatch(endpoint, signal, onChange, options).start();
    },
  };
}

type Mode =
  | { kind: "waiting" }
  | { kind: "watching"; call: Call }
  | { kind: "retrying"; timer: NodeJS.Timeout }
  | { kind: "polling"; call: Call | undefined; timer: NodeJS.Timeout | undefined }
  | { kind: "unimplemented" }
  | { kind: "stopped" };

class HealthWatch {
  readonly #signal: AbortSignal;
  readonly #onChange: (health: Health, detail: string) => void;
  readonly #service: string;
  readonly #intervalMs: number;
  readonly #timeoutMs: number;
  readonly #clock: Clock;
  readonly #backoff: Backoff;
  readonly #connection: BackendConnection;
  readonly #request: Buffer;
  #mode: Mode = { kind: "waiting" };
  #health: Health = "unknown";
  #detail = "";
  /** Pending "no answer in time" verdict; cleared by any answer. */
  #answerTimer: NodeJS.Timeout | undefined;

  constructor(
    endpoint: Endpoint,
    signal: AbortSignal,
    onChange: (health: Health, detail: string) => void,
    o: GrpcHealthOptions,
  ) {
    this.#signal = signal;
    this.#onChange = onChange;
    this.#service = o.service ?? defaultHealthCheck.service;
    this.#intervalMs = o.intervalMs ?? defaultHealthCheck.intervalMs;
    this.#timeoutMs = o.timeoutMs ?? defaultHealthCheck.timeoutMs;
    this.#clock = o.clock ?? systemClock;
    this.#backoff = new Backoff(systemRandom, o.backoff ?? defaultBackoff);
    this.#request = encodeHealthRequest(this.#service);
    this.#connection = new BackendConnection({
      address: endpoint.address,
      onStateChange: (state) => this.#onConnection(state),
      keepaliveMs: o.keepaliveMs ?? 20_000,
      keepaliveTimeoutMs: o.keepaliveTimeoutMs ?? 10_000,
      connectTimeoutMs: o.connectTimeoutMs ?? 5000,
      maxSessions: 1,
      windowSize: 65_535,
      ...(o.backoff ? { backoff: o.backoff } : {}),
    });
  }

  start(): void {
    this.#signal.addEventListener("abort", () => this.#stop(), { once: true });
    this.#armAnswerTimer(`no health answer within ${this.#timeoutMs} ms`);
    this.#connection.start();
  }

  #stop(): void {
    this.#endMode();
    this.#mode = { kind: "stopped" };
    clearTimeout(this.#answerTimer);
    this.#connection.destroy();
  }

  /** Cancels whatever the current mode has in flight (its callbacks never run afterwards). */
  #endMode(): void {
    const m = this.#mode;
    switch (m.kind) {
      case "watching":
        m.call.cancel();
        break;
      case "retrying":
        clearTimeout(m.timer);
        break;
      case "polling":
        m.call?.cancel();
        clearTimeout(m.timer);
        break;
      case "waiting":
      case "unimplemented":
      case "stopped":
        break;
    }
  }

  #report(health: Health, detail: string): void {
    if (this.#mode.kind === "stopped") return;
    if (health === this.#health && detail === this.#detail) return;
    this.#health = health;
    this.#detail = detail;
    this.#onChange(health, detail);
  }

  /** An answer arrived: it is the verdict, and any pending "no answer" verdict is void. */
  #answer(health: Health, detail: string): void {
    clearTimeout(this.#answerTimer);
    this.#answerTimer = undefined;
    this.#report(health, detail);
  }

  #armAnswerTimer(detail: string): void {
    if (this.#answerTimer !== undefined) return;
    this.#answerTimer = setTimeout(() => {
      this.#answerTimer = undefined;
      this.#report("not-serving", detail);
    }, this.#timeoutMs);
    this.#answerTimer.unref();
  }

  #onConnection(state: BackendState): void {
    if (this.#mode.kind === "stopped") return;
    switch (state.kind) {
      case "ready":
        // A new connection (first, or after a failure): possibly a new process, so start from Watch.
        // (A session hand-over after GOAWAY can also pass through connecting → ready; a Watch or poll
        // already running carries on.)
        if (this.#mode.kind === "waiting" || this.#mode.kind === "unimplemented") {
          this.#endMode();
          this.#startWatch();
        }
        return;
      case "transient-failure":
        this.#endMode();
        this.#mode = { kind: "waiting" };
        this.#answer("not-serving", `unreachable: ${state.error}`);
        return;
      case "idle":
      case "connecting":
      case "shutdown":
        return;
    }
  }

  #startWatch(): void {
    if (this.#connection.state.kind !== "ready") {
      this.#mode = { kind: "waiting" };
      return;
    }
    const startedAt = this.#clock.now();
    let answered = false;
    this.#armAnswerTimer(`no answer to Watch within ${this.#timeoutMs} ms`);
    const call = startCall(this.#connection, WATCH_PATH, this.#request, {
      cancelOnGoaway: true,
      message: (body) => {
        answered = true;
        this.#answer(...verdictOf(body));
      },
      end: (code, message) => this.#watchEnded(code, message, answered, startedAt),
    });
    this.#mode = { kind: "watching", call };
  }

  #watchEnded(code: number, message: string, answered: boolean, startedAt: number): void {
    if (code === Status.UNIMPLEMENTED && !answered) {
      // A17: Watch is not supported; do not retry it. Fall back to polling Check.
      this.#mode = { kind: "polling", call: undefined, timer: undefined };
      this.#check();
      return;
    }
    const reason = `Watch ended: ${statusName(code)}${message ? ` (${message})` : ""}`;
    if (answered) {
      this.#backoff.reset();
      // Keep the last answer while the Watch is re-opened (see the decisions above).
      this.#armAnswerTimer(`${reason}; no answer since`);
    } else {
      this.#answer("not-serving", reason);
    }
    const delay = answered && this.#clock.now() - startedAt >= STABLE_MS ? 0 : this.#backoff.next();
    const timer = setTimeout(() => this.#startWatch(), delay);
    timer.unref();
    this.#mode = { kind: "retrying", timer };
  }

  #check(): void {
    const mode = this.#mode;
    if (mode.kind !== "polling") return;
    mode.timer = undefined;
    if (this.#connection.state.kind !== "ready") {
      this.#mode = { kind: "waiting" };
      return;
    }
    let verdict: [Health, string] | undefined;
    mode.call = startCall(this.#connection, CHECK_PATH, this.#request, {
      timeoutMs: this.#timeoutMs,
      message: (body) => {
        verdict = verdictOf(body);
      },
      end: (code, message) => {
        mode.call = undefined;
        if (code === Status.UNIMPLEMENTED) {
          // Neither Watch nor Check: the backend has no health service. grpc-js and A17 treat that as
          // healthy; so do we, until the connection is re-made (then it is asked again).
          this.#mode = { kind: "unimplemented" };
          this.#answer(
            "serving",
            "no health service (Watch and Check are UNIMPLEMENTED): treated as serving",
          );
          return;
        }
        if (code === Status.OK && verdict !== undefined) this.#answer(...verdict);
        else if (code === Status.OK) this.#answer("not-serving", "Check answered OK without a message");
        else if (code === Status.NOT_FOUND)
          this.#answer("not-serving", `service "${this.#service}" is unknown to the backend (NOT_FOUND)`);
        else if (code === Status.DEADLINE_EXCEEDED)
          this.#answer("not-serving", `Check timed out after ${this.#timeoutMs} ms`);
        else
          this.#answer("not-serving", `Check failed: ${statusName(code)}${message ? ` (${message})` : ""}`);
        if (this.#mode !== mode) return;
        mode.timer = setTimeout(() => this.#check(), this.#intervalMs);
        mode.timer.unref();
      },
    });
  }
}

/** The health a HealthCheckResponse body stands for, with its detail. */
function verdictOf(body: Buffer): [Health, string] {
  let status: number;
  try {
    status = decodeHealthResponse(body);
  } catch (err) {
    return ["not-serving", `malformed HealthCheckResponse: ${(err as Error).message}`];
  }
  return status === ServingStatus.SERVING
    ? ["serving", "SERVING"]
    : ["not-serving", servingStatusName(status)];
}
