// createClient's call kinds against the shared echo backend: unary as a promise, server, client and
// bidi streams as grpc-js streams, all through the limiter and the pool; a client made from a
// grpc-js loaded definition (as generated code gives one) as well as from a .proto.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import {
  type BidiStream,
  type ClientStream,
  createClient,
  laptop,
  type ServerStream,
  type Unary,
} from "../../src/client/index.ts";
import { type EchoBackend, startEchoBackend } from "../support/echo-backend.ts";

const ECHO_PROTO = fileURLToPath(new URL("../support/echo.proto", import.meta.url));

interface EchoRequest {
  message?: string;
  payload?: Buffer;
}
interface EchoReply {
  message: string;
  payload: Buffer;
  served_by: string;
}
interface EchoService {
  Echo: Unary<EchoRequest, EchoReply>;
  ServerStream: ServerStream<{ count: number; size: number }, EchoReply>;
  ClientStream: ClientStream<EchoRequest, { messages: string; bytes: string; served_by: string }>;
  Bidi: BidiStream<EchoRequest, EchoReply>;
}

describe("createClient call kinds", () => {
  let backend: EchoBackend;
  before(async () => {
    backend = await startEchoBackend({ id: "calls" });
  });
  after(async () => {
    await backend.close();
  });

  it("makes every kind of call, and counts none as running once they end", async () => {
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: backend.address,
      preset: laptop({ limiter: { maxConcurrent: 2 } }),
      // Strings for the uint64 counters of StreamSummary.
      loaderOptions: { keepCase: true, longs: String },
    });
    try {
      assert.equal((await client.Echo({ message: "hi" })).served_by, "calls");

      const streamed: string[] = [];
      const ss = client.ServerStream({ count: 3, size: 4 });
      for await (const r of ss) streamed.push((r as EchoReply).served_by);
      assert.deepEqual(streamed, ["calls", "calls", "calls"]);

      const { stream, response } = client.ClientStream();
      stream.write({ message: "a" });
      stream.write({ message: "b" });
      stream.end();
      const summary = await response;
      assert.equal(summary.messages, "2");

      const bidi = client.Bidi();
      const echoed: string[] = [];
      const ended = new Promise<void>((resolve, reject) => {
        bidi.on("data", (r: EchoReply) => echoed.push(r.message));
        bidi.on("end", resolve);
        bidi.on("error", reject);
      });
      bidi.write({ message: "x" });
      bidi.write({ message: "y" });
      bidi.end();
      await ended;
      assert.deepEqual(echoed, ["x", "y"]);

      // Four calls at once with a limit of 2: the others wait, and all succeed.
      const replies = await Promise.all([1, 2, 3, 4].map((i) => client.Echo({ message: `m${i}` })));
      assert.deepEqual(
        replies.map((r) => r.message),
        ["m1", "m2", "m3", "m4"],
      );
      const s = client.stats();
      assert.equal(s.running, 0);
      assert.equal(s.queued, 0);
      assert.equal(s.pool.inFlight, 0);
    } finally {
      client.close();
    }
  });

  it("takes a grpc-js service definition (a loaded or generated client's .service) instead of a .proto", async () => {
    const pkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(ECHO_PROTO, { keepCase: true }),
    ) as unknown as {
      roster: { test: { Echo: grpc.ServiceClientConstructor } };
    };
    const client = createClient({ definition: pkg.roster.test.Echo.service, target: backend.address });
    const fromConstructor = createClient({ definition: pkg.roster.test.Echo, target: backend.address });
    try {
      const reply = (await client.Echo!({ message: "def" })) as EchoReply;
      assert.equal(reply.message, "def");
      assert.equal(((await fromConstructor.Echo!({ message: "ctor" })) as EchoReply).message, "ctor");
      assert.throws(
        () =>
          createClient({
            definition: pkg.roster.test.Echo.service,
            target: backend.address,
            policy: "roster_nope",
          }),
        /policy roster_nope is not registered with grpc-js \(Roster's: roster_round_robin, .*roster_resume\)/,
      );
      assert.throws(
        () => createClient({ proto: ECHO_PROTO, service: "roster.test.Nope", target: backend.address }),
        /service roster\.test\.Nope is not in .*echo\.proto \(services: roster\.test\.Echo\)/,
      );
    } finally {
      client.close();
      fromConstructor.close();
    }
  });

  it("uses Roster's policies and roster:/// targets without registering them by hand", async () => {
    // This file never calls registerRosterPolicies(): createClient does.
    const client = createClient<EchoService>({
      proto: ECHO_PROTO,
      service: "roster.test.Echo",
      target: `roster:///${backend.address}`,
      policy: "roster_peak_ewma",
    });
    try {
      for (let i = 0; i < 5; i++) {
        const reply = await client.Echo({ message: `ewma-${i}` });
        assert.equal(reply.message, `ewma-${i}`);
        assert.equal(reply.served_by, "calls");
      }
    } finally {
      client.close();
    }
  });
});
