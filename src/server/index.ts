export { defineService, type Handler, type ServiceOptions } from "./define.ts";
export {
  type RosterServer,
  type ServeEvent,
  type ServeOptions,
  ServeStartError,
  serve,
  type WorkerStatus,
} from "./supervisor.ts";
