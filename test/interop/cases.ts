// Interop test cases run by both clients, named as in grpc/grpc doc/interop-test-descriptions.md.
export const INTEROP_CASES = [
  "empty_unary",
  "large_unary",
  "client_streaming",
  "server_streaming",
  "ping_pong",
  "empty_stream",
  "timeout_on_sleeping_server",
  "cancel_after_begin",
  "cancel_after_first_response",
  "status_code_and_message",
  "special_status_message",
  "custom_metadata",
  "unimplemented_method",
  "unimplemented_service",
  "client_compressed_unary",
  "server_compressed_unary",
  "client_compressed_streaming",
  "server_compressed_streaming",
] as const;

export type InteropCase = (typeof INTEROP_CASES)[number];

export function isInteropCase(name: string): name is InteropCase {
  return (INTEROP_CASES as readonly string[]).includes(name);
}

/** Status message of special_status_message: whitespace, a BMP and a non-BMP character. */
export const SPECIAL_STATUS_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
