import * as protoLoader from "@grpc/proto-loader";
import { ConfigError } from "../core/errors.ts";

/**
 * Methods that declare themselves safe to run twice, by the standard protobuf method option
 * `idempotency_level` (google/protobuf/descriptor.proto: NO_SIDE_EFFECTS = 1, IDEMPOTENT = 2).
 * `roster serve` reads it from the service's proto; `roster lb` from the files in
 * `retry.idempotentProtos`. Such methods get the same retries as ones listed by name.
 */

/** Does a method's options object (as @grpc/proto-loader gives it) declare it idempotent? */
export function declaredIdempotent(options: unknown): boolean {
  if (typeof options !== "object" || options === null) return false;
  const level = (options as { idempotency_level?: unknown }).idempotency_level;
  return level === "IDEMPOTENT" || level === "NO_SIDE_EFFECTS" || level === 1 || level === 2;
}

interface MethodLike {
  readonly path?: unknown;
  readonly options?: unknown;
}

/** Full paths ("/pkg.Svc/Method") of the methods in a proto-loader package definition that declare it. */
export function idempotentPathsOf(definition: protoLoader.PackageDefinition): string[] {
  const paths: string[] = [];
  for (const value of Object.values(definition)) {
    if (typeof value !== "object" || value === null || "format" in value) continue; // a message or enum
    for (const method of Object.values(value as Record<string, MethodLike>)) {
      if (typeof method?.path === "string" && declaredIdempotent(method.options)) paths.push(method.path);
    }
  }
  return paths.sort();
}

/** Loads .proto files and returns their idempotent methods' paths; errors name `where`. */
export function idempotentPathsFromProtos(
  files: readonly string[],
  includeDirs: readonly string[],
  where: string,
): string[] {
  const paths = new Set<string>();
  for (const [i, file] of files.entries()) {
    let definition: protoLoader.PackageDefinition;
    try {
      definition = protoLoader.loadSync(file, { keepCase: true, includeDirs: [...includeDirs] });
    } catch (err) {
      throw new ConfigError(
        `${where}[${i}]`,
        `cannot load ${file}: ${(err as Error).message.split("\n")[0]}`,
      );
    }
    for (const p of idempotentPathsOf(definition)) paths.add(p);
  }
  return [...paths].sort();
}
