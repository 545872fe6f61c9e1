/**
 * A message as milters see it (header fields, then the body) and the
 * changes they ask for at end of message, applied as sendmail does:
 * SMFIR_ADDHEADER appends a field at the end of the header, INSHEADER puts
 * it at a position (0 = first), CHGHEADER replaces the index-th (from 1)
 * field of that name or deletes it when the value is empty, REPLBODY
 * chunks together replace the body. Header values keep their folding;
 * every line of the result ends in CRLF, whatever a milter sent.
 */
import { concatBytes } from "../sys/bytes.ts";
import type { Modification } from "./client.ts";

/** One header field: its name and its value after the colon (folding kept, no final CRLF). */
export interface HeaderField {
  name: string;
  value: string;
}

const decoder = new TextDecoder("utf-8", { fatal: false });
const encoder = new TextEncoder();

/** Splits a message at the first empty line. */
export function splitMessage(content: Uint8Array): { headers: HeaderField[]; body: Uint8Array } {
  let end = -1;
  for (let i = 0; i + 3 < content.length; i++) {
    if (
      content[i] === 13 && content[i + 1] === 10 && content[i + 2] === 13 && content[i + 3] === 10
    ) {
      end = i;
      break;
    }
  }
  const headText = decoder.decode(end < 0 ? content : content.subarray(0, end));
  const body = end < 0 ? new Uint8Array(0) : content.subarray(end + 4);
  const headers: HeaderField[] = [];
  for (const line of headText.split("\r\n")) {
    if (line === "") continue;
    if ((line[0] === " " || line[0] === "\t") && headers.length > 0) {
      headers[headers.length - 1].value += `\r\n${line}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue; // not a field: the SMTP server refuses such headers before this
    headers.push({ name: line.slice(0, colon), value: line.slice(colon + 1) });
  }
  return { headers, body };
}

/** Joins header fields and a body back into a message. */
export function joinMessage(headers: HeaderField[], body: Uint8Array): Uint8Array {
  const head = encoder.encode(headers.map((h) => `${h.name}:${h.value}\r\n`).join("") + "\r\n");
  return concatBytes([head, body]);
}

/** Line ends as CRLF, whatever a milter sent (some send bare LF in values). */
function crlf(value: string): string {
  return value.replace(/\r?\n/g, "\r\n");
}

/** A header value as a milter sends it, stored with the space after the colon. */
function stored(value: string): string {
  return value.startsWith(" ") || value.startsWith("\t") ? crlf(value) : ` ${crlf(value)}`;
}

/** Applies the changes; returns the new message, or null when nothing changed. */
export function applyChanges(content: Uint8Array, changes: Modification[]): Uint8Array | null {
  if (!changes.some((c) => c.kind !== "quarantine")) return null;
  const { headers, body } = splitMessage(content);
  const chunks: Uint8Array[] = [];
  for (const c of changes) {
    switch (c.kind) {
      case "addHeader":
        headers.push({ name: c.name, value: stored(c.value) });
        break;
      case "insertHeader":
        headers.splice(Math.min(c.index, headers.length), 0, {
          name: c.name,
          value: stored(c.value),
        });
        break;
      case "changeHeader": {
        const lower = c.name.toLowerCase();
        let seen = 0;
        const at = headers.findIndex((h) =>
          h.name.toLowerCase() === lower && ++seen === Math.max(1, c.index)
        );
        if (at < 0) {
          if (c.value !== "") headers.push({ name: c.name, value: stored(c.value) });
        } else if (c.value === "") headers.splice(at, 1);
        else headers[at] = { name: headers[at].name, value: stored(c.value) };
        break;
      }
      case "replaceBody":
        chunks.push(c.chunk);
        break;
    }
  }
  let newBody = body;
  if (chunks.length > 0) {
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const joined = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      joined.set(c, at);
      at += c.length;
    }
    newBody = encoder.encode(crlf(decoder.decode(joined)));
  }
  return joinMessage(headers, newBody);
}
