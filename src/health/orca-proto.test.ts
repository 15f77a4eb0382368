import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import {
  decodeOrcaLoadReport,
  decodeOrcaRequest,
  encodeOrcaLoadReport,
  encodeOrcaRequest,
  frameMessage,
  ORCA_SERVICE,
} from "./orca-proto.ts";

// protobufjs (through proto-loader) reading our .proto files: an independent check of the hand encoding.
const protoDir = fileURLToPath(new URL("../../proto/", import.meta.url));
const pkg = protoLoader.loadSync("xds/service/orca/v3/orca.proto", {
  includeDirs: [protoDir],
  keepCase: true,
  longs: Number,
  defaults: true,
});
const method = (pkg[ORCA_SERVICE] as grpc.ServiceDefinition)["StreamCoreMetrics"]!;

describe("orca-proto", () => {
  test("a full report round-trips through our encoder and protobufjs's decoder, and back", () => {
    const report = {
      cpuUtilization: 0.75,
      memUtilization: 0.5,
      rps: 120,
      requestCost: { db: 3, "": 1.5 },
      utilization: { disk: 0.25 },
      rpsFractional: 119.5,
      eps: 0.125,
      namedMetrics: { "roster.skill.a": 1234.5, "roster.skill.b/c": 1e-9, "x.ü": -2 },
      applicationUtilization: 1.25,
    };
    const bytes = encodeOrcaLoadReport(report);
    const theirs = method.responseDeserialize(bytes) as Record<string, unknown>;
    assert.deepEqual(
      { ...theirs },
      {
        cpu_utilization: 0.75,
        mem_utilization: 0.5,
        rps: 120,
        request_cost: { db: 3, "": 1.5 },
        utilization: { disk: 0.25 },
        rps_fractional: 119.5,
        eps: 0.125,
        named_metrics: { "roster.skill.a": 1234.5, "roster.skill.b/c": 1e-9, "x.ü": -2 },
        application_utilization: 1.25,
      },
    );
    const back = decodeOrcaLoadReport(method.responseSerialize(theirs));
    assert.deepEqual(
      {
        ...back,
        requestCost: { ...back.requestCost },
        utilization: { ...back.utilization },
        namedMetrics: { ...back.namedMetrics },
      },
      report,
    );
  });

  test("an empty report encodes to no bytes and decodes to zeros and empty maps", () => {
    assert.equal(encodeOrcaLoadReport({}).length, 0);
    const r = decodeOrcaLoadReport(Buffer.alloc(0));
    assert.equal(r.cpuUtilization, 0);
    assert.deepEqual(Object.keys(r.namedMetrics), []);
  });

  test("a named_metrics entry is field 8 holding key 1 and value 2, byte for byte", () => {
    const bytes = encodeOrcaLoadReport({ namedMetrics: { a: 1 } });
    const one = Buffer.alloc(8);
    one.writeDoubleLE(1);
    assert.deepEqual([...bytes], [0x42, 12, 0x0a, 1, 0x61, 0x11, ...one]);
  });

  test("map entries with a missing key or value read as the empty key and 0, and the last duplicate wins", () => {
    const two = Buffer.alloc(8);
    two.writeDoubleLE(2);
    const body = Buffer.from([0x42, 0, 0x42, 3, 0x0a, 1, 0x62, 0x42, 12, 0x0a, 1, 0x62, 0x11, ...two]);
    const r = decodeOrcaLoadReport(body);
    assert.deepEqual({ ...r.namedMetrics }, { "": 0, b: 2 });
  });

  test("a __proto__ key is an ordinary key and non-finite values come back as sent", () => {
    const r = decodeOrcaLoadReport(
      encodeOrcaLoadReport({ namedMetrics: JSON.parse('{"__proto__": 5}') as Record<string, number> }),
    );
    assert.equal(Object.getPrototypeOf(r.namedMetrics), null);
    assert.deepEqual(Object.entries(r.namedMetrics), [["__proto__", 5]]);
    const inf = decodeOrcaLoadReport(
      encodeOrcaLoadReport({ namedMetrics: { x: Infinity }, cpuUtilization: NaN }),
    );
    assert.equal(inf.namedMetrics["x"], Infinity);
    assert.ok(Number.isNaN(inf.cpuUtilization));
  });

  test("malformed and oversized reports throw instead of decoding", () => {
    assert.throws(() => decodeOrcaLoadReport(Buffer.from([0x09, 1, 2])), /truncated double/);
    assert.throws(() => decodeOrcaLoadReport(Buffer.from([0x42, 5, 0x0a])), /truncated field/);
    assert.throws(() => decodeOrcaLoadReport(Buffer.from([0x08, 1])), /wire type 0, expected 1/);
    assert.throws(() => decodeOrcaLoadReport(Buffer.from([0x40, 1])), /namedMetrics has wire type 0/);
    assert.throws(() => decodeOrcaLoadReport(Buffer.from([0x00, 1])), /field number 0/);
    assert.throws(() => decodeOrcaLoadReport(Buffer.from([0x0b])), /wire type 3/);
    const many = encodeOrcaLoadReport({
      namedMetrics: Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`k${i}`, i])),
    });
    assert.throws(() => decodeOrcaLoadReport(many, 10), /more than 10 map entries/);
    assert.equal(Object.keys(decodeOrcaLoadReport(many, 11).namedMetrics).length, 11);
  });

  test("unknown fields of every wire type are skipped", () => {
    const body = Buffer.concat([
      Buffer.from([0x50, 0x96, 0x01]), // field 10 varint
      Buffer.from([0x5a, 2, 0x41, 0x42]), // field 11 bytes
      Buffer.from([0x65, 1, 2, 3, 4]), // field 12 fixed32
      encodeOrcaLoadReport({ eps: 3 }),
    ]);
    assert.equal(decodeOrcaLoadReport(body).eps, 3);
  });

  test("a request's report interval and cost names round-trip through protobufjs", () => {
    const bytes = encodeOrcaRequest({ reportIntervalMs: 1500.25, requestCostNames: ["a", "b"] });
    const theirs = method.requestDeserialize(bytes) as {
      report_interval: { seconds: number; nanos: number };
      request_cost_names: string[];
    };
    assert.deepEqual(theirs.report_interval, { seconds: 1, nanos: 500_250_000 });
    assert.deepEqual(theirs.request_cost_names, ["a", "b"]);
    const back = decodeOrcaRequest(
      method.requestSerialize({ report_interval: { seconds: 2, nanos: 5_000_000 }, request_cost_names: [] }),
    );
    assert.deepEqual(back, { reportIntervalMs: 2005, requestCostNames: [] });
    assert.deepEqual(decodeOrcaRequest(Buffer.alloc(0)), { reportIntervalMs: 0, requestCostNames: [] });
  });

  test("frameMessage adds the uncompressed 5-byte prefix", () => {
    assert.deepEqual([...frameMessage(Buffer.from([7, 8]))], [0, 0, 0, 0, 2, 7, 8]);
  });
});
