import { type CallStatus, Status, type StatusCode } from "../core/status.ts";
import { ErrorCode } from "../http2/frame.ts";

/**
 * What a proxied call does when its backend stream ends without a response (pure; table-tested in
 * call-decision.test.ts). The rules, after gRFC A6:
 *
 * - A stream that never reached the application — refused (REFUSED_STREAM, which is also how a
 *   stream above a GOAWAY's last-stream-id ends), or on a connection that never got the server's
 *   SETTINGS — is retried elsewhere while the request is still in the retry buffer and attempts
 *   remain ("transparent retry").
 * - A call whose connection was lost after it was sent may have run: retried only when the method is
 *   idempotent, no response byte reached the client, the buffer holds the request, attempts remain and
 *   the retry budget allows; otherwise UNAVAILABLE saying why not.
 * - A real RST_STREAM from the backend (not CANCEL / NO_ERROR) is passed to the client with the same
 *   code, so it maps it as it would directly.
 */
export interface ResetFacts {
  /** The RST_STREAM code (peer's, or REFUSED_STREAM for a GOAWAY above the stream, or CANCEL). */
  readonly code: number;
  /** The connection itself is gone (closed socket, or a fatal GOAWAY either way). */
  readonly connectionLost: boolean;
  /** The connection never received the server's SETTINGS: nothing reached the application. */
  readonly neverConnected: boolean;
  /** No response byte has gone to the client (and none is held back). */
  readonly uncommitted: boolean;
  /** Every request byte sent so far is still in the retry buffer. */
  readonly buffered: boolean;
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly idempotent: boolean;
  /** The retry budget (gRFC A6 throttling) allows one more retry of a call that reached a backend. */
  readonly budgetAllows: boolean;
  readonly path: string;
  readonly backend: string;
}

export type ResetDecision =
  | { readonly kind: "retry"; readonly reason: string; readonly transparent: boolean }
  | { readonly kind: "fail"; readonly status: CallStatus }
  /** Reset the client's stream with the same code. */
  | { readonly kind: "pass-reset"; readonly code: number; readonly status: StatusCode };

export function decideAfterReset(f: ResetFacts): ResetDecision {
  const canRetry = f.uncommitted && f.buffered && f.attempts < f.maxAttempts;
  const refused = f.code === ErrorCode.REFUSED_STREAM;
  if (f.uncommitted && (refused || f.neverConnected)) {
    const reason = refused ? "refused the stream" : "closed before the call was sent";
    if (canRetry) return { kind: "retry", reason, transparent: true };
    return {
      kind: "fail",
      status: {
        code: Status.UNAVAILABLE,
        message: `roster: backend ${f.backend} ${reason}; not retried: ${whyNot(f)}`,
      },
    };
  }
  if (f.connectionLost) {
    if (canRetry && f.idempotent && f.budgetAllows)
      return { kind: "retry", reason: "was lost during an idempotent call", transparent: false };
    const why = !f.uncommitted
      ? "the response had already begun"
      : !f.idempotent
        ? `the call may have run and ${f.path} is not marked idempotent`
        : !f.budgetAllows && f.buffered && f.attempts < f.maxAttempts
          ? "the retry budget is spent (too many failures in this cluster)"
          : whyNot(f);
    return {
      kind: "fail",
      status: {
        code: Status.UNAVAILABLE,
        message: `roster: connection to backend ${f.backend} was lost during the call (did it crash?); not retried: ${why}`,
      },
    };
  }
  if (f.code !== ErrorCode.NO_ERROR && f.code !== ErrorCode.CANCEL) {
    return { kind: "pass-reset", code: f.code, status: statusFromRstCode(f.code) };
  }
  return {
    kind: "fail",
    status: {
      code: statusFromRstCode(f.code),
      message: `roster: backend ${f.backend} closed the stream (code ${f.code})`,
    },
  };
}

function whyNot(f: ResetFacts): string {
  if (!f.buffered) return "the request was larger than the retry buffer";
  if (f.attempts >= f.maxAttempts) return `all ${f.attempts} attempts failed`;
  return "the response had already begun";
}

/** The status a gRPC client maps an RST_STREAM code to (gRPC over HTTP/2, "Errors"). */
export function statusFromRstCode(code: number): StatusCode {
  switch (code) {
    case ErrorCode.REFUSED_STREAM:
      return Status.UNAVAILABLE;
    case ErrorCode.CANCEL:
      return Status.CANCELLED;
    case ErrorCode.ENHANCE_YOUR_CALM:
      return Status.RESOURCE_EXHAUSTED;
    case ErrorCode.INADEQUATE_SECURITY:
      return Status.PERMISSION_DENIED;
    case ErrorCode.NO_ERROR:
    case ErrorCode.PROTOCOL_ERROR:
    case ErrorCode.INTERNAL_ERROR:
    case ErrorCode.FLOW_CONTROL_ERROR:
    case ErrorCode.SETTINGS_TIMEOUT:
    case ErrorCode.STREAM_CLOSED:
    case ErrorCode.FRAME_SIZE_ERROR:
    case ErrorCode.COMPRESSION_ERROR:
    case ErrorCode.CONNECT_ERROR:
      return Status.INTERNAL;
    default:
      return Status.UNKNOWN;
  }
}
