/**
 * ORCA out-of-band load reports, encoded and decoded by hand (proto/xds/data/orca/v3 and
 * proto/xds/service/orca/v3 document the messages). Pure: no I/O. Used by Roster workers, which serve
 * `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`, and by the balancer's ORCA client.
 *
 * Wire notes (protobuf encoding):
 * - doubles are wire type 1 (8 bytes, little-endian); proto3 omits a field equal to its default (0);
 * - a `map<string, double>` is a repeated length-delimited entry `{ string key = 1; double value = 2; }`;
 *   a missing key reads as "", a missing value as 0, and a key seen twice keeps its last value;
 * - `google.protobuf.Duration` is `{ int64 seconds = 1; int32 nanos = 2; }`.
 *
 * Decoding is for untrusted peers: every length is checked against the body, unknown fields are
 * skipped, a value of the wrong wire type for a known field is an error, and maps are capped
 * (`maxEntries` over all maps together) so a hostile report cannot make us build a huge object.
 * Map objects have no prototype, so a key like "__proto__" is an ordinary key.
 */

/** An OrcaLoadReport. Absent fields are 0 / empty, as proto3 reads them. */
export interface OrcaLoadReport {
  readonly cpuUtilization: number;
  readonly memUtilization: number;
  /** The deprecated integer rps (uint64; values past 2^53 lose precision). */
  readonly rps: number;
  readonly requestCost: Readonly<Record<string, number>>;
  readonly utilization: Readonly<Record<string, number>>;
  readonly rpsFractional: number;
  readonly eps: number;
  readonly namedMetrics: Readonly<Record<string, number>>;
  readonly applicationUtilization: number;
}

/** An OrcaLoadReportRequest. `reportIntervalMs` 0 means none was given. */
export interface OrcaLoadReportRequest {
  readonly reportIntervalMs: number;
  readonly requestCostNames: readonly string[];
}

export const ORCA_SERVICE = "xds.service.orca.v3.OpenRcaService";
export const ORCA_STREAM_PATH = `/${ORCA_SERVICE}/StreamCoreMetrics`;

/** Default cap on map entries (all maps of one report together) when decoding. */
export const DEFAULT_MAX_ENTRIES = 10_000;

// --- encoding --------------------------------------------------------------------------------

class Writer {
  readonly #parts: Buffer[] = [];
  #length = 0;

  bytes(b: Buffer): void {
    this.#parts.push(b);
    this.#length += b.length;
  }

