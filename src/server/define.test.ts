import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { loadServiceModule } from "./define.ts";

const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url));

describe("loadServiceModule: idempotent methods", () => {
  it("takes the proto's idempotency_level and the module's list, and nothing else", async () => {
    const [service] = await loadServiceModule(fixture("catalog-service.ts"));
    assert.ok(service);
    assert.deepEqual([...service.idempotentPaths].sort(), [
      "/roster.test.Catalog/Get",
      "/roster.test.Catalog/Put",
      "/roster.test.Catalog/Sell",
    ]);
  });
});
