/**
 * The strict byte-level reader under the SMTP server session. Command lines
 * and DATA content come out of one buffer so that pipelined bytes (RFC 2920)
 * stay in order. Only CRLF ends a line (RFC 5321 §2.3.8): a bare CR or LF is
 * reported as an error, never guessed at, which is the defence against SMTP
 * smuggling. Pure: no I/O, no timers; the session feeds it socket chunks.
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/**
 * Bytes taken from the next chunk when DATA needs lookahead across a chunk
 * boundary: the longest undecided tail is "." CR at a line start, which the
 * next byte settles; three bytes always settle it.
 */
const DATA_LOOKAHEAD = 3;

// Non-fatal: invalid UTF-8 becomes U+FFFD, which the command parser refuses
// in addresses. ignoreBOM keeps a leading U+FEFF visible instead of dropping it.
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** What {@link SmtpInput.nextLine} yields. */
export type LineEvent =
  /** One command line without its CRLF, decoded as UTF-8 (invalid bytes become U+FFFD). */
  | { kind: "line"; line: string }
  /** The line was refused; the reader has already skipped past it. */
  | { kind: "error"; error: "bare-lf" | "bare-cr" | "too-long" };

/** What {@link SmtpInput.nextData} yields. */
export type DataEvent =
  /** Unstuffed content: a view into a pushed chunk (not a copy), lines ending CRLF. */
  | { kind: "data"; bytes: Uint8Array }
  /** The terminating CRLF "." CRLF was consumed; the next bytes are commands again. */
  | { kind: "end" }
  /** A bare CR or LF in the content; the session must refuse the message and close. */
  | { kind: "error"; error: "bare-lf" | "bare-cr" };

/** Options for {@link SmtpInput}. */
export interface SmtpInputOptions {
  /** Longest accepted command line in bytes, CRLF included (RFC 5321 §4.5.3.1.4 says 512). */
  maxLineLength: number;
}

/**
 * Splits an SMTP byte stream into command lines and DATA content.
 *
 * `push()` keeps a reference to each chunk (data events are views into it),
 * so the caller must not reuse a chunk's memory after pushing it. Bytes are
 * held only until they are consumed: at most the unread part of the pushed
 * chunks plus a partial command line (bounded by maxLineLength) or a few bytes
 * of DATA lookahead.
 */
export class SmtpInput {
  #max: number;
  /** Pushed chunks not yet fully consumed; #segs[0] is read from #pos. */
  #segs: Uint8Array[] = [];
  #pos = 0;
  /** Command mode: an overlong line is being skipped up to its end. */
  #discarding = false;
  /** DATA mode: the next byte starts a line (true at the start of the content). */
  #lineStart = true;
  /** DATA mode: a content error is final; the session closes the connection. */
  #dataError: DataEvent | null = null;

  /** Creates a reader; see {@link SmtpInputOptions}. */
  constructor(opts: SmtpInputOptions) {
    if (!Number.isInteger(opts.maxLineLength) || opts.maxLineLength < 3) {
      throw new RangeError(`Invalid maxLineLength ${opts.maxLineLength}: need an integer >= 3`);
    }
    this.#max = opts.maxLineLength;
  }

