/**
 * A connection's outgoing bytes between two writes. Frames are written in place into a slab the
 * connection owns (no Buffer per frame, no join before the write); large DATA payloads are appended as
 * they are (views of the bytes read elsewhere: no copy). `take()` hands over everything queued, in
 * order, as views: the slab region of the previous take is never written again, so the views stay
 * valid while the socket holds them, and a new slab is started when the current one is full.
 *
 * Pure (no sockets, no timers). Usage: `const at = out.reserve(n)` then write n bytes into
 * `out.slab` from `at`.
 */
export const SLAB_SIZE = 16 * 1024;
/** A slab with less room than this left after a take is dropped; the next frame starts a new one. */
const MIN_ROOM = 1024;

export class OutBuffer {
  /** The slab frames are written into; valid after `reserve` until the next `reserve` or `append`. */
  slab: Buffer = EMPTY_SLAB;
  #used = 0;
  /** Start of the bytes written since the last seal. */
  #start = 0;
  #pieces: Buffer[] = [];
  #bytes = 0;

  /** Bytes queued and not taken yet. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Room for `n` bytes in `slab`; returns where they go. */
  reserve(n: number): number {
    if (this.#used + n > this.slab.length) {
      this.#seal();
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, n));
      this.#used = 0;
      this.#start = 0;
    }
    const at = this.#used;
    this.#used += n;
    this.#bytes += n;
    return at;
  }

  /** Copies `bytes` in. */
  write(bytes: Uint8Array): void {
    const at = this.reserve(bytes.length);
    this.slab.set(bytes, at);
  }

  /** Queues `buf` as it is (not copied: the caller must not change it). */
  append(buf: Buffer): void {
    if (buf.length === 0) return;
    this.#seal();
    this.#pieces.push(buf);
    this.#bytes += buf.length;
  }

  /** Everything queued, in order, or undefined when nothing is. */
  take(): Buffer[] | undefined {
    if (this.#bytes === 0) return undefined;
    this.#seal();
    const pieces = this.#pieces;
    this.#pieces = [];
    this.#bytes = 0;
    if (this.slab.length - this.#used < MIN_ROOM) {
      this.slab = EMPTY_SLAB;
      this.#used = 0;
      this.#start = 0;
    }
    return pieces;
  }

  /** Drops the slab if it holds nothing pending (an idle connection keeps no memory). */
  release(): void {
    if (this.#used === this.#start) {
      this.slab = EMPTY_SLAB;
      this.#used = 0;
      this.#start = 0;
    }
  }

  #seal(): void {
    if (this.#used > this.#start) {
      this.#pieces.push(this.slab.subarray(this.#start, this.#used));
      this.#start = this.#used;
    }
  }
}

const EMPTY_SLAB = Buffer.alloc(0);
