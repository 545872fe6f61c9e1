/**
 * What the shim does to a message read on stdin, byte-exact except where it
 * must change something: lines end in CRLF; a lone "." ends the input
 * unless -i; with -t the recipients come from To/Cc/Bcc (or only from the
 * Resent- fields when there are any, as sendmail and Postfix do), added to
 * the command line's; Bcc, Resent-Bcc, Content-Length and Return-Path are
 * dropped (Postfix's message_drop_headers); Date, Message-ID and From are
 * added when missing (RFC 5322 §3.6 requires Date and From).
 */
import { rfc5322Date } from "../smtp/received.ts";
import { concatBytes } from "../sys/bytes.ts";

/** What the message needs from the shim. */
export interface PrepareOptions {
  dotEnds: boolean;
  extract: boolean;
  /** Address for a missing From: header. */
  fromAddress: string;
  /** Display name for a missing From: header ("" for none). */
  fullName: string;
  hostname: string;
  now: number;
}

/** The message to submit, and the recipients -t found. */
export interface Prepared {
  content: Uint8Array;
  extracted: string[];
}

const CRLF = new Uint8Array([13, 10]);
const latin1 = new TextDecoder("latin1");
const encoder = new TextEncoder();

/** Splits input into lines (LF or CRLF), stopping at a lone "." when dotEnds. */
export function splitLines(input: Uint8Array, dotEnds: boolean): Uint8Array[] {
  const lines: Uint8Array[] = [];
  let start = 0;
  while (start < input.length) {
    let end = input.indexOf(10, start);
    const next = end < 0 ? input.length : end + 1;
    if (end < 0) end = input.length;
    let line = input.subarray(start, end);
    if (line.length > 0 && line[line.length - 1] === 13) line = line.subarray(0, line.length - 1);
    if (dotEnds && line.length === 1 && line[0] === 46) break;
    lines.push(line);
    start = next;
  }
  return lines;
}

/** One header field: its name (lower case) and its lines. */
interface Field {
  name: string;
  lines: Uint8Array[];
}

/** RFC 5322 §2.2: a field name is printable ASCII except ":". */
const FIELD = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;

/** Builds the message to submit. */
export function prepareMessage(input: Uint8Array, o: PrepareOptions): Prepared {
  const lines = splitLines(input, o.dotEnds);
  const fields: Field[] = [];
  let i = 0;
  // A leading mbox "From " line is not a header: drop it, as Postfix's sendmail does.
  if (lines.length > 0 && latin1.decode(lines[0].subarray(0, 5)) === "From ") i = 1;
  for (; i < lines.length; i++) {
    const text = latin1.decode(lines[i]);
    if (text === "") break;
    const m = FIELD.exec(text);
    if (m) fields.push({ name: m[1].toLowerCase(), lines: [lines[i]] });
    else if (/^[ \t]/.test(text) && fields.length > 0) fields.at(-1)!.lines.push(lines[i]);
    else break; // not a header: the body starts here (no separator line was given)
  }
  const body = lines.slice(i < lines.length && lines[i].length === 0 ? i + 1 : i);
  const valueOf = (f: Field) => {
    const t = f.lines.map((l) => latin1.decode(l)).join(" ");
    return t.slice(t.indexOf(":") + 1);
  };
  const resent = fields.some((f) => /^resent-(to|cc|bcc)$/.test(f.name));
  const extracted: string[] = [];
  if (o.extract) {
    const wanted = resent ? ["resent-to", "resent-cc", "resent-bcc"] : ["to", "cc", "bcc"];
    for (const f of fields) if (wanted.includes(f.name)) extracted.push(...addressList(valueOf(f)));
  }
  const dropped = new Set(["bcc", "resent-bcc", "content-length", "return-path"]);
  const kept = fields.filter((f) => !dropped.has(f.name));
  const has = (n: string) => fields.some((f) => f.name === n);
  const added: string[] = [];
  if (!has("date")) added.push(`Date: ${rfc5322Date(o.now)}`);
  if (!has("message-id")) added.push(`Message-ID: <${messageIdLocal(o.now)}@${o.hostname}>`);
  if (!has("from")) {
    added.push(`From: ${o.fullName ? `${displayName(o.fullName)} ` : ""}<${o.fromAddress}>`);
  }
  const parts: Uint8Array[] = [];
  for (const f of kept) for (const l of f.lines) parts.push(l, CRLF);
  for (const h of added) parts.push(encoder.encode(h), CRLF);
  parts.push(CRLF);
  for (const l of body) parts.push(l, CRLF);
  return { content: concatBytes(parts), extracted };
}

function messageIdLocal(now: number): string {
  const r = crypto.getRandomValues(new Uint8Array(8));
  return `${now.toString(36)}.${[...r].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** A display name as RFC 5322 allows: an atom phrase, a quoted string, or RFC 2047 for non-ASCII. */
export function displayName(name: string): string {
  const clean = name.replace(/[\r\n\t]/g, " ").trim();
  // deno-lint-ignore no-control-regex
  if (/[^\x00-\x7f]/.test(clean)) {
    const b64 = btoa(String.fromCharCode(...encoder.encode(clean)));
    return `=?UTF-8?B?${b64}?=`;
  }
  if (/^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$/.test(clean)) return clean;
  return `"${clean.replace(/(["\\])/g, "\\$1")}"`;
}

/**
 * The addresses in an address-list header value (RFC 5322 §3.4): comments
 * and display names dropped, groups opened, angle addresses preferred.
 */
export function addressList(value: string): string[] {
  // Remove comments (nested, outside quoted strings).
  let s = "";
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === "\\" && (quoted || depth > 0)) {
      if (quoted) s += c + (value[i + 1] ?? "");
      i++;
    } else if (quoted) {
      s += c;
      if (c === '"') quoted = false;
    } else if (depth > 0) {
      if (c === "(") depth++;
      else if (c === ")") depth--;
    } else if (c === "(") depth = 1;
    else {
      if (c === '"') quoted = true;
      s += c;
    }
  }
  const out: string[] = [];
  let cur = "";
  let angle: string | null = null;
  let inAngle = false;
  quoted = false;
  const end = () => {
    const a = (angle ?? cur).trim().replace(/^@[^:]*:/, ""); // drop a source route
    if (a !== "" && !/\s/.test(a.replace(/"[^"]*"/g, ""))) out.push(a);
    cur = "";
    angle = null;
  };
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (inAngle) angle += c;
      else cur += c;
      if (c === "\\") {
        if (inAngle) angle += s[i + 1] ?? "";
        else cur += s[i + 1] ?? "";
        i++;
      } else if (c === '"') quoted = false;
    } else if (c === '"') {
      quoted = true;
      if (inAngle) angle += c;
      else cur += c;
    } else if (c === "<") {
      inAngle = true;
      angle = "";
    } else if (c === ">") inAngle = false;
    else if (inAngle) angle += c;
    else if (c === "," || c === ";") end();
    else if (c === ":") cur = ""; // a group's display name
    else cur += c;
  }
  end();
  return out;
}
