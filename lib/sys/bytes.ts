/** Byte-array helpers shared by the spool, the SMTP client and the worker pipes. */

/** Joins byte arrays into one (the one part itself when there is only one). */
export function concatBytes(parts: Uint8Array[], length?: number): Uint8Array {
  if (parts.length === 1 && (length === undefined || length === parts[0].length)) return parts[0];
  const out = new Uint8Array(length ?? parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
