/**
 * Lines, and exact byte counts, read from a byte stream: the one reader of
 * both ends of the worker pipe (the child reads job lines and content from
 * stdin, the pool reads report lines from the child's stdout). Bytes past
 * what was asked for stay buffered for the next call, so nothing of one job
 * can spill into the next, and every line is bounded.
 */
import { concatBytes } from "../sys/bytes.ts";

export class StreamLines {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  #tooLong: (max: number) => string;

  /** `tooLong` words the error for a line past its bound, for the reader's log. */
  constructor(stream: ReadableStream<Uint8Array>, tooLong: (max: number) => string) {
    this.#reader = stream.getReader();
    this.#tooLong = tooLong;
  }

  /** Bytes read past the last line or count asked for. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** The next chunk, null at the end of input, or "idle" when `waitMs` passed first. */
  async #more(waitMs?: number): Promise<Uint8Array | null | "idle"> {
    this.#pending ??= this.#reader.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = new Promise<"idle">((resolve) => {
      if (waitMs !== undefined) timer = setTimeout(() => resolve("idle"), waitMs);
    });
    const r = await Promise.race([this.#pending, idle]);
    clearTimeout(timer);
    if (r === "idle") return "idle";
    this.#pending = null;
    return r.done ? null : r.value;
  }

  /**
   * The next line, without its "\n"; null when the input ends first (what
   * it left unterminated stays in `buffered`), or when nothing came for
   * `idleMs` while nothing was buffered. Throws past `max` bytes without a
   * line end.
   */
  async line(max: number, idleMs?: number): Promise<string | null> {
    while (true) {
      const nl = this.#buf.indexOf(0x0a);
      if (nl >= 0) {
        const line = new TextDecoder().decode(this.#buf.subarray(0, nl));
        this.#buf = this.#buf.subarray(nl + 1);
        return line;
      }
      if (this.#buf.length > max) throw new Error(this.#tooLong(max));
      const chunk = await this.#more(this.#buf.length === 0 ? idleMs : undefined);
      if (chunk === "idle" || chunk === null) return null;
      this.#buf = concatBytes([this.#buf, chunk], this.#buf.length + chunk.length);
    }
  }

  /** Exactly `n` bytes; throws when the input ends first. */
  async exact(n: number): Promise<Uint8Array> {
    const head = this.#buf.subarray(0, Math.min(n, this.#buf.length));
    this.#buf = this.#buf.subarray(head.length);
    const chunks = [head];
    let total = head.length;
    while (total < n) {
      const chunk = await this.#more();
      if (chunk === null || chunk === "idle") {
        throw new Error(`Expected ${n} content bytes, got ${total}`);
      }
      const take = Math.min(chunk.length, n - total);
      chunks.push(chunk.subarray(0, take));
      this.#buf = chunk.subarray(take);
      total += take;
    }
    return concatBytes(chunks, n);
  }

  /** Stops reading (the stream's source is told). */
  cancel(): void {
    this.#reader.cancel().catch(() => {});
  }
}
