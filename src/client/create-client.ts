import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { parseRetryThrottleConfig, RetryThrottle } from "../core/retry-throttle.ts";
import { ChannelPool, type PoolMember, type PoolStats } from "./channel-pool.ts";
import { HedgeDelay } from "./hedge-delay.ts";
import { ROSTER_POLICIES, registerRosterPolicies, rosterLbConfig } from "./lb/index.ts";
import { createClientLimiter, type SlotWait } from "./limiter-interceptor.ts";
import { type ClientPreset, type HedgingSettings, inRegion, type RetrySettings } from "./presets.ts";
import { buildServiceConfig, type MethodInfo, type MethodMarks, methodsOf } from "./service-config.ts";

/**
 * `createClient`: a client for one service on a pool of grpc-js channels, each call balanced by the
 * channel's policy, bounded by the concurrency limiter, idempotent methods retried by grpc-js's A6
 * retryPolicy, unary methods marked safe to hedge hedged here. Unary methods return promises;
 * streaming methods return grpc-js's stream objects.
 *
 *   const echo = createClient({ proto: "echo.proto", service: "pkg.Echo", target: "ipv4:10.0.0.1:50051" });
 *   const reply = await echo.Echo({ payload });
 */

export interface CallOptions {
  /** Deadline from now, ms (default: the preset's `deadlineMs`). */
  deadlineMs?: number;
  /** Absolute deadline; wins over `deadlineMs`. */
  deadline?: Date | number;
  metadata?: grpc.Metadata;
  /** Aborting cancels the call (every attempt of a hedged call). */
  signal?: AbortSignal;
  /** Passed to grpc-js as they are. */
  credentials?: grpc.CallCredentials;
}

export type UnaryMethod<Req, Res> = (request: Req, options?: CallOptions) => Promise<Res>;
export type ServerStreamMethod<Req, Res> = (
  request: Req,
  options?: CallOptions,
) => grpc.ClientReadableStream<Res>;
export type ClientStreamMethod<Req, Res> = (options?: CallOptions) => {
  stream: grpc.ClientWritableStream<Req>;
  response: Promise<Res>;
};
export type BidiStreamMethod<Req, Res> = (options?: CallOptions) => grpc.ClientDuplexStream<Req, Res>;

/** The shape of one method a client is typed by: a grpc-js MethodDefinition fits. */
export interface MethodShape<Req = unknown, Res = unknown> {
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (value: Req) => Buffer;
  responseDeserialize: (bytes: Buffer) => Res;
}
/** Helpers to type a proto-loader client by hand: `createClient<{ Echo: Unary<Req, Res> }>(…)`. */
export type Unary<Req, Res> = MethodShape<Req, Res> & { requestStream: false; responseStream: false };
export type ServerStream<Req, Res> = MethodShape<Req, Res> & { requestStream: false; responseStream: true };
export type ClientStream<Req, Res> = MethodShape<Req, Res> & { requestStream: true; responseStream: false };
export type BidiStream<Req, Res> = MethodShape<Req, Res> & { requestStream: true; responseStream: true };

type ReqOf<M> = M extends { requestSerialize: (value: infer R) => Buffer } ? R : never;
type ResOf<M> = M extends { responseDeserialize: (bytes: Buffer) => infer R } ? R : never;
type IsAny<T> = 0 extends 1 & T ? true : false;
// biome-ignore lint/suspicious/noExplicitAny: an untyped service's methods take and give anything
type AnyMethod = (...args: any[]) => any;
/** A method whose kind the type does not say (an untyped definition's `boolean` flags) takes anything. */
type KindUnknown<M> = M extends { requestStream: infer A; responseStream: infer B }
  ? boolean extends A
    ? true
    : boolean extends B
      ? true
      : false
  : true;
export type MethodOf<M> =
  IsAny<M> extends true
    ? AnyMethod
    : KindUnknown<M> extends true
      ? AnyMethod
      : M extends { requestStream: true; responseStream: true }
        ? BidiStreamMethod<ReqOf<M>, ResOf<M>>
        : M extends { requestStream: true }
          ? ClientStreamMethod<ReqOf<M>, ResOf<M>>
          : M extends { responseStream: true }
            ? ServerStreamMethod<ReqOf<M>, ResOf<M>>
            : UnaryMethod<ReqOf<M>, ResOf<M>>;

