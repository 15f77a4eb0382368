// The HPACK dynamic table (RFC 7541 §2.3.2, §4): a FIFO of (name, value) entries, newest at
// dynamic index 1, sized by name.length + value.length + 32 per entry.
//
// Kept as a ring of parallel arrays (names, values, sizes) whose capacity is a power of two,
// so an index is one subtraction and one mask. Every entry also has a sequence number
// (inserted - 1 for the newest, evicted for the oldest): the encoder keys its lookup maps by
// it, and dynamic index = inserted - seq.

/** RFC 7541 §4.1: the size of an entry. */
export const ENTRY_OVERHEAD = 32;

export class DynamicTable {
  #names: string[];
  #values: string[];
  #sizes: Int32Array;
  #mask: number;
  /** Slot of the next insertion. */
  #head = 0;
  #count = 0;
  #size = 0;
  #maxSize: number;
  #inserted = 0;

  constructor(maxSize: number) {
    this.#maxSize = maxSize;
    const capacity = 16;
    this.#names = new Array<string>(capacity).fill("");
    this.#values = new Array<string>(capacity).fill("");
    this.#sizes = new Int32Array(capacity);
    this.#mask = capacity - 1;
  }

  /** Number of entries. */
  get count(): number {
    return this.#count;
  }
  /** Sum of entry sizes. */
  get size(): number {
    return this.#size;
  }
  get maxSize(): number {
    return this.#maxSize;
  }
  /** Sequence number the next insertion gets (= entries ever inserted). */
  get inserted(): number {
    return this.#inserted;
  }
  /** Sequence number of the oldest entry still present (= entries ever evicted). */
  get evicted(): number {
    return this.#inserted - this.#count;
  }

  /** Name at dynamic index i (1 = newest); the caller checks 1 <= i <= count. */
  name(i: number): string {
    return this.#names[(this.#head - i) & this.#mask]!;
  }
  value(i: number): string {
    return this.#values[(this.#head - i) & this.#mask]!;
  }
  entrySize(i: number): number {
    return this.#sizes[(this.#head - i) & this.#mask]!;
  }

  /** The oldest entry's name and value (count > 0), for the encoder to forget it before eviction. */
  oldestName(): string {
    return this.name(this.#count);
  }
  oldestValue(): string {
    return this.value(this.#count);
  }

  /** Drops the oldest entry. */
  evictOldest(): void {
    const slot = (this.#head - this.#count) & this.#mask;
    this.#size -= this.#sizes[slot]!;
    // Release the strings: a table that shrank must not keep large values alive.
    this.#names[slot] = "";
    this.#values[slot] = "";
    this.#count--;
  }

  /** Changes the maximum size; the caller evicts (entries past the new maximum) first or after. */
  setMaxSize(n: number): void {
    this.#maxSize = n;
  }

  /**
   * Appends an entry. The caller has already evicted so that size + entrySize <= maxSize
   * (RFC 7541 §4.4); an entry larger than maxSize is never added (the caller empties the table).
   */
  add(name: string, value: string, entrySize: number): void {
    if (this.#count > this.#mask) this.#grow();
    const slot = this.#head;
    this.#names[slot] = name;
    this.#values[slot] = value;
    this.#sizes[slot] = entrySize;
    this.#head = (slot + 1) & this.#mask;
    this.#count++;
    this.#size += entrySize;
    this.#inserted++;
  }

  #grow(): void {
    const capacity = (this.#mask + 1) * 2;
    const names = new Array<string>(capacity).fill("");
    const values = new Array<string>(capacity).fill("");
    const sizes = new Int32Array(capacity);
    // Re-lay oldest .. newest at 0 .. count-1.
    for (let k = 0; k < this.#count; k++) {
      const i = this.#count - k;
      names[k] = this.name(i);
      values[k] = this.value(i);
      sizes[k] = this.entrySize(i);
    }
    this.#names = names;
    this.#values = values;
    this.#sizes = sizes;
    this.#mask = capacity - 1;
    this.#head = this.#count;
  }

  /** Entries newest first, for tests and diagnostics. */
  entries(): [string, string][] {
    const out: [string, string][] = [];
    for (let i = 1; i <= this.#count; i++) out.push([this.name(i), this.value(i)]);
    return out;
  }
}
