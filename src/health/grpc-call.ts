import http2 from "node:http2";
import { Status } from "../core/status.ts";
import type { BackendConnection } from "../platform/backend-connection.ts";
import { MessageReader } from "./health-proto.ts";

/**
 * One gRPC call with an encoded request on a BackendConnection, read as raw messages: what the health
 * checker (grpc-health.ts) and the ORCA client (orca-client.ts) share. Unary or server-streaming.
 */

/** One gRPC call in flight. */
export interface Call {
  cancel(): void;
}

export interface CallHandlers {
  /** Set for a call with a deadline: `grpc-timeout` is sent and the call ends DEADLINE_EXCEEDED locally too. */
  readonly timeoutMs?: number;
  /** End the call (UNAVAILABLE) when its connection gets GOAWAY, as A17 asks of a Watch. */
  readonly cancelOnGoaway?: boolean;
  /** Largest response message accepted; a larger one ends the call INTERNAL. Default 64 KiB. */
  readonly maxMessageBytes?: number;
  /** The user-agent header. Default "roster-health-check". */
  readonly userAgent?: string;
  message(body: Buffer): void;
  /** Exactly once, asynchronously, unless the call was cancelled. */
  end(code: number, message: string): void;
}

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM } = http2.constants;

/** HTTP status → gRPC status, for a response that is not gRPC (gRPC's http-grpc-status-mapping.md). */
function statusOfHttp(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}

function grpcMessageOf(headers: http2.IncomingHttpHeaders): string {
  const raw = headers["grpc-message"];
  if (typeof raw !== "string") return "";
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** Starts one unary or server-streaming gRPC call with an encoded request on `connection`. */
export function startCall(
  connection: BackendConnection,
  path: string,
  request: Buffer,
  h: CallHandlers,
): Call {
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  let stream: http2.ClientHttp2Stream | undefined;
  let session: http2.Http2Session | undefined;
  const onGoaway = () => finish(Status.UNAVAILABLE, "the connection got GOAWAY");
  const cleanUp = () => {
    done = true;
    clearTimeout(timer);
    session?.off("goaway", onGoaway);
    if (stream !== undefined && !stream.closed) stream.close(NGHTTP2_CANCEL);
  };
  const finish = (code: number, message: string) => {
    if (done) return;
    cleanUp();
    h.end(code, message);
  };

  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
    "user-agent": h.userAgent ?? "roster-health-check",
  };
  if (h.timeoutMs !== undefined) headers["grpc-timeout"] = `${Math.ceil(h.timeoutMs)}m`;
  try {
    stream = connection.request(headers);
  } catch (err) {
    // Asynchronous, as promised: the caller may still be setting up its mode.
    const message = `could not start the call: ${(err as Error).message}`;
    setImmediate(() => finish(Status.UNAVAILABLE, message));
    return { cancel: cleanUp };
  }
  const s = stream;
  session = s.session;
  if (h.cancelOnGoaway) session?.once("goaway", onGoaway);
  if (h.timeoutMs !== undefined) {
    timer = setTimeout(() => finish(Status.DEADLINE_EXCEEDED, "deadline exceeded"), h.timeoutMs);
    timer.unref();
  }
  const reader = new MessageReader(h.maxMessageBytes);
  let trailers: http2.IncomingHttpHeaders | undefined;
  s.on("error", () => {}); // surfaces as 'close'
  s.on("response", (head, flags) => {
    const httpStatus = Number(head[":status"]);
    if (httpStatus !== 200) {
      finish(statusOfHttp(httpStatus), `HTTP status ${httpStatus}`);
      return;
    }
    if (flags & NGHTTP2_FLAG_END_STREAM) trailers = head; // trailers-only
  });
  s.on("data", (chunk: Buffer) => {
    if (done) return;
    let messages: Buffer[];
    try {
      messages = reader.push(chunk);
    } catch (err) {
      finish(Status.INTERNAL, (err as Error).message);
      return;
    }
    for (const m of messages) if (!done) h.message(m);
  });
  s.on("trailers", (t) => {
    trailers = t;
  });
  s.on("close", () => {
    if (done) return;
    if (trailers !== undefined) {
      const code = Number(trailers["grpc-status"]);
      if (Number.isInteger(code) && code >= 0) {
        finish(code, grpcMessageOf(trailers));
        return;
      }
      finish(Status.UNKNOWN, "response without grpc-status");
      return;
    }
    const rst = s.rstCode ?? 0;
    finish(
      rst === NGHTTP2_CANCEL ? Status.CANCELLED : Status.UNAVAILABLE,
      rst === 0 ? "the stream closed without a status" : `the stream was reset (code ${rst})`,
    );
  });
  s.end(request);
  return { cancel: cleanUp };
}
