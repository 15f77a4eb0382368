export { type LbConfig, parseLbConfigText, resolveLbConfig } from "./config.ts";
export { defaultForwardSettings, type Lb, type LbOptions, startLb } from "./lb.ts";
export { defaultFrontLimits, type FrontLimits, type ProxyServer } from "./server.ts";
