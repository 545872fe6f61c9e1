/**
 * Message bytes on their way out: dot-stuffing for DATA and line-end repair
 * for DATA and BDAT alike. The spool keeps content as received; every line
 * leaves with CRLF, so no "." line can hide behind a lone LF or CR and end
 * the message early at a server that reads those as line ends (SMTP
 * smuggling).
 */

/**
 * Dot-stuffing with line-end repair, chunk by chunk: a "." at the start of a
 * line gets another "." (RFC 5321 §4.5.2, only when `stuff`), and a bare LF
 * or bare CR becomes CRLF (§2.3.8). With `stuff` off (BDAT, RFC 3030) only
 * the line ends are repaired and no terminating line is added.
 */
export class DotStuffer {
  #lineStart = true;
  #pendingCR = false;
  #stuff: boolean;

  constructor(opts: { stuff: boolean } = { stuff: true }) {
    this.#stuff = opts.stuff;
  }

  /** Converts one chunk. */
  push(chunk: Uint8Array): Uint8Array {
    // Worst case every byte becomes two (all "." lines or all bare LFs), plus a held CR.
    const out = new Uint8Array(chunk.length * 2 + 2);
    let n = 0;
    for (const b of chunk) {
      if (this.#pendingCR) {
        this.#pendingCR = false;
        out[n++] = 0x0d;
        out[n++] = 0x0a;
        this.#lineStart = true;
        if (b === 0x0a) continue; // CRLF as stored
      }
      if (b === 0x0d) {
        this.#pendingCR = true;
        continue;
      }
      if (b === 0x0a) {
        out[n++] = 0x0d;
        out[n++] = 0x0a;
        this.#lineStart = true;
        continue;
      }
      if (this.#lineStart && b === 0x2e && this.#stuff) out[n++] = 0x2e;
      out[n++] = b;
      this.#lineStart = false;
    }
    return out.subarray(0, n);
  }

  /**
   * The rest: a held CR, a CRLF if the content did not end with one, and
   * (for DATA) the terminating ".\r\n".
   */
  end(): Uint8Array {
    const eol = this.#pendingCR || !this.#lineStart ? "\r\n" : "";
    this.#pendingCR = false;
    this.#lineStart = true;
    return new TextEncoder().encode(this.#stuff ? `${eol}.\r\n` : eol);
  }
}

/** True when the text has a byte outside US-ASCII (an address that needs SMTPUTF8, RFC 6531). */
export function needsUtf8(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return /[^\x00-\x7f]/.test(text);
}
