/**
 * The two grpc.health.v1 messages the checker needs, encoded by hand (HealthCheckRequest is one string
 * field, HealthCheckResponse one enum field), plus a reader of gRPC length-prefixed messages. Pure: no
 * I/O. A protobuf runtime for two fields would cost more than this file.
 *
 *   message HealthCheckRequest  { string service = 1; }
 *   message HealthCheckResponse { ServingStatus status = 1; }
 *   enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
 *
 * (grpc-health-check's proto/health/v1/health.proto, which the tests' servers use.)
 */

export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;

const statusNames = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/** "NOT_SERVING" for 2; "ServingStatus 7" for values outside the enum. */
export function servingStatusName(value: number): string {
  return statusNames[value] ?? `ServingStatus ${value}`;
}

/** A HealthCheckRequest as a gRPC message (5-byte prefix included). */
export function encodeHealthRequest(service: string): Buffer {
  const name = Buffer.from(service, "utf8");
  // proto3: the empty string is the default and is not written.
  const body =
    name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  const out = Buffer.allocUnsafe(5 + body.length);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  let v = n;
  // Bounded: a 32-bit length has at most 5 groups of 7 bits.
  while (v > 0x7f) {
    bytes.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

/**
 * The `status` of a HealthCheckResponse body (without the prefix). Unknown fields are skipped, as
 * protobuf requires; a missing status is UNKNOWN (0). Throws on malformed bytes.
 */
export function decodeHealthResponse(body: Buffer): number {
  let status: number = ServingStatus.UNKNOWN;
  let pos = 0;
  const readVarint = (): number => {
    let result = 0;
    let shift = 0;
    // Bounded: at most 10 bytes per varint.
    for (let i = 0; i < 10; i++) {
      if (pos >= body.length) throw new Error("truncated varint");
      const b = body[pos++]!;
      // Past 2^53 precision is lost, which no field we read can reach; later groups only skip.
      if (shift < 53) result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) return result;
    }
    throw new Error("varint longer than 10 bytes");
  };
  const skip = (n: number) => {
    if (pos + n > body.length) throw new Error("truncated field");
    pos += n;
  };
  // Bounded by the body: every turn consumes at least one byte.
  while (pos < body.length) {
    const tag = readVarint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 0) throw new Error("field number 0");
    switch (wire) {
      case 0: {
        const v = readVarint();
        // Enums are int32: negative values arrive as 10-byte varints; anything not 0–3 is "other".
        if (field === 1) status = v <= 0x7fffffff ? v : -1;
        break;
      }
      case 1:
        skip(8);
        break;
      case 2:
        skip(readVarint());
        break;
      case 5:
        skip(4);
        break;
      default:
        throw new Error(`unsupported wire type ${wire}`);
    }
  }
  return status;
}

/**
 * Splits a stream of DATA chunks into gRPC messages. `push` returns the complete message bodies so far.
 * Throws on a compressed message (we never offer an encoding, so a server must not send one) or one
 * larger than `maxBytes`.
 */
export class MessageReader {
  readonly #maxBytes: number;
  #pending: Buffer = Buffer.alloc(0);

  constructor(maxBytes = 64 * 1024) {
    this.#maxBytes = maxBytes;
  }

  push(chunk: Buffer): Buffer[] {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const out: Buffer[] = [];
    // Bounded by the buffered bytes: every turn consumes a whole message or stops.
    while (this.#pending.length >= 5) {
      const flag = this.#pending.readUInt8(0);
      const length = this.#pending.readUInt32BE(1);
      if (flag !== 0) throw new Error("compressed message without a negotiated encoding");
      if (length > this.#maxBytes)
        throw new Error(`message of ${length} bytes is larger than ${this.#maxBytes}`);
      if (this.#pending.length < 5 + length) break;
      out.push(this.#pending.subarray(5, 5 + length));
      this.#pending = this.#pending.subarray(5 + length);
    }
    return out;
  }

  /** Bytes of an incomplete message still held (non-zero at stream end means a truncated message). */
  get pendingBytes(): number {
    return this.#pending.length;
  }
}
