import http2 from "node:http2";
import { type CallStatus, Status, type StatusCode } from "../core/status.ts";

const {
  NGHTTP2_NO_ERROR,
  NGHTTP2_PROTOCOL_ERROR,
  NGHTTP2_INTERNAL_ERROR,
  NGHTTP2_FLOW_CONTROL_ERROR,
  NGHTTP2_SETTINGS_TIMEOUT,
  NGHTTP2_STREAM_CLOSED,
  NGHTTP2_FRAME_SIZE_ERROR,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_CANCEL,
  NGHTTP2_COMPRESSION_ERROR,
  NGHTTP2_CONNECT_ERROR,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_INADEQUATE_SECURITY,
} = http2.constants;

/**
 * Percent-encodes a grpc-message as the gRPC HTTP/2 spec asks: bytes outside 0x20–0x7E, and '%', as
 * %XX of their UTF-8 encoding. Messages from backends are forwarded untouched; this is only for ours.
 */
export function encodeGrpcMessage(message: string): string {
  let plain = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return message;
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte < 0x20 || byte > 0x7e || byte === 0x25
        ? `%${byte.toString(16).toUpperCase().padStart(2, "0")}`
        : String.fromCharCode(byte);
  }
  return out;
}

/** Headers of a trailers-only response carrying `status`. */
export function trailersOnly(status: CallStatus): http2.OutgoingHttpHeaders {
  return {
    ":status": 200,
    "content-type": "application/grpc",
    "grpc-status": String(status.code),
    "grpc-message": encodeGrpcMessage(status.message),
  };
}

/** Trailers carrying `status`, for a call whose response headers were already sent. */
export function statusTrailers(status: CallStatus): http2.OutgoingHttpHeaders {
  return { "grpc-status": String(status.code), "grpc-message": encodeGrpcMessage(status.message) };
}

/**
 * The status a gRPC client maps an RST_STREAM code to (gRPC over HTTP/2 spec, "Errors").
 */
export function statusFromRstCode(code: number): StatusCode {
  switch (code) {
    case NGHTTP2_REFUSED_STREAM:
      return Status.UNAVAILABLE;
    case NGHTTP2_CANCEL:
      return Status.CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return Status.RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
      return Status.PERMISSION_DENIED;
    case NGHTTP2_NO_ERROR:
    case NGHTTP2_PROTOCOL_ERROR:
    case NGHTTP2_INTERNAL_ERROR:
    case NGHTTP2_FLOW_CONTROL_ERROR:
    case NGHTTP2_SETTINGS_TIMEOUT:
    case NGHTTP2_STREAM_CLOSED:
    case NGHTTP2_FRAME_SIZE_ERROR:
    case NGHTTP2_COMPRESSION_ERROR:
    case NGHTTP2_CONNECT_ERROR:
      return Status.INTERNAL;
    default:
      return Status.UNKNOWN;
  }
}

/** The grpc-status number in a header/trailer block, or undefined. */
export function grpcStatusOf(headers: http2.IncomingHttpHeaders | undefined): number | undefined {
  const v = headers?.["grpc-status"];
  if (v === undefined) return undefined;
  const n = Number(Array.isArray(v) ? v[0] : v);
  return Number.isInteger(n) ? n : undefined;
}
