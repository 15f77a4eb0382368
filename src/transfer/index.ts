// roster/transfer: helpers for large payloads and long tasks — chunked zstd transfers with checksums
// and resumption, heartbeats for long handlers, dispatch by function name, CPU offload to worker
// threads. Server helpers plug into defineService; client helpers take a plain grpc-js client or
// roster/client's createClient. docs/transfer.md.

export { type CodecName, zstd } from "./codec.ts";
export {
  callFunction,
  callFunctionStream,
  type DispatchClient,
  type DispatchOptions,
  defaultFuncNameKey,
  defineDispatchService,
  type FunctionCallOptions,
  type FunctionContext,
  type NamedFunction,
} from "./dispatch.ts";
export {
  defaultHeartbeatIntervalMs,
  type Heartbeat,
  type HeartbeatOptions,
  type ResultOptions,
  resultOf,
  withHeartbeats,
} from "./heartbeat.ts";
export { TransferError } from "./messages.ts";
export {
  createOffloadPool,
  defaultOffload,
  type OffloadOptions,
  type OffloadPool,
  type OffloadStats,
  type RunOffloadOptions,
} from "./offload.ts";
export {
  DISPATCH_PROTO,
  dispatchDefinition,
  PROTO_DIR,
  TASK_PROTO,
  TRANSFER_PROTO,
  transferDefinition,
} from "./protos.ts";
export type { OpenedSource, PayloadSink, PayloadSource } from "./source.ts";
export {
  type DownloadRequest,
  defaultTransferClient,
  download,
  type Progress,
  type TransferOptions,
  type TransferResult,
  type UploadOptions,
  upload,
} from "./transfer-client.ts";
export {
  type DownloadStart,
  defaultTransferServer,
  defineTransferService,
  type TransferServiceOptions,
  type UploadStart,
  type UploadTarget,
} from "./transfer-server.ts";
