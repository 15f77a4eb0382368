// A grpc-js backend that reports fixed load figures over ORCA out-of-band
// (xds.service.orca.v3.OpenRcaService/StreamCoreMetrics), for weighted_round_robin tests: the
// roster.test.Echo service's unary Echo (replies name the backend in `served_by`) beside an ORCA service
// that sends the same report at once and then every interval the client asked for.
//
//   const b = await startOrcaBackend({ id: "a", report: { rpsFractional: 100, cpuUtilization: 0.25 } });
//   ... await b.close();
//
// Without `report`, the server has no ORCA service (the client gets UNIMPLEMENTED).
import * as grpc from "@grpc/grpc-js";
import {
  encodeOrcaLoadReport,
  type OrcaLoadReport,
  type OrcaLoadReportRequest,
} from "../../src/health/orca-proto.ts";
import { orcaServiceDefinition } from "../../src/server/resume.ts";
import { type EchoReply, type EchoRequest, echoService } from "./echo-backend.ts";

export interface OrcaBackendOptions {
  readonly id: string;
  /** The figures every report carries; absent: no ORCA service. */
  readonly report?: Partial<OrcaLoadReport>;
  /** Shortest report interval served, whatever the client asks. Default 50 ms. */
  readonly minIntervalMs?: number;
}

export interface OrcaBackend {
  readonly id: string;
  readonly port: number;
  /** "127.0.0.1:PORT". */
  readonly address: string;
  /** Echo calls served. */
  calls(): number;
  /** ORCA streams opened so far, and reports sent. */
  orca(): { streams: number; reports: number };
  /** Ends open calls and stops the server. */
  close(): Promise<void>;
}

export async function startOrcaBackend(o: OrcaBackendOptions): Promise<OrcaBackend> {
  const server = new grpc.Server();
  let calls = 0;
  let streams = 0;
  let reports = 0;
  const timers = new Set<NodeJS.Timeout>();

  server.addService(echoService, {
    Echo(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) {
      calls++;
      callback(null, {
        message: call.request.message,
        payload: Buffer.alloc(0),
        served_by: o.id,
        deadline_budget_ms: -1,
      });
    },
  });

  const figures = o.report;
  if (figures !== undefined) {
    const body = encodeOrcaLoadReport(figures);
    server.addService(orcaServiceDefinition, {
      StreamCoreMetrics(call: grpc.ServerWritableStream<OrcaLoadReportRequest, Buffer>) {
        streams++;
        const asked = call.request?.reportIntervalMs ?? 0;
        const intervalMs = Math.max(asked > 0 ? asked : 1000, o.minIntervalMs ?? 50);
        const send = () => {
          reports++;
          call.write(body);
        };
        send();
        const timer = setInterval(send, intervalMs);
        timers.add(timer);
        const stop = () => {
          clearInterval(timer);
          timers.delete(timer);
        };
        call.on("cancelled", stop);
        call.on("close", stop);
        call.on("error", stop);
      },
    });
  }

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });

  return {
    id: o.id,
    port,
    address: `127.0.0.1:${port}`,
    calls: () => calls,
    orca: () => ({ streams, reports }),
    close: async () => {
      for (const t of timers) clearInterval(t);
      timers.clear();
      server.forceShutdown();
    },
  };
}
