// roster/client: the thick client. createClient + presets; the limiter and pool are exported for use
// with hand-made grpc-js clients.
export { ChannelPool, type PoolMember, type PoolStats } from "./channel-pool.ts";
export {
  type BidiStream,
  type BidiStreamMethod,
  type CallOptions,
  type ClientControls,
  type ClientStats,
  type ClientStream,
  type ClientStreamMethod,
  createClient,
  type FromDefinition,
  type FromProto,
  type MethodShape,
  type RosterClient,
  type ServerStream,
  type ServerStreamMethod,
  type Unary,
  type UnaryMethod,
} from "./create-client.ts";
export { HedgeDelay, type HedgeDelayConfig } from "./hedge-delay.ts";
export {
  ETCD_SCHEME,
  parseStaticTarget,
  type RegisterOptions,
  ROSTER_POLICIES,
  ROSTER_SCHEME,
  type RosterPolicyName,
  registerRosterPolicies,
  rosterLbConfig,
  rosterServiceConfig,
} from "./lb/index.ts";
export { ConcurrencyLimiter, type LimiterConfig } from "./limiter.ts";
export { type ClientLimiter, createClientLimiter } from "./limiter-interceptor.ts";
export { PoolSizer, type PoolSizingConfig } from "./pool-sizing.ts";
export {
  type ClientPreset,
  type HedgingSettings,
  inRegion,
  type KeepaliveSettings,
  laptop,
  lowLatency,
  type PresetOverrides,
  presets,
  type RetrySettings,
} from "./presets.ts";
export { buildServiceConfig, type MethodInfo, methodsOf } from "./service-config.ts";
