// roster: per-call gRPC balancing. Subpath exports: roster/core (pure balancing), roster/proxy
// (the `roster lb` data path), roster/server (`roster serve` as a library).
export * from "./core/index.ts";
export { type Lb, type LbOptions, startLb } from "./proxy/index.ts";
export { defineService, type RosterServer, type ServeOptions, serve } from "./server/index.ts";
