// A roster/transfer server for tests, in-process or as a child process: uploads are hashed and
// dropped (nothing stored), downloads are generated (`generatedPayload`), and the Dispatch function
// `last-upload` tells what the latest finished upload was — so a test can check, through any proxy,
// what the server received. Also the service module `roster serve` runs in the transfer tests.
//
// As a script: node --import tsx test/support/transfer-server.ts   prints "PORT <n>"; exits on SIGTERM or
// when its stdin closes.
import { pathToFileURL } from "node:url";
import { defineDispatchService, defineTransferService } from "../../src/transfer/index.ts";
import { stopWhenParentGoes } from "./child-lifetime.ts";
import { startServices } from "./grpc-server.ts";

const MiB = 1024 * 1024;

/**
 * A payload of `size` bytes generated on the fly: each MiB is one of eight fixed pseudo-random blocks
 * (xorshift, seed 7) whose first `randomBytes` are random and the rest zero — so zstd has something to
 * gain (the ratio is about randomBytes / 1 MiB) — with its index stamped into its first 8 bytes so that
 * reordered or repeated chunks change the digest. Nothing but the eight blocks is kept.
 */
export function generatedPayload(size: number, randomBytes = MiB / 2) {
  const blocks: Buffer[] = [];
  let x = 7;
  for (let b = 0; b < 8; b++) {
    const block = Buffer.alloc(MiB);
    for (let i = 0; i < randomBytes; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      block.writeInt32LE(x | 0, i);
    }
    blocks.push(block);
  }
  return {
    size,
    open: async function* (offset: number): AsyncGenerator<Buffer> {
      // One scratch MiB, filled again for each piece: a transfer is done with a piece before it asks
      // for the next, so nothing but the scratch is allocated however large the payload.
      const scratch = Buffer.allocUnsafe(MiB);
      // Bounded by size: each turn yields up to one MiB.
      for (let at = offset; at < size; ) {
        const index = Math.floor(at / MiB);
        const within = at - index * MiB;
        const n = Math.min(MiB - within, size - at);
        blocks[index % 8]!.copy(scratch, 0, within, within + n);
        const out = scratch.subarray(0, n);
        if (within === 0 && n >= 8) out.writeBigUInt64LE(BigInt(index), 0);
        at += n;
        yield out;
      }
    },
  };
}

export interface LastUpload {
  name: string;
  size: number;
  digest: string;
  /** Bytes the target was given, every call of the upload together. */
  written: number;
}

let last: LastUpload | undefined;

export const services = [
  defineTransferService({
    upload: ({ name }) => {
      let written = 0;
      return {
        write: (chunk: Buffer) => {
          written += chunk.length;
        },
        finish: ({ size, digest }) => {
          last = { name, size, digest, written };
        },
      };
    },
    download: ({ name }) => generatedPayload(Number(name)),
  }),
  defineDispatchService({
    functions: { "last-upload": () => last ?? null, memory: () => process.memoryUsage() },
  }),
];

export default services;

async function main(): Promise<void> {
  const s = await startServices(services);
  process.stdout.write(`PORT ${s.port}\n`);
  const stop = () => {
    void s.close().then(() => process.exit(0));
  };
  stopWhenParentGoes(stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