  /** Adds bytes read from the socket. The chunk must not be modified afterwards. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#segs.length === 0) this.#pos = 0;
    this.#segs.push(chunk);
  }

  /** Bytes received but not yet consumed (e.g. a client talking before the greeting). */
  get buffered(): number {
    let n = -this.#pos;
    for (const s of this.#segs) n += s.length;
    return Math.max(n, 0);
  }

  /**
   * Returns the next command line or line error; null when more bytes are
   * needed. A bare LF resynchronises just after it, so a client that sends
   * LF-only lines gets one error per line instead of a hang.
   */
  nextLine(): LineEvent | null {
    while (this.#segs.length > 0) {
      const ev = this.#scanLine();
      if (ev) return ev;
      const take = this.#discarding ? 1 : this.#lineTake();
      if (!this.#advance(take)) return null;
    }
    return null;
  }

  /**
   * Returns the next piece of DATA content, the end marker or an error; null
   * when more bytes are needed. Call only after a DATA command was accepted;
   * after "end" the reader is back in command mode.
   */
  nextData(): DataEvent | null {
    if (this.#dataError) return this.#dataError;
    while (this.#segs.length > 0) {
      const ev = this.#scanData();
      if (ev) {
        if (ev.kind === "error") this.#dataError = ev;
        return ev;
      }
      if (!this.#advance(DATA_LOOKAHEAD)) return null;
    }
    return null;
  }

  /**
   * Raw bytes for BDAT (RFC 3030): up to `max` of the next bytes, as a view
   * into a pushed chunk, with no line or dot handling; null when none are
   * buffered. Command mode resumes right after the last byte taken.
   */
  take(max: number): Uint8Array | null {
    while (this.#segs.length > 0 && max > 0) {
      const b = this.#segs[0];
      if (this.#pos >= b.length) {
        this.#segs.shift();
        this.#pos = 0;
        continue;
      }
      const n = Math.min(max, b.length - this.#pos);
      const out = b.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return out;
    }
    return null;
  }

  /**
   * Drops every buffered byte and resets line state: after STARTTLS, any
   * plaintext the client pipelined must never be executed (RFC 3207 §4.2,
   * CVE-2011-0411). Returns how many bytes were dropped.
   */
  discard(): number {
    const n = this.buffered;
    this.#segs = [];
    this.#pos = 0;
    this.#discarding = false;
    this.#lineStart = true;
    this.#dataError = null;
    return n;
  }

  /**
   * Called when #segs[0] cannot yield an event. Drops it if fully consumed;
   * otherwise joins its small undecided tail with the first `take` bytes of
   * the next chunk (a bounded copy). Returns false when nothing can progress.
   */
  #advance(take: number): boolean {
    const cur = this.#segs[0];
    if (this.#pos >= cur.length) {
      this.#segs.shift();
      this.#pos = 0;
      return this.#segs.length > 0;
    }
    if (this.#segs.length < 2) return false;
    const left = cur.subarray(this.#pos);
    const next = this.#segs[1];
    const n = Math.min(take, next.length);
    const joined = new Uint8Array(left.length + n);
    joined.set(left);
    joined.set(next.subarray(0, n), left.length);
    this.#segs[0] = joined;
    this.#pos = 0;
    if (n === next.length) this.#segs.splice(1, 1);
    else this.#segs[1] = next.subarray(n);
    return true;
  }

  /** How much of the next chunk to join to a partial command line: up to its LF, bounded. */
  #lineTake(): number {
    const left = this.#segs[0].length - this.#pos;
    const next = this.#segs[1];
    const lf = next ? next.indexOf(LF) : -1;
    // One byte past the limit is enough to know the line is too long.
    const cap = this.#max + 2 - left;
    return lf === -1 ? cap : Math.min(lf + 1, cap);
  }

  /** Tries to read one command line out of #segs[0]. */
  #scanLine(): LineEvent | null {
    const b = this.#segs[0];
    const p = this.#pos;
    const lf = b.indexOf(LF, p);
    if (lf === -1) {
      // RFC 5321 §4.5.3.1.4: the line is already over the limit whatever
      // follows, so stop holding it and skip to its end.
      if (this.#discarding || b.length - p > this.#max) {
        this.#discarding = true;
        // A trailing CR may pair with an LF in the next chunk: keep it.
        this.#pos = b[b.length - 1] === CR ? b.length - 1 : b.length;
      }
      return null;
    }
    this.#pos = lf + 1;
    // An overlong line ends at its CRLF (or, like any line, at a bare LF, so
    // an LF-only client stays in step too) and earns exactly one error.
    if (this.#discarding || lf + 1 - p > this.#max) {
      this.#discarding = false;
      return { kind: "error", error: "too-long" };
    }
    const crlf = lf > p && b[lf - 1] === CR;
    const content = b.subarray(p, crlf ? lf - 1 : lf);
    // A CR inside the line is reported even when a bare LF ends it: it came first.
    if (content.indexOf(CR) !== -1) return { kind: "error", error: "bare-cr" };
    if (!crlf) return { kind: "error", error: "bare-lf" };
    return { kind: "line", line: decoder.decode(content) };
  }

  /**
   * Reads DATA content out of #segs[0] up to the first point that needs a
   * decision: the end marker, a stuffed dot, or bytes not yet received.
   */
  #scanData(): DataEvent | null {
    const b = this.#segs[0];
    const end = b.length;
    let start = this.#pos;
    let p = start;
    while (p < end) {
      if (this.#lineStart && b[p] === DOT) {
        const dot = this.#dotLine(b, p);
        if (dot === "wait" || (dot === "end" && p > start)) break;
        if (dot === "end") {
          this.#pos = p + 3;
          return { kind: "end" };
        }
        if (dot === "bare-cr") return { kind: "error", error: "bare-cr" };
        // RFC 5321 §4.5.2: drop the stuffed dot. Content bytes must stay one
        // contiguous view, so hand out what came before it first.
        if (p > start) break;
        start = p = p + 1;
      }
      this.#lineStart = false;
      const r = this.#lineEnd(b, p);
      if (typeof r === "string") return { kind: "error", error: r };
      const complete = r > p && b[r - 1] === LF;
      p = r;
      if (!complete) break;
      this.#lineStart = true;
    }
    this.#pos = p;
    return p > start ? { kind: "data", bytes: b.subarray(start, p) } : null;
  }

  /**
   * Classifies a line that starts with "." at p: the end marker, a stuffed
   * dot, a "." CR not followed by LF, or too few bytes to tell (RFC 5321 §4.1.1.4).
   */
  #dotLine(b: Uint8Array, p: number): "end" | "stuffed" | "bare-cr" | "wait" {
    if (p + 1 >= b.length) return "wait";
    if (b[p + 1] !== CR) return "stuffed";
    if (p + 2 >= b.length) return "wait";
    return b[p + 2] === LF ? "end" : "bare-cr";
  }

  /**
   * Finds where the content line running from p ends: just past its CRLF,
   * or at the end of the chunk (less a trailing CR that may pair with an LF
   * still to come). A CR without LF or an LF without CR is an error.
   */
  #lineEnd(b: Uint8Array, p: number): number | "bare-lf" | "bare-cr" {
    const lf = b.indexOf(LF, p);
    const cr = b.indexOf(CR, p);
    if (lf === -1) {
      if (cr === -1) return b.length;
      return cr === b.length - 1 ? cr : "bare-cr";
    }
    // The CR check comes first so the error named is the first one in the
    // stream, however the bytes were split into chunks.
    if (cr !== -1 && cr < lf - 1) return "bare-cr";
    if (lf === p || cr !== lf - 1) return "bare-lf";
    return lf + 1;
  }
}
