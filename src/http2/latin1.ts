// Latin1 (one byte, one char) conversion between header octets and JS strings.
// Short strings are built from char codes (cheaper than a call into the runtime); longer ones
// use Buffer's native latin1 slice/write, which accept any Uint8Array as `this`.
// Not TextDecoder("latin1"): that is windows-1252 per the Encoding standard.

interface Latin1Native {
  latin1Slice(this: Uint8Array, start: number, end: number): string;
  latin1Write(this: Uint8Array, s: string, offset: number, length: number): number;
}
const native = Buffer.prototype as unknown as Latin1Native;
const nativeSlice = native.latin1Slice;
const nativeWrite = native.latin1Write;

/** Below this length strings are converted by a JS loop. */
const SHORT = 16;

/** bytes[start, end) as a string, one char per byte. */
export function latin1String(bytes: Uint8Array, start: number, end: number): string {
  const n = end - start;
  if (n > SHORT) return nativeSlice.call(bytes, start, end);
  let s = "";
  for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/** Writes `s` (latin1: charCode & 0xff) at out[offset..]; returns the offset after it. */
export function writeLatin1(s: string, out: Uint8Array, offset: number): number {
  const n = s.length;
  if (n > SHORT) return offset + nativeWrite.call(out, s, offset, n);
  for (let i = 0; i < n; i++) out[offset + i] = s.charCodeAt(i);
  return offset + n;
}
