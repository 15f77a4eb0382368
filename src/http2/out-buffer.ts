/**
 * A connection's outgoing bytes between two writes. Frames are written in place into a slab the
 * connection owns (no Buffer per frame, no join before the write), and DATA payloads are copied in
 * behind their frame headers, a payload running on into the next slab when one is full. `take()` hands
 * over everything queued, in order, as views: the slab region of a take is never written again while
 * the socket may hold it.
 *
 * Slabs come from a process-wide pool and go back to it once the socket has written the takes that
 * hold their last bytes (`written(seq)`, called by the platform from the write's callback). So a
 * steady stream of large messages allocates nothing: every byte is copied once, from the buffer it
 * was read into to a slab that is reused. (Queuing views of the bytes read instead, as this did
 * before, costs no copy but keeps each 64 KiB read alive while its bytes wait for a window or the
 * socket; under 1 MiB messages those reads outlived V8's young generation and major GCs ran every few
 * calls — see docs/benchmarks.md, "1 MiB calls".) A slab whose write never completes (the socket was
 * destroyed first) is simply left to the garbage collector: a slab is reused only after a write callback.
 *
 * Pure (no sockets, no timers). Usage: `const at = out.reserve(n)` then write n bytes into
 * `out.slab` from `at`; `out.copy(bytes)` for payloads.
 */
export const SLAB_SIZE = 64 * 1024;
/** A slab with less room than this left after a take is retired; the next frame starts a new one. */
const MIN_ROOM = 1024;
/** Free slabs the pool keeps (16 MiB); more are left to the garbage collector. */
const MAX_FREE_SLABS = 256;

const freeSlabs: Buffer[] = [];
let poisonFreed = false;

/** A slab of SLAB_SIZE bytes from the pool (contents undefined). */
export function takeSlab(): Buffer {
  return freeSlabs.pop() ?? Buffer.allocUnsafeSlow(SLAB_SIZE);
}

/** Gives a slab back to the pool. Only slabs no one will read again; other sizes are dropped. */
export function giveSlab(slab: Buffer): void {
  if (slab.length !== SLAB_SIZE || freeSlabs.length >= MAX_FREE_SLABS) return;
  if (poisonFreed) slab.fill(0xee);
  freeSlabs.push(slab);
}

/**
 * Tests and debugging (`ROSTER_DEBUG_SLABS=1`): slabs given back are filled with 0xEE, so a view still
 * in use after its slab was reused shows as corrupt bytes rather than plausible ones.
 */
export function poisonFreedSlabs(on: boolean): void {
  poisonFreed = on;
}

/** Free slabs in the pool (tests, /status). */
export function freeSlabCount(): number {
  return freeSlabs.length;
}

export class OutBuffer {
  /** The slab frames are written into; valid after `reserve` until the next `reserve` or `copy`. */
  slab: Buffer = EMPTY_SLAB;
  #used = 0;
  /** Start of the bytes written since the last seal. */
  #start = 0;
  /** The current slab's bytes below this went out in a take. */
  #takenUpTo = 0;
  #pieces: Buffer[] = [];
  #bytes = 0;
  /** Takes so far; the number of the last one. */
  #seq = 0;
  /** The last take the platform reported written. */
  #writtenSeq = 0;
  /** Slabs retired since the last take: their last bytes go out with the next take. */
  #retiring: Buffer[] = [];
  /** Retired slabs waiting for the write of take `seq`, oldest first. */
  #inFlight: { seq: number; slabs: Buffer[] }[] = [];

  /** Bytes queued and not taken yet. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The number of the last take (pass it to `written` once the socket has written that take). */
  get seq(): number {
    return this.#seq;
  }

  /** Room for `n` contiguous bytes in `slab`; returns where they go. */
  reserve(n: number): number {
    if (this.#used + n > this.slab.length) {
      this.#seal();
      this.#retire();
      // A frame larger than a slab (a big header block) gets a buffer of its own, never pooled.
      this.slab = n > SLAB_SIZE ? Buffer.allocUnsafeSlow(n) : takeSlab();
      this.#used = 0;
      this.#start = 0;
      this.#takenUpTo = 0;
    }
    const at = this.#used;
    this.#used += n;
    this.#bytes += n;
    return at;
  }

  /** Copies `bytes` in (whole frames: see `copy` for payloads that may span slabs). */
  write(bytes: Uint8Array): void {
    const at = this.reserve(bytes.length);
    this.slab.set(bytes, at);
  }

  /** Copies `bytes` in, filling the current slab and going on into new ones (the bytes need not be contiguous). */
  copy(bytes: Uint8Array): void {
    let from = 0;
    const total = bytes.length;
    while (from < total) {
      let room = this.slab.length - this.#used;
      if (room === 0) {
        this.#seal();
        this.#retire();
        this.slab = takeSlab();
        this.#used = 0;
        this.#start = 0;
        this.#takenUpTo = 0;
        room = SLAB_SIZE;
      }
      const n = Math.min(room, total - from);
      this.slab.set(from === 0 && n === total ? bytes : bytes.subarray(from, from + n), this.#used);
      this.#used += n;
      from += n;
    }
    this.#bytes += total;
  }

  /** Everything queued, in order, or undefined when nothing is. Its number is `seq` afterwards. */
  take(): Buffer[] | undefined {
    if (this.#bytes === 0) return undefined;
    this.#seal();
    const pieces = this.#pieces;
    this.#pieces = [];
    this.#bytes = 0;
    this.#seq++;
    this.#takenUpTo = this.#used;
    if (this.slab.length - this.#used < MIN_ROOM) this.#dropSlab();
    if (this.#retiring.length > 0) {
      this.#inFlight.push({ seq: this.#seq, slabs: this.#retiring });
      this.#retiring = [];
    }
    return pieces;
  }

  /** The socket has written every take up to `seq`: the slabs retired with them go back to the pool. */
  written(seq: number): void {
    if (seq > this.#writtenSeq) this.#writtenSeq = seq;
    const inFlight = this.#inFlight;
    while (inFlight.length > 0 && inFlight[0]!.seq <= seq) {
      for (const slab of inFlight.shift()!.slabs) giveSlab(slab);
    }
  }

  /** Drops the slab if it holds nothing pending (an idle connection keeps no memory). */
  release(): void {
    if (this.#used === this.#start) this.#dropSlab();
  }

  #dropSlab(): void {
    this.#retire();
    this.slab = EMPTY_SLAB;
    this.#used = 0;
    this.#start = 0;
    this.#takenUpTo = 0;
  }

  /** The current slab will take no more bytes; it is reused once what was taken from it is written. */
  #retire(): void {
    const slab = this.slab;
    if (slab === EMPTY_SLAB) return;
    if (this.#used > this.#takenUpTo) {
      // Bytes of it are still to be taken: they go with the next take.
      this.#retiring.push(slab);
    } else if (this.#seq <= this.#writtenSeq) {
      // All taken and written already.
      giveSlab(slab);
    } else {
      // All taken; the last take holding its bytes is not written yet.
      const last = this.#inFlight[this.#inFlight.length - 1];
      if (last !== undefined && last.seq === this.#seq) last.slabs.push(slab);
      else this.#inFlight.push({ seq: this.#seq, slabs: [slab] });
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
