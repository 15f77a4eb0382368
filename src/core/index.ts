export * from "./balancer.ts";
export * from "./clock.ts";
export * from "./config.ts";
export * from "./discovery.ts";
export * from "./endpoint.ts";
export * from "./errors.ts";
export * from "./hash.ts";
export * from "./health/outlier-detection.ts";
export type * from "./load/load-tracker.ts";
export * from "./load/peak-ewma.ts";
export * from "./load/pending-requests.ts";
export * from "./picker.ts";
export type { PeakEwmaConfig } from "./policies/peak-ewma.ts";
export { createDefaultRegistry } from "./policies/registry.ts";
export {
  CLASS_HEADER,
  defaultResumeConfig,
  MAX_PROVISIONAL_CLASSES,
  ResumeBalancer,
  type ResumeConfig,
  type ResumeStatus,
  resume,
  type SkillCarrier,
  skillsOf,
} from "./policies/resume.ts";
export type { HashKey, RingHashConfig } from "./policies/ring-hash.ts";
export * from "./skills.ts";
export * from "./status.ts";
