// Where the roster client's per-call cost goes: the same echo call through variants that add one
// piece of roster/client at a time to a plain grpc-js client (a diagnostic, not part of run.ts):
//   plain            generated grpc-js client, round_robin
//   plainRosterOpts  + the channel options createClient sets (keepalive, idle timeout, service config)
//   plainLimiter     + the concurrency limiter as a grpc-js interceptor
//   plainPool        + the ChannelPool as channelOverride
//   roster           createClient with presets.inRegion()
//   rosterNoRetry    the same without the A6 retry policy (retry: false)
//   rosterLR / rosterEwma   createClient with roster_least_request / roster_peak_ewma
// Timed mode: node --import tsx bench/client/variants.ts TARGET [concurrency] [rounds] — every variant in
// this process, interleaved in chunks of 5000 calls, median CPU µs per call.
// Callgrind mode (VARIANT, CG_DIR set; driven by callgrind.sh): one variant, WARM calls, then files in
// CG_DIR tell the driver when to zero and dump the counters around CALLS calls.
import { existsSync, renameSync, writeFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import {
  ChannelPool,
  createClient,
  createClientLimiter,
  presets,
  type Unary,
} from "../../src/client/index.ts";
import { buildServiceConfig, methodsOf } from "../../src/client/service-config.ts";
import {
  ECHO_PROTO,
  ECHO_SERVICE,
  type EchoReply,
  type EchoRequest,
  LOADER_OPTIONS,
  loadEcho,
  PAYLOAD,
} from "./echo.ts";

const target = process.argv[2]!;
const conc = Number(process.argv[3] ?? 50);
const { Client, service } = loadEcho();
const DL = Number(process.env.DEADLINE ?? 1100);
const preset = presets.inRegion({ deadlineMs: DL });
const request = { payload: PAYLOAD };
type Call = () => Promise<unknown>;
const plainCall =
  (c: InstanceType<typeof Client>): Call =>
  () =>
    new Promise((res, rej) =>
      c.Echo(request, { deadline: Date.now() + DL }, (e, r) => (e ? rej(e) : res(r))),
    );
const rosterOpts = (() => {
  const methods = methodsOf(service, {});
  const sc = buildServiceConfig({
    policy: "round_robin",
    policyConfig: undefined,
    methods,
    retry: preset.retry,
    budget: preset.budget,
  });
  return {
    "grpc.keepalive_time_ms": preset.keepalive.timeMs,
    "grpc.keepalive_timeout_ms": preset.keepalive.timeoutMs,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.client_idle_timeout_ms": preset.idleTimeoutMs,
    "grpc.service_config": JSON.stringify(sc),
    "grpc.service_config_disable_resolution": 1,
  };
})();
const rrsc = {
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  "grpc.use_local_subchannel_pool": 1,
};
const variants: Record<string, Call> = {};
variants.plain = plainCall(new Client(target, grpc.credentials.createInsecure(), rrsc));
variants.plainRosterOpts = plainCall(
  new Client(target, grpc.credentials.createInsecure(), {
    ...rosterOpts,
    "grpc.use_local_subchannel_pool": 1,
  }),
);
const lim = createClientLimiter(preset.limiter);
variants.plainLimiter = plainCall(
  new Client(target, grpc.credentials.createInsecure(), { ...rrsc, interceptors: [lim.interceptor] }),
);
const pool = new ChannelPool({
  target,
  credentials: grpc.credentials.createInsecure(),
  channelOptions: rrsc,
  sizing: preset.pool,
});
variants.plainPool = plainCall(
  new Client(target, grpc.credentials.createInsecure(), { channelOverride: pool.channel }),
);
const rc = createClient<{ Echo: Unary<EchoRequest, EchoReply> }>({
  proto: ECHO_PROTO,
  service: ECHO_SERVICE,
  loaderOptions: LOADER_OPTIONS,
  target,
  preset,
});
variants.roster = () => rc.Echo(request);
const rosterWith = (policy: string, extra: Partial<typeof preset> = {}) => {
  const c = createClient<{ Echo: Unary<EchoRequest, EchoReply> }>({
    proto: ECHO_PROTO,
    service: ECHO_SERVICE,
    loaderOptions: LOADER_OPTIONS,
    target,
    preset: { ...preset, ...extra },
    policy,
  });
  return () => c.Echo(request);
};
variants.rosterNoRetry = rosterWith("round_robin", { retry: false });
variants.rosterLR = rosterWith("roster_least_request");
variants.rosterEwma = rosterWith("roster_peak_ewma");

async function chunk(call: Call, n: number): Promise<number> {
  let left = n;
  const c0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (left-- > 0) await call();
    }),
  );
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}
const only = process.env.VARIANT;
if (only !== undefined) {
  // callgrind mode: warm up, tell the driver (file), wait for its go (file), run N calls, tell it done.
  const call = variants[only]!;
  const dir = process.env.CG_DIR!;
  await chunk(call, Number(process.env.WARM ?? 2000));
  // Written whole, then renamed: the driver never reads a half-written pid.
  writeFileSync(`${dir}/.warm-${only}`, String(process.pid));
  renameSync(`${dir}/.warm-${only}`, `${dir}/warm-${only}`);
  for (let i = 0; i < 6000 && !existsSync(`${dir}/go-${only}`); i++)
    await new Promise((r) => setTimeout(r, 50));
  await chunk(call, Number(process.env.CALLS ?? 1000));
  writeFileSync(`${dir}/done-${only}`, "");
  for (let i = 0; i < 6000 && !existsSync(`${dir}/exit-${only}`); i++)
    await new Promise((r) => setTimeout(r, 50));
  process.exit(0);
}
const names = Object.keys(variants);
for (const n of names) await chunk(variants[n]!, 20000); // warm-up
const res: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
for (let i = 0; i < Number(process.argv[4] ?? 8); i++)
  for (const n of names) res[n]!.push(await chunk(variants[n]!, 5000));
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const n of names)
  console.log(n.padEnd(18), med(res[n]!).toFixed(1), "µs/call  ", res[n]!.map((x) => x.toFixed(0)).join(" "));
process.exit(0);
