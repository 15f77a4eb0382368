// node --import tsx --test bench/serve-scaling/h2load.test.ts
import assert from "node:assert/strict";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { checkVerbose, ECHO_PATH, echoRequestFrame } from "./h2load.ts";

const PROTO = fileURLToPath(new URL("../../proto/roster/demo/echo.proto", import.meta.url));

test("echoRequestFrame is one gRPC message that decodes as the EchoRequest meant", () => {
  const def = protoLoader.loadSync(PROTO, { keepCase: true, defaults: true });
  const method = (def["roster.demo.Echo"] as protoLoader.ServiceDefinition)["Echo"]!;
  assert.equal(method.path, ECHO_PATH);
  for (const [size, workUs] of [
    [64, 50],
    [300, 1000],
    [0, 0],
  ] as const) {
    const payload = Buffer.alloc(size, 7);
    const frame = echoRequestFrame(payload, workUs);
    assert.equal(frame[0], 0, "uncompressed");
    assert.equal(frame.readUInt32BE(1), frame.length - 5, "length prefix");
    const request = method.requestDeserialize(frame.subarray(5)) as { payload: Buffer; work_us: number };
    assert.deepEqual(Buffer.from(request.payload), payload);
    assert.equal(request.work_us, workUs);
  }
});

test("checkVerbose tells replies from trailers-only answers (h2load counts both as succeeded)", () => {
  // h2load -v output, captured: a reply (status 200, grpc-status in the trailers, not printed) and an
  // UNIMPLEMENTED answer (trailers-only: grpc-status in the header block).
  const output = [
    "Application protocol: h2c",
    "[stream_id=1] :status: 200",
    "[stream_id=1] content-type: application/grpc+proto",
    "[stream_id=1] grpc-encoding: identity",
    "[stream_id=3] :status: 200",
    "[stream_id=3] grpc-status: 12",
    "[stream_id=3] grpc-message: The server does not implement the method /roster.demo.Echo/Nope",
    "[stream_id=5] :status: 503",
    "requests: 3 total, 3 started, 3 done, 2 succeeded, 1 failed, 0 errored, 0 timeout",
  ].join("\n");
  const seen = checkVerbose(output);
  assert.equal(seen.ok, 2);
  assert.deepEqual(seen.otherStatuses, ["503"]);
  assert.equal(seen.trailersOnly.length, 2);
  assert.match(seen.trailersOnly[0]!, /^grpc-status: 12$/);
});