export interface ClientStats {
  pool: PoolStats;
  /** Calls holding a limiter slot, and calls waiting for one. */
  running: number;
  queued: number;
  /** Hedges sent, won (answered first), and not sent: budget spent, or no free limiter slot. */
  hedges: { sent: number; won: number; skippedByBudget: number; skippedNoSlot: number };
  budgetTokens: number;
}

export interface ClientControls {
  /** Closes every channel; calls in flight are cancelled by grpc-js. */
  close(): void;
  stats(): ClientStats;
  /** What the client decided per method: retried (A6 retryPolicy), hedged. */
  readonly methods: readonly MethodInfo[];
  readonly preset: ClientPreset;
}

// biome-ignore lint/suspicious/noExplicitAny: the default for a client nobody typed
export type UntypedService = Record<string, any>;
/** A generated client constructor's methods are its `.service`'s. */
type DefinitionOf<S> = S extends { service: infer D } ? D : S;
export type RosterClient<S = UntypedService> = {
  [K in keyof DefinitionOf<S>]: MethodOf<DefinitionOf<S>[K]>;
} & ClientControls;

interface Common extends MethodMarks {
  /** A grpc-js target: "ipv4:10.0.0.1:50051,10.0.0.2:50051", "dns:///svc:50051", "roster:///…". */
  target: string;
  /** Default: presets.inRegion(). */
  preset?: ClientPreset;
  /** A grpc-js load-balancing policy registered by name, e.g. "round_robin" or "roster_peak_ewma". */
  policy?: string;
  policyConfig?: object;
  /** Default: insecure (plaintext). */
  credentials?: grpc.ChannelCredentials;
  /** More grpc-js channel options; the preset's and the pool's own win on a clash. */
  channelOptions?: grpc.ChannelOptions;
}

export interface FromProto extends Common {
  proto: string | string[];
  /** Fully qualified: "roster.demo.Echo". */
  service: string;
  includeDirs?: string[];
  /** Default { keepCase: true }: field names as in the .proto. */
  loaderOptions?: protoLoader.Options;
}

export interface FromDefinition<S> extends Common {
  /** A grpc-js service definition (generated code, or `grpc.loadPackageDefinition(...).pkg.Svc.service`). */
  definition: S;
}

const noop = () => {};

const CONTROL_KEYS = new Set(["close", "stats", "methods", "preset"]);