  varint(n: number): void {
    const out: number[] = [];
    let v = n;
    // Bounded: a safe integer has at most 8 groups of 7 bits.
    while (v > 0x7f) {
      out.push((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    out.push(v);
    this.bytes(Buffer.from(out));
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  double(field: number, value: number): void {
    if (value === 0) return;
    this.tag(field, 1);
    const b = Buffer.allocUnsafe(8);
    b.writeDoubleLE(value, 0);
    this.bytes(b);
  }

  uint(field: number, value: number): void {
    if (value === 0) return;
    this.tag(field, 0);
    this.varint(value);
  }

  string(field: number, value: string): void {
    const b = Buffer.from(value, "utf8");
    this.lengthDelimited(field, b);
  }

  lengthDelimited(field: number, body: Buffer): void {
    this.tag(field, 2);
    this.varint(body.length);
    this.bytes(body);
  }

  map(field: number, entries: Readonly<Record<string, number>> | undefined): void {
    if (entries === undefined) return;
    for (const [key, value] of Object.entries(entries)) {
      const entry = new Writer();
      if (key !== "") entry.string(1, key);
      entry.double(2, value);
      this.lengthDelimited(field, entry.finish());
    }
  }

  finish(): Buffer {
    return Buffer.concat(this.#parts, this.#length);
  }
}

/** A report body (no gRPC prefix). Fields left out are not written. */
export function encodeOrcaLoadReport(report: Partial<OrcaLoadReport>): Buffer {
  const w = new Writer();
  w.double(1, report.cpuUtilization ?? 0);
  w.double(2, report.memUtilization ?? 0);
  const rps = report.rps ?? 0;
  if (!Number.isSafeInteger(rps) || rps < 0)
    throw new RangeError(`rps must be a whole number ≥ 0, got ${rps}`);
  w.uint(3, rps);
  w.map(4, report.requestCost);
  w.map(5, report.utilization);
  w.double(6, report.rpsFractional ?? 0);
  w.double(7, report.eps ?? 0);
  w.map(8, report.namedMetrics);
  w.double(9, report.applicationUtilization ?? 0);
  return w.finish();
}

/** A request body (no gRPC prefix). */
export function encodeOrcaRequest(request: Partial<OrcaLoadReportRequest>): Buffer {
  const w = new Writer();
  const ms = request.reportIntervalMs ?? 0;
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`reportIntervalMs must be ≥ 0, got ${ms}`);
  if (ms > 0) {
    const d = new Writer();
    const seconds = Math.floor(ms / 1000);
    d.uint(1, seconds);
    d.uint(2, Math.round((ms - seconds * 1000) * 1e6));
    w.lengthDelimited(1, d.finish());
  }
  for (const name of request.requestCostNames ?? []) w.string(2, name);
  return w.finish();
}

/** A message body with the 5-byte gRPC prefix (uncompressed). */
export function frameMessage(body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

// --- decoding --------------------------------------------------------------------------------

class Reader {
  readonly #body: Buffer;
  #pos: number;
  readonly #end: number;

  constructor(body: Buffer, start = 0, end = body.length) {
    this.#body = body;
    this.#pos = start;
    this.#end = end;
  }

  get done(): boolean {
    return this.#pos >= this.#end;
  }

  varint(): number {
    let result = 0;
    let shift = 0;
    // Bounded: at most 10 bytes per varint.
    for (let i = 0; i < 10; i++) {
      if (this.#pos >= this.#end) throw new Error("truncated varint");
      const b = this.#body[this.#pos++]!;
      if (shift < 64) result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) return result;
    }
    throw new Error("varint longer than 10 bytes");
  }

  double(): number {
    if (this.#pos + 8 > this.#end) throw new Error("truncated double");
    const v = this.#body.readDoubleLE(this.#pos);
    this.#pos += 8;
    return v;
  }

  /** A length-delimited field's [start, end) within the body. */
  span(): [number, number] {
    const n = this.varint();
    if (n > this.#end - this.#pos) throw new Error("truncated field");
    const start = this.#pos;
    this.#pos += n;
    return [start, this.#pos];
  }

  string(): string {
    const [start, end] = this.span();
    return this.#body.toString("utf8", start, end);
  }

  sub(): Reader {
    const [start, end] = this.span();
    return new Reader(this.#body, start, end);
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        if (this.#pos + 8 > this.#end) throw new Error("truncated field");
        this.#pos += 8;
        return;
      case 2:
        this.span();
        return;
      case 5:
        if (this.#pos + 4 > this.#end) throw new Error("truncated field");
        this.#pos += 4;
        return;
      default:
        throw new Error(`unsupported wire type ${wire}`);
    }
  }

  /** The next tag as [field, wire]. */
  tag(): [number, number] {
    const tag = this.varint();
    const field = Math.floor(tag / 8);
    if (field === 0) throw new Error("field number 0");
    return [field, tag % 8];
  }
}

function expectWire(field: string, wire: number, expected: number): void {
  if (wire !== expected) throw new Error(`${field} has wire type ${wire}, expected ${expected}`);
}

/** One map entry: { string key = 1; double value = 2; }. */
function readEntry(r: Reader, name: string): [string, number] {
  let key = "";
  let value = 0;
  // Bounded by the entry's bytes: every turn consumes at least one.
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) {
      expectWire(`${name} key`, wire, 2);
      key = r.string();
    } else if (field === 2) {
      expectWire(`${name} value`, wire, 1);
      value = r.double();
    } else r.skip(wire);
  }
  return [key, value];
}

/**
 * A report body (without the prefix). Throws on malformed bytes and when the maps hold more than
 * `maxEntries` entries together. Values are returned as sent (NaN and ±Infinity included): judging
 * them is the reader's business.
 */
export function decodeOrcaLoadReport(body: Buffer, maxEntries = DEFAULT_MAX_ENTRIES): OrcaLoadReport {
  const r = new Reader(body);
  const maps = {
    requestCost: Object.create(null) as Record<string, number>,
    utilization: Object.create(null) as Record<string, number>,
    namedMetrics: Object.create(null) as Record<string, number>,
  };
  const mapOf: Record<number, keyof typeof maps> = { 4: "requestCost", 5: "utilization", 8: "namedMetrics" };
  const doubles: Record<number, number> = {};
  let rps = 0;
  let entries = 0;
  // Bounded by the body: every turn consumes at least one byte.
  while (!r.done) {
    const [field, wire] = r.tag();
    const map = mapOf[field];
    if (map !== undefined) {
      expectWire(map, wire, 2);
      if (++entries > maxEntries) throw new Error(`more than ${maxEntries} map entries`);
      const [key, value] = readEntry(r.sub(), map);
      maps[map][key] = value;
    } else if (field === 3) {
      expectWire("rps", wire, 0);
      rps = r.varint();
    } else if (field === 1 || field === 2 || field === 6 || field === 7 || field === 9) {
      expectWire(`field ${field}`, wire, 1);
      doubles[field] = r.double();
    } else r.skip(wire);
  }
  return {
    cpuUtilization: doubles[1] ?? 0,
    memUtilization: doubles[2] ?? 0,
    rps,
    ...maps,
    rpsFractional: doubles[6] ?? 0,
    eps: doubles[7] ?? 0,
    applicationUtilization: doubles[9] ?? 0,
  };
}

/** A request body (without the prefix). Throws on malformed bytes. At most 1000 cost names are kept. */
export function decodeOrcaRequest(body: Buffer): OrcaLoadReportRequest {
  const r = new Reader(body);
  let reportIntervalMs = 0;
  const requestCostNames: string[] = [];
  // Bounded by the body: every turn consumes at least one byte.
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) {
      expectWire("report_interval", wire, 2);
      const d = r.sub();
      let seconds = 0;
      let nanos = 0;
      // Bounded by the duration's bytes.
      while (!d.done) {
        const [f, w] = d.tag();
        if (f === 1 && w === 0) seconds = d.varint();
        else if (f === 2 && w === 0) nanos = d.varint();
        else d.skip(w);
      }
      // Negative int64/int32 values arrive as huge varints: read them as "no interval".
      reportIntervalMs = seconds >= 2 ** 53 || nanos > 999_999_999 ? 0 : seconds * 1000 + nanos / 1e6;
    } else if (field === 2) {
      expectWire("request_cost_names", wire, 2);
      const name = r.string();
      if (requestCostNames.length < 1000) requestCostNames.push(name);
    } else r.skip(wire);
  }
  return { reportIntervalMs, requestCostNames };
}
