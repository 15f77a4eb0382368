// The interop TestService as a `roster serve` service module, so the conformance cases can run
// against workers behind the supervisor's front.
import { defineService } from "../../src/server/index.ts";
import { testServiceDefinition } from "./proto.ts";
import { interopHandlers } from "./server.ts";
import { compressionInterceptor } from "./server-compression.ts";

export default defineService({
  definition: testServiceDefinition,
  handlers: interopHandlers as Record<string, (call: unknown, callback?: unknown) => unknown>,
  interceptors: [compressionInterceptor],
});
