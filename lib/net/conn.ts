/**
 * One small connection type over node:net sockets, used by the SMTP server
 * and client alike, so protocol code never knows what is underneath (and a
 * later TLS upgrade through node:tls can swap the socket in place).
 */
import * as net from "node:net";

/** A byte stream with pull-style reads, bounded by per-read deadlines. */
export class Conn {
  #socket: net.Socket;
  #chunks: Uint8Array[] = [];
  #ended = false;
  #error: Error | null = null;
  #waiter: (() => void) | null = null;
  #closed = false;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      // Stop reading from the kernel while the session has unread input:
      // bounded memory however fast the peer writes.
      if (this.#chunks.length > 8) socket.pause();
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (err: Error) => {
      this.#error = err;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#closed = true;
      this.#wake();
    });
  }

  /** Connects to host:port, failing after timeoutMs. */
  static connect(host: string, port: number, timeoutMs: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`Connection to ${host}:${port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new Conn(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** The peer's IP address ("" for unix sockets). */
  get remoteAddress(): string {
    return this.#socket.remoteAddress ?? "";
  }

  /** The peer's port (0 for unix sockets). */
  get remotePort(): number {
    return this.#socket.remotePort ?? 0;
  }

  /** The local IP address of this connection. */
  get localAddress(): string {
    return this.#socket.localAddress ?? "";
  }

  /** True once the peer closed or the socket failed. */
  get closed(): boolean {
    return this.#closed;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  /**
   * Reads the next chunk; null at end of stream. Rejects with a TimeoutError
   * when nothing arrives within timeoutMs.
   */
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
            reject(new TimeoutError(`No data for ${timeoutMs} ms`));
          }, timeoutMs);
        });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /** Writes bytes or text and waits until the socket has taken them. */
  write(data: Uint8Array | string): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Connection is closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (err) => err ? reject(err) : resolve());
    });
  }

  /** Closes the connection after pending writes are flushed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.end();
    // A peer that never reads must not keep the socket alive forever.
    const timer = setTimeout(() => this.#socket.destroy(), 2000);
    this.#socket.once("close", () => clearTimeout(timer));
    Deno.unrefTimer(timer as unknown as number);
  }

  /** Closes at once, dropping pending writes. */
  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
  }
}

/** Raised when a read deadline passes. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}
