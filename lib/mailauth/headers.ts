/**
 * The header section of a message as a list of fields with their byte
 * ranges, so the signer can pick fields for h= and the verifier can cut out
 * forged Authentication-Results without touching any other byte. Works on
 * the raw bytes (latin1 view: one char per byte), CRLF line ends as the
 * SMTP reader guarantees; a field continues on lines starting with SP/HTAB.
 */

/** One header field: its lower-cased name and the exact bytes, CRLF included. */
export interface HeaderField {
  name: string;
  /** The whole field as one latin1 string, continuation lines and final CRLF included. */
  raw: string;
  start: number;
  end: number;
}

/** The header fields and where the body starts (after the empty line; length if none). */
export interface HeaderSection {
  fields: HeaderField[];
  bodyStart: number;
}

const latin1 = new TextDecoder("latin1");

/** The message as a latin1 string: one char per byte, reversible. */
export function asLatin1(bytes: Uint8Array): string {
  return latin1.decode(bytes);
}

/** Bytes of a latin1 string (every char < 256). */
export function fromLatin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Splits the header section of `text` (latin1) into fields. */
export function parseHeaderSection(text: string): HeaderSection {
  const fields: HeaderField[] = [];
  let pos = 0;
  while (pos < text.length) {
    if (text.startsWith("\r\n", pos)) return { fields, bodyStart: pos + 2 };
    let end = text.indexOf("\r\n", pos);
    while (end >= 0 && (text[end + 2] === " " || text[end + 2] === "\t")) {
      end = text.indexOf("\r\n", end + 2);
    }
    end = end < 0 ? text.length : end + 2;
    const raw = text.slice(pos, end);
    const colon = raw.indexOf(":");
    // A line without a colon is not a field (RFC 5322 §2.2); it still belongs to the header.
    const name = colon > 0 ? raw.slice(0, colon).trim().toLowerCase() : "";
    fields.push({ name, raw, start: pos, end });
    pos = end;
  }
  return { fields, bodyStart: text.length };
}

/** The value of a field (after the colon), unfolded and trimmed. */
export function fieldValue(f: HeaderField): string {
  return f.raw.slice(f.raw.indexOf(":") + 1).replace(/\r\n/g, "").trim();
}