export function createClient<S = UntypedService>(options: FromProto | FromDefinition<S>): RosterClient<S> {
  const preset = options.preset ?? inRegion();
  if (!(preset.deadlineMs > 0)) throw new RangeError(`deadlineMs: must be > 0, got ${preset.deadlineMs}`);
  const budgetConfig = parseRetryThrottleConfig(preset.budget, "budget");
  if (preset.retry !== false) validateRetry(preset.retry);
  if (preset.hedging !== false) {
    if (!Number.isInteger(preset.hedging.maxAttempts) || preset.hedging.maxAttempts < 2)
      throw new RangeError(`hedging.maxAttempts: must be an integer ≥ 2, got ${preset.hedging.maxAttempts}`);
    new HedgeDelay(preset.hedging); // checks the delay settings
  }
  const definition = definitionOf(options);
  const methods = methodsOf(definition, options);
  for (const m of methods) {
    if (CONTROL_KEYS.has(m.key))
      throw new Error(`method ${m.key}: the name clashes with the client's own ${m.key}()`);
  }
  const policy = options.policy ?? "round_robin";
  // Roster's own policies and the roster:/// resolver are always there for our grpc-js.
  registerRosterPolicies({ grpc });
  if (!grpc.experimental.isLoadBalancerNameRegistered(policy)) {
    throw new Error(
      `policy ${policy} is not registered with grpc-js` +
        (policy.startsWith("roster_")
          ? ` (Roster's: ${ROSTER_POLICIES.map((p) => p.grpcName).join(", ")})`
          : ""),
    );
  }
  // A roster_* config grpc-js cannot parse would be skipped for pick_first (logged, not thrown): check
  // it here, so the error names the field when the client is made.
  if (ROSTER_POLICIES.some((p) => p.grpcName === policy)) rosterLbConfig(policy, options.policyConfig ?? {});
  const serviceConfig = buildServiceConfig({
    policy,
    policyConfig: options.policyConfig,
    methods,
    retry: preset.retry,
    budget: budgetConfig,
  });
  const limiter = createClientLimiter(preset.limiter);
  const credentials = options.credentials ?? grpc.credentials.createInsecure();
  const pool = new ChannelPool({
    target: options.target,
    credentials,
    channelOptions: {
      ...options.channelOptions,
      "grpc.keepalive_time_ms": preset.keepalive.timeMs,
      "grpc.keepalive_timeout_ms": preset.keepalive.timeoutMs,
      "grpc.keepalive_permit_without_calls": preset.keepalive.permitWithoutCalls ? 1 : 0,
      "grpc.client_idle_timeout_ms": preset.idleTimeoutMs,
      "grpc.service_config": JSON.stringify(serviceConfig),
      // Ours is the service config: a DNS TXT record does not replace the retry policy.
      "grpc.service_config_disable_resolution": 1,
    },
    sizing: preset.pool,
  });
  // Streaming methods: one grpc-js client over the whole pool, the limiter as its interceptor, so a
  // call waits for its slot before it picks its channel. Unary methods do both themselves
  // (`startUnary`): the limiter's gate, then the pool's pick, then the member's own grpc-js client,
  // with no interceptor and no pooled-call wrapper on their path.
  const rpc = new grpc.Client(options.target, credentials, {
    channelOverride: pool.channel,
    interceptors: [limiter.interceptor],
  });
  const gate = limiter.gate;
  const budget = new RetryThrottle(budgetConfig);
  const hedgeStats = { sent: 0, won: 0, skippedByBudget: 0, skippedNoSlot: 0 };
  const retryable = new Set(
    (preset.retry === false ? ["UNAVAILABLE"] : preset.retry.retryableStatusCodes).map(
      (name) => grpc.status[name as keyof typeof grpc.status],
    ),
  );

  const deadlineOf = (o: CallOptions | undefined): number =>
    o?.deadline !== undefined
      ? o.deadline instanceof Date
        ? o.deadline.getTime()
        : o.deadline
      : Date.now() + (o?.deadlineMs ?? preset.deadlineMs);

  const callOptions = (o: CallOptions | undefined, deadline: number): grpc.CallOptions => {
    const c: grpc.CallOptions = { deadline };
    if (o?.credentials !== undefined) c.credentials = o.credentials;
    return c;
  };

  const onAbort = (signal: AbortSignal | undefined, cancel: () => void): (() => void) => {
    if (signal === undefined) return noop;
    if (signal.aborted) {
      queueMicrotask(cancel);
      return noop;
    }
    signal.addEventListener("abort", cancel, { once: true });
    return () => signal.removeEventListener("abort", cancel);
  };

  /**
   * One unary call (or hedge attempt): a limiter slot (at once, or after waiting; `queue: false`
   * refuses instead of waiting), then the pool's least-loaded member, then that member's grpc-js
   * call. `done` is called exactly once; `onStart` when the call leaves the queue for its channel.
   * `h`, when given, is where a caller that may cancel finds the call.
   */
  const startUnary = (
    m: MethodInfo,
    request: unknown,
    metadata: grpc.Metadata,
    opts: grpc.CallOptions,
    deadline: number,
    queue: boolean,
    onStart: (() => void) | undefined,
    done: (err: grpc.ServiceError | null, res?: unknown) => void,
    h: UnaryHandle | undefined,
  ): void => {
    // A free slot (the common case): straight to the channel, no closure for later.
    if (limiter.limiter.tryRun()) {
      callOnMember(m, request, metadata, opts, onStart, done, h);
      return;
    }
    const wait = gate.acquire(
      deadline,
      queue,
      () => callOnMember(m, request, metadata, opts, onStart, done, h),
      (code, details) => done(statusError(code, details)),
    );
    if (h !== undefined) h.wait = wait;
  };

  /** The call holds a limiter slot: on the least-loaded member, the slot given back when it ends. */
  const callOnMember = (
    m: MethodInfo,
    request: unknown,
    metadata: grpc.Metadata,
    opts: grpc.CallOptions,
    onStart: (() => void) | undefined,
    done: (err: grpc.ServiceError | null, res?: unknown) => void,
    h: UnaryHandle | undefined,
  ): void => {
    let member: PoolMember;
    try {
      member = pool.pick();
    } catch (err) {
      gate.release();
      done(statusError(grpc.status.UNAVAILABLE, (err as Error).message));
      return;
    }
    pool.started(member);
    onStart?.();
    const call = member.client.makeUnaryRequest(
      m.path,
      m.definition.requestSerialize,
      m.definition.responseDeserialize,
      request,
      metadata,
      opts,
      (err, res) => {
        pool.ended(member);
        gate.release();
        done(err, res);
      },
    );
    if (h !== undefined) h.call = call;
  };

  const client: Record<string, unknown> = {};
  for (const m of methods) {
    const d = m.definition;
    const ser = d.requestSerialize;
    const de = d.responseDeserialize;
    if (!m.requestStream && !m.responseStream) {
      const hedging = m.hedged && preset.hedging !== false ? preset.hedging : undefined;
      const delay = hedging === undefined ? undefined : new HedgeDelay(hedging);
      client[m.key] = (request: unknown, o?: CallOptions) => {
        const deadline = deadlineOf(o);
        const metadata = o?.metadata ?? new grpc.Metadata();
        if (hedging !== undefined && delay !== undefined) {
          return hedgedUnary(m, hedging, delay, request, metadata, callOptions(o, deadline), o?.signal);
        }
        const opts = callOptions(o, deadline);
        const signal = o?.signal;
        if (signal === undefined) {
          return new Promise((resolve, reject) =>
            startUnary(
              m,
              request,
              metadata,
              opts,
              deadline,
              true,
              undefined,
              (err, res) => (err ? reject(err) : resolve(res)),
              undefined,
            ),
          );
        }
        return new Promise((resolve, reject) => {
          const h = new UnaryHandle();
          const off = onAbort(signal, () => h.cancel());
          startUnary(
            m,
            request,
            metadata,
            opts,
            deadline,
            true,
            undefined,
            (err, res) => {
              off();
              if (err) reject(err);
              else resolve(res);
            },
            h,
          );
        });
      };
    } else if (!m.requestStream) {
      client[m.key] = (request: unknown, o?: CallOptions) => {
        const call = rpc.makeServerStreamRequest(
          m.path,
          ser,
          de,
          request,
          o?.metadata ?? new grpc.Metadata(),
          callOptions(o, deadlineOf(o)),
        );
        const off = onAbort(o?.signal, () => call.cancel());
        call.once("status", off);
        return call;
      };
    } else if (!m.responseStream) {
      client[m.key] = (o?: CallOptions) => {
        let stream: grpc.ClientWritableStream<unknown> | undefined;
        const response = new Promise((resolve, reject) => {
          let off = noop;
          stream = rpc.makeClientStreamRequest(
            m.path,
            ser,
            de,
            o?.metadata ?? new grpc.Metadata(),
            callOptions(o, deadlineOf(o)),
            (err, res) => {
              off();
              if (err) reject(err);
              else resolve(res);
            },
          );
          const s = stream;
          off = onAbort(o?.signal, () => s.cancel());
        });
        return { stream: stream!, response };
      };
    } else {
      client[m.key] = (o?: CallOptions) => {
        const call = rpc.makeBidiStreamRequest(
          m.path,
          ser,
          de,
          o?.metadata ?? new grpc.Metadata(),
          callOptions(o, deadlineOf(o)),
        );
        const off = onAbort(o?.signal, () => call.cancel());
        call.once("status", off);
        return call;
      };
    }
  }

  /**
   * A unary call with hedges: the first attempt at once; while it has not answered, another after the
   * method's observed p95 (HedgeDelay), if the budget allows and a limiter slot is free now (a hedge
   * never queues). The first success wins and every other attempt is cancelled (the servers see
   * RST_STREAM CANCEL); a failure waits for the attempts still running, and the call fails only when
   * none is left. Each attempt is itself retried by grpc-js's retryPolicy on UNAVAILABLE.
   */
  function hedgedUnary(
    m: MethodInfo,
    h: HedgingSettings,
    delay: HedgeDelay,
    request: unknown,
    metadata: grpc.Metadata,
    base: grpc.CallOptions,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const calls: UnaryHandle[] = [];
      let settled = false;
      let running = 0;
      let timer: NodeJS.Timeout | undefined;
      const deadline = typeof base.deadline === "number" ? base.deadline : Infinity;
      const settle = (winner: UnaryHandle | undefined, done: () => void) => {
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        off();
        for (const c of calls) if (c !== winner) c.cancel();
        done();
      };
      const attempt = (hedge: boolean) => {
        // Timed from when the attempt leaves the limiter's queue: waiting there is not the server's
        // latency, and a hedge of a call that has not been sent would only add to the queue.
        let started = Number.NaN;
        running++;
        const onStart = () => {
          started = performance.now();
          if (!hedge && !settled) scheduleHedge();
        };
        // A hedge never queues: it runs only if a slot is free now.
        const a = new UnaryHandle();
        calls.push(a);
        startUnary(
          m,
          request,
          hedge ? metadata.clone() : metadata,
          base,
          deadline,
          !hedge,
          onStart,
          (err, res) => {
            running--;
            if (settled) return; // a loser, cancelled
            if (!err) {
              delay.record(performance.now() - started);
              budget.record(false);
              if (hedge) hedgeStats.won++;
              settle(a, () => resolve(res));
              return;
            }
            budget.record(retryable.has(err.code));
            if (running > 0) return; // another attempt may still answer
            settle(undefined, () => reject(err));
          },
          a,
        );
      };
      const scheduleHedge = () => {
        const wait = delay.delayMs;
        if (calls.length >= h.maxAttempts || Date.now() + wait >= deadline) return;
        timer = setTimeout(() => {
          timer = undefined;
          if (settled) return;
          if (!budget.allows()) {
            hedgeStats.skippedByBudget++;
            return;
          }
          if (limiter.limiter.available === 0) {
            hedgeStats.skippedNoSlot++;
            return;
          }
          budget.record(true); // a hedge spends a token as a retry does (gRFC A6 counts hedges too)
          hedgeStats.sent++;
          attempt(true);
          scheduleHedge();
        }, wait);
      };
      const off = onAbort(signal, () => {
        if (!settled) for (const c of calls) c.cancel();
      });
      attempt(false);
    });
  }

  const controls: ClientControls = {
    close: () => pool.close(),
    stats: () => ({
      pool: pool.stats(),
      running: limiter.limiter.inFlight,
      queued: limiter.limiter.queued,
      hedges: { ...hedgeStats },
      budgetTokens: budget.tokens,
    }),
    methods,
    preset,
  };
  return Object.assign(client, controls) as RosterClient<S>;
}

