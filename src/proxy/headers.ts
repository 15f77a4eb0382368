/**
 * Header lists on the frame-level data path are flat arrays, [name0, value0, name1, value1, …], as
 * HPACK decodes them: no object per header block, and order kept. These are the lookups on them.
 */

/** A request header lookup by lower-case name (first value); routes and classifiers read through it. */
export type HeaderLookup = (name: string) => string | undefined;

/** The first value of `name` in a flat list, or undefined. */
export function headerOf(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

/** A lookup over a node-style header object ({ name: value | values }): first value. */
export function lookupOfRecord(
  headers: Readonly<Record<string, string | string[] | undefined>>,
): HeaderLookup {
  return (name) => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
}
