/**
 * gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). Core keeps its own copy
 * so it imports nothing from grpc-js.
 */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type StatusCode = (typeof Status)[keyof typeof Status];

const names: Record<number, string> = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

/** "UNAVAILABLE" for 14; "CODE_99" for codes outside the table. */
export function statusName(code: number): string {
  return names[code] ?? `CODE_${code}`;
}

/** A status with its human message, as sent in `grpc-status` / `grpc-message`. */
export interface CallStatus {
  code: StatusCode;
  message: string;
}
