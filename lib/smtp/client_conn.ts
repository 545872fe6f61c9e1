/**
 * The outgoing side's byte pipe: a TCP or unix-socket connection (lib/net's
 * Conn, which can be upgraded to TLS in place: STARTTLS, RFC 3207), or the
 * stdin/stdout of a program that speaks LMTP. The session code (client_session.ts) sees only
 * the Wire interface, so SMTP, LMTP, sockets and pipes share one state
 * machine. Reads are pull-style with a deadline; incoming data is bounded
 * by pausing the socket while the session has unread chunks.
 */
import { TimeoutError as WireTimeout } from "../net/conn.ts";

/** Read and write deadlines raise the same error as the server side's. */
export { TimeoutError as WireTimeout } from "../net/conn.ts";

/** A bidirectional byte stream the client session talks over. */
export interface Wire {
  /** The next chunk, null at end of stream; rejects with WireTimeout after timeoutMs. */
  read(timeoutMs: number): Promise<Uint8Array | null>;
  /** Resolves when the bytes are handed to the kernel (or the pipe). */
  write(data: Uint8Array | string): Promise<void>;
  /** True once the peer closed or the wire failed. */
  readonly closed: boolean;
  /** The peer's address for logs ("" when none, e.g. a pipe). */
  readonly remoteAddress: string;
  /** Closes; pending data is dropped. */
  destroy(): void;
}

/** Result of a client TLS upgrade. */
export type { ClientTlsInfo as TlsInfo } from "../net/conn.ts";

/** A child process's stdout (read) and stdin (write) as a Wire: LMTP to a program. */
export class PipeWire implements Wire {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  #closed = false;
  readonly remoteAddress: string;
  #onDestroy: () => void;

  constructor(
    out: ReadableStream<Uint8Array>,
    input: WritableStream<Uint8Array>,
    opts: { name: string; onDestroy: () => void },
  ) {
    this.#reader = out.getReader();
    this.#writer = input.getWriter();
    this.remoteAddress = opts.name;
    this.#onDestroy = opts.onDestroy;
  }

  get closed(): boolean {
    return this.#closed;
  }

  async read(timeoutMs: number): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    // A read that timed out is still pending: the next read takes it over.
    this.#pending ??= this.#reader.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new WireTimeout(`No data for ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const r = await Promise.race([this.#pending, deadline]);
      this.#pending = null;
      if (r.done) {
        this.#closed = true;
        return null;
      }
      return r.value;
    } catch (err) {
      if (!(err instanceof WireTimeout)) {
        this.#pending = null;
        this.#closed = true;
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  async write(data: Uint8Array | string): Promise<void> {
    if (this.#closed) throw new Error("Program has exited");
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    try {
      await this.#writer.write(bytes);
    } catch (err) {
      this.#closed = true;
      throw err;
    }
  }

  destroy(): void {
    if (this.#closed && this.#pending === null) return this.#onDestroy();
    this.#closed = true;
    this.#reader.cancel().catch(() => {});
    this.#writer.abort().catch(() => {});
    this.#onDestroy();
  }
}
