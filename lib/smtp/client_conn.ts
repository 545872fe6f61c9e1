/**
 * The outgoing side's byte pipe: a TCP or unix-socket connection that can be
 * upgraded to TLS in place (STARTTLS, RFC 3207), or the stdin/stdout of a
 * program that speaks LMTP. The session code (client_session.ts) sees only
 * the Wire interface, so SMTP, LMTP, sockets and pipes share one state
 * machine. Reads are pull-style with a deadline; incoming data is bounded
 * by pausing the socket while the session has unread chunks.
 */
import * as net from "node:net";
import * as tls from "node:tls";

/** Raised when a read or write deadline passes. */
export class WireTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireTimeout";
  }
}

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

/** Result of a TLS upgrade. */
export interface TlsInfo {
  authorized: boolean;
  authorizationError: string | null;
  protocol: string | null;
  cipher: string | null;
}

/** A node:net / node:tls socket as a Wire. */
export class SocketWire implements Wire {
  #socket: net.Socket;
  #chunks: Uint8Array[] = [];
  #ended = false;
  #error: Error | null = null;
  #waiter: (() => void) | null = null;
  #closed = false;
  #listeners: [string, (...a: never[]) => void][] = [];

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setNoDelay?.(true);
    this.#on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      if (this.#chunks.length > 8) socket.pause();
      this.#wake();
    });
    this.#on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    this.#on("error", (err: Error) => {
      this.#error = err;
      this.#wake();
    });
    this.#on("close", () => {
      this.#ended = true;
      this.#closed = true;
      this.#wake();
    });
  }

  #on(event: string, fn: (...a: never[]) => void): void {
    this.#socket.on(event, fn as (...a: unknown[]) => void);
    this.#listeners.push([event, fn]);
  }

  /** Connects over TCP (host:port) or a unix socket (path). */
  static connect(
    to: { host: string; port: number } | { path: string },
    timeoutMs: number,
  ): Promise<SocketWire> {
    return new Promise((resolve, reject) => {
      const socket = "path" in to ? net.connect({ path: to.path }) : net.connect(to);
      const what = "path" in to ? to.path : `${to.host}:${to.port}`;
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new WireTimeout(`Connection to ${what} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new SocketWire(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  get remoteAddress(): string {
    return this.#socket.remoteAddress ?? "";
  }

  get closed(): boolean {
    return this.#closed || this.#error !== null;
  }

  /** Bytes received but not yet read (a STARTTLS upgrade must find none: RFC 3207 §4.2). */
  get unread(): number {
    return this.#chunks.reduce((n, c) => n + c.length, 0);
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  async read(timeoutMs: number): Promise<Uint8Array | null> {
    while (true) {
      const chunk = this.#chunks.shift();
      if (chunk) {
        if (this.#chunks.length <= 2 && !this.#closed) this.#socket.resume();
        return chunk;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          this.#waiter = resolve;
          timer = setTimeout(() => {
            this.#waiter = null;
            reject(new WireTimeout(`No data for ${timeoutMs} ms`));
          }, timeoutMs);
        });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  write(data: Uint8Array | string): Promise<void> {
    if (this.closed) return Promise.reject(new Error("Connection is closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (err) => err ? reject(err) : resolve());
    });
  }

  /**
   * Starts TLS on this connection (after a 220 to STARTTLS) and returns the
   * new Wire; this one must not be used afterwards. `verify` checks the
   * certificate chain and host name; otherwise any certificate is taken
   * (opportunistic TLS: encryption against passive eavesdroppers only).
   */
  upgrade(
    opts: { servername: string; verify: boolean; timeoutMs: number; ca?: string[] },
  ): Promise<{ wire: SocketWire; info: TlsInfo }> {
    for (const [event, fn] of this.#listeners) {
      this.#socket.off(event, fn as (...a: unknown[]) => void);
    }
    this.#listeners = [];
    const raw = this.#socket;
    raw.resume();
    return new Promise((resolve, reject) => {
      const servername = net.isIP(opts.servername) ? undefined : opts.servername;
      const sock = tls.connect({
        socket: raw,
        servername,
        rejectUnauthorized: opts.verify,
        ca: opts.ca,
      });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new WireTimeout(`TLS handshake timed out after ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
      sock.once("secureConnect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        const cipher = sock.getCipher?.();
        resolve({
          wire: new SocketWire(sock),
          info: {
            authorized: sock.authorized,
            authorizationError: sock.authorizationError ? String(sock.authorizationError) : null,
            protocol: sock.getProtocol?.() ?? null,
            cipher: cipher?.name ?? null,
          },
        });
      });
      sock.once("error", (err) => {
        clearTimeout(timer);
        sock.destroy();
        reject(err);
      });
    });
  }

  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
  }
}

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