/** A unary call or attempt: waiting for a limiter slot (`wait`), or running on a member (`call`). */
class UnaryHandle {
  wait: SlotWait | undefined = undefined;
  call: grpc.ClientUnaryCall | undefined = undefined;

  /** Out of the limiter's queue (the call ends CANCELLED), or the running call cancelled. */
  cancel(): void {
    if (this.wait?.cancel() === true) return;
    this.call?.cancel();
  }
}

/** A failure made here, shaped as grpc-js's own (`code`, `details`, `metadata`; the same message). */
function statusError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), {
    code,
    details,
    metadata: new grpc.Metadata(),
  });
}

/** grpc-js would take a bad retry policy silently (the channel fails later); say which field is wrong now. */
function validateRetry(r: RetrySettings): void {
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1)
    throw new RangeError(`retry.maxAttempts: must be an integer ≥ 1, got ${r.maxAttempts}`);
  for (const f of ["initialBackoffMs", "maxBackoffMs", "backoffMultiplier"] as const) {
    if (!(r[f] > 0)) throw new RangeError(`retry.${f}: must be > 0, got ${r[f]}`);
  }
  for (const name of r.retryableStatusCodes) {
    if (typeof grpc.status[name as keyof typeof grpc.status] !== "number" || name === "OK")
      throw new RangeError(`retry.retryableStatusCodes: ${name} is not a gRPC status name other than OK`);
  }
}

function definitionOf<S>(options: FromProto | FromDefinition<S>): grpc.ServiceDefinition {
  if ("definition" in options) {
    const d = options.definition as unknown;
    // A generated client constructor carries its definition as `.service`.
    if (typeof d === "function" && "service" in d) return (d as grpc.ServiceClientConstructor).service;
    return d as grpc.ServiceDefinition;
  }
  const loaded = protoLoader.loadSync(options.proto, {
    keepCase: true,
    includeDirs: options.includeDirs,
    ...options.loaderOptions,
  });
  const service = loaded[options.service];
  if (service === undefined || "format" in service) {
    const services = Object.entries(loaded)
      .filter(([, v]) => !("format" in v))
      .map(([k]) => k);
    throw new Error(
      `service ${options.service} is not in ${options.proto} (services: ${services.join(", ") || "none"})`,
    );
  }
  return service as unknown as grpc.ServiceDefinition;
}
