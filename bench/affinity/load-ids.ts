// bench/affinity's database wire format, shared by the database (db.ts) and the workers
// (site-service.ts): a load is a 4-byte big-endian id, and its answer is the same 4 bytes.
import type net from "node:net";

/** Encodes one load id. */
export function loadFrame(id: number): Buffer {
  const frame = Buffer.allocUnsafe(4);
  frame.writeUInt32BE(id >>> 0);
  return frame;
}

/**
 * Calls `onId` for every whole id arriving on `socket` (ids may be split across chunks), then
 * `afterChunk` once per chunk.
 */
export function readLoadIds(socket: net.Socket, onId: (id: number) => void, afterChunk?: () => void): void {
  let rest: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    const data = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
    const whole = data.length - (data.length % 4);
    for (let i = 0; i < whole; i += 4) onId(data.readUInt32BE(i));
    rest = data.subarray(whole);
    afterChunk?.();
  });
}
