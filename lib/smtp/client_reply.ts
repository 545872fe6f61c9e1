/**
 * The SMTP client's reply reader: an incremental, strict parser of server
 * replies (RFC 5321 §4.2) fed with raw bytes as they arrive. A remote server
 * is untrusted input, so every line and every multi-line reply is bounded: an
 * overlong or endless reply becomes a protocol error, never unbounded memory
 * or a crash (the CVE-2020-8794 class of OpenSMTPD client bugs).
 */
import { concatBytes } from "../sys/bytes.ts";

/** Longest reply line accepted, in bytes including CRLF (RFC 5321 §4.5.3.1.5 asks 512; 4x slack). */
export const MAX_REPLY_LINE = 2048;

/** Most lines accepted in one multi-line reply (EHLO replies run to ~20). */
export const MAX_REPLY_LINES = 100;

/** One server reply, with the RFC 3463 enhanced status code split off when present. */
export interface ClientReply {
  /** The three-digit reply code, e.g. 250. */
  code: number;
  /** RFC 3463 enhanced status code such as "2.1.5", when the server sent one. */
  enhanced?: string;
  /** The text of each line, without code, separator, enhanced code or CRLF. */
  lines: string[];
}

/** A server reply that breaks the grammar or the limits; the session must end. */
export class ReplyProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReplyProtocolError";
  }
}

const CR = 0x0d;
const LF = 0x0a;

// RFC 5321 §4.2: three digits, first 2-5 (1yz is not used in SMTP), then
// "-" (more lines follow) or " " (last line), or nothing at all for a last
// line without text.
const LINE = /^([2-5][0-9][0-9])(?:([ -])(.*))?$/s;
// RFC 3463 §2: class "." subject "." detail, subject and detail 1-3 digits.
const ENHANCED = /^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|$)/;

/**
 * Turns a byte stream into replies. Feed chunks with push(); take finished
 * replies with shift(). push() throws ReplyProtocolError on the first
 * malformed line; the parser is unusable afterwards.
 */
export class ReplyParser {
  #partial: Uint8Array[] = [];
  #partialLength = 0;
  #lines: { code: string; text: string }[] = [];
  #ready: ClientReply[] = [];
  #failed: ReplyProtocolError | null = null;
  #decoder = new TextDecoder("utf-8", { fatal: false });

  /** Bytes received that are not yet part of a finished reply. */
  get buffered(): number {
    return this.#partialLength + this.#lines.length;
  }

  /** Finished replies waiting to be taken. */
  get pending(): number {
    return this.#ready.length;
  }

  /** Adds received bytes; throws ReplyProtocolError on malformed input. */
  push(chunk: Uint8Array): void {
    if (this.#failed) throw this.#failed;
    try {
      this.#push(chunk);
    } catch (err) {
      if (err instanceof ReplyProtocolError) this.#failed = err;
      throw err;
    }
  }

  /** The oldest finished reply, or undefined when none is complete yet. */
  shift(): ClientReply | undefined {
    return this.#ready.shift();
  }

  #push(chunk: Uint8Array): void {
    let start = 0;
    while (start < chunk.length) {
      const lf = chunk.indexOf(LF, start);
      const end = lf === -1 ? chunk.length : lf + 1;
      if (this.#partialLength + (end - start) > MAX_REPLY_LINE) {
        throw new ReplyProtocolError(`Reply line longer than ${MAX_REPLY_LINE} bytes`);
      }
      this.#partial.push(chunk.subarray(start, end));
      this.#partialLength += end - start;
      start = end;
      if (lf !== -1) this.#line(this.#takePartial());
    }
  }

  #takePartial(): Uint8Array {
    const line = this.#partial.length === 1 ? this.#partial[0] : concatBytes(this.#partial);
    this.#partial = [];
    this.#partialLength = 0;
    return line;
  }

  /** One line, LF included. */
  #line(bytes: Uint8Array): void {
    const n = bytes.length;
    // RFC 5321 §2.3.8: lines end in CRLF; a bare LF or a CR inside a line is
    // not a line end we accept (it would let a server smuggle replies).
    if (n < 2 || bytes[n - 2] !== CR) throw new ReplyProtocolError("Reply line ends in a bare LF");
    const body = bytes.subarray(0, n - 2);
    if (body.includes(CR)) throw new ReplyProtocolError("Reply line contains a bare CR");
    const text = this.#decoder.decode(body);
    const m = LINE.exec(text);
    if (!m) throw new ReplyProtocolError(`Malformed reply line: ${printable(text, 80)}`);
    const [, code, sep, rest] = m;
    if (this.#lines.length > 0 && this.#lines[0].code !== code) {
      throw new ReplyProtocolError(
        `Reply code ${code} differs from ${this.#lines[0].code} within one multi-line reply`,
      );
    }
    this.#lines.push({ code, text: rest ?? "" });
    if (sep === "-") {
      if (this.#lines.length >= MAX_REPLY_LINES) {
        throw new ReplyProtocolError(`Reply longer than ${MAX_REPLY_LINES} lines`);
      }
      return;
    }
    this.#ready.push(finish(this.#lines));
    this.#lines = [];
  }
}

function finish(raw: { code: string; text: string }[]): ClientReply {
  const code = Number(raw[0].code);
  const first = ENHANCED.exec(raw[0].text);
  if (!first) return { code, lines: raw.map((l) => l.text) };
  let [, cls, subject, detail] = first;
  // RFC 3463 §3.1: the class repeats the reply code's class. A server that
  // disagrees with itself gets its code's class (as Postfix does), so a
  // "550 2.0.0" never reads as success.
  if ("245".includes(raw[0].code[0])) cls = raw[0].code[0];
  const enhanced = `${cls}.${Number(subject)}.${Number(detail)}`;
  // RFC 2034 §4: the enhanced code prefixes every line of the reply.
  const lines = raw.map((l) => l.text.replace(ENHANCED, ""));
  return { code, enhanced, lines };
}

/** Text with control characters removed and length capped, for messages and logs. */
export function printable(text: string, max: number): string {
  // deno-lint-ignore no-control-regex
  const clean = text.replace(/[\x00-\x1f\x7f-\x9f]+/g, " ");
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean;
}
