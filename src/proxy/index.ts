export {
  type ClusterConfig,
  type LbConfig,
  lbClusters,
  parseLbConfigText,
  resolveLbConfig,
} from "./config.ts";
export {
  type ClusterOptions,
  defaultForwardSettings,
  type Lb,
  type LbClusters,
  type LbOptions,
  type ReconfigureReport,
  startLb,
} from "./lb.ts";
export { defaultFrontLimits, type FrontLimits, type ProxyServer } from "./proxy-options.ts";
export { parseRouting, type RouteConfig, type RoutingConfig } from "./routes.ts";
