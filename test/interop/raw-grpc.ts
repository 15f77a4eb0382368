// A minimal gRPC-over-HTTP/2 call made with node:http2 directly, used only where the grpc-js client cannot
// observe what the interop spec asks to check: the compressed flag of each response message. It parses the
// 5-byte message prefixes itself and so sees the frames exactly as they arrived (through any proxy).
import * as http2 from "node:http2";
import { gunzipSync, inflateSync } from "node:zlib";

export interface RawMessage {
  /** The compressed flag (first prefix byte) as received. */
  compressed: boolean;
  /** Message bytes, decompressed when the flag was set. */
  body: Buffer;
}

export interface RawCallResult {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  messages: RawMessage[];
  /** grpc-status from the trailers, or from the headers of a trailers-only response. */
  status: number;
  message: string;
}

function frame(body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(body.length + 5);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

function headerString(h: http2.IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseMessages(data: Buffer, encoding: string): RawMessage[] {
  const out: RawMessage[] = [];
  let off = 0;
  // Each iteration consumes at least the 5-byte prefix, so the loop is bounded by data.length / 5.
  while (off < data.length) {
    if (data.length - off < 5) throw new Error(`truncated gRPC message prefix at byte ${off}`);
    const flag = data.readUInt8(off);
    const len = data.readUInt32BE(off + 1);
    if (data.length - off - 5 < len) throw new Error(`truncated gRPC message body at byte ${off}`);
    const payload = data.subarray(off + 5, off + 5 + len);
    off += 5 + len;
    if (flag > 1) throw new Error(`invalid gRPC message flag ${flag}`);
    let body: Buffer = payload;
    if (flag === 1) {
      if (encoding === "gzip") body = gunzipSync(payload);
      else if (encoding === "deflate") body = inflateSync(payload);
      else throw new Error(`compressed message with grpc-encoding "${encoding}"`);
    }
    out.push({ compressed: flag === 1, body });
  }
  return out;
}

/** One call with the given request messages (sent uncompressed), bounded by timeoutMs. */
export function rawGrpcCall(
  target: string,
  path: string,
  requests: Buffer[],
  timeoutMs: number,
): Promise<RawCallResult> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${target}`);
    let settled = false;
    const finish = (err: Error | null, result?: RawCallResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      if (err) reject(err);
      else resolve(result!);
    };
    const timer = setTimeout(
      () => finish(new Error(`raw gRPC call ${path} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    session.on("error", (err) => finish(err));
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-accept-encoding": "identity,deflate,gzip",
      "grpc-timeout": `${timeoutMs}m`,
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      headers = h;
    });
    req.on("trailers", (t) => {
      trailers = t;
    });
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("error", (err) => finish(err));
    req.on("end", () => {
      try {
        const encoding = headerString(headers, "grpc-encoding") ?? "identity";
        const messages = parseMessages(Buffer.concat(chunks), encoding);
        const statusSource = headerString(trailers, "grpc-status") !== undefined ? trailers : headers;
        const statusText = headerString(statusSource, "grpc-status");
        if (statusText === undefined) throw new Error(`raw gRPC call ${path}: no grpc-status received`);
        const message = decodeURIComponent(headerString(statusSource, "grpc-message") ?? "");
        finish(null, { headers, trailers, messages, status: Number(statusText), message });
      } catch (err) {
        finish(err instanceof Error ? err : new Error(String(err)));
      }
    });
    for (const r of requests) req.write(frame(r));
    req.end();
  });
}
