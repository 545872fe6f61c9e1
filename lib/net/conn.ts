/**
 * One small connection type over node:net sockets, used by the SMTP server
 * and client alike, so protocol code never knows what is underneath. Either
 * side can be upgraded to TLS in place through node:tls (STARTTLS, RFC 3207):
 * the server with startTlsServer/acceptTls, the client with startTlsClient.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import type { PeerCred } from "../auth/peercred.ts";
import { ioDeadlines, type Waiter } from "./deadlines.ts";

/** The negotiated TLS of a connection. */
export interface TlsInfo {
  version: string;
  cipher: string;
}

/** What a client learns from its TLS handshake. */
export interface ClientTlsInfo {
  /** The certificate chain and host name verified. */
  authorized: boolean;
  authorizationError: string | null;
  protocol: string | null;
  cipher: string | null;
  /** The certificates the server sent (DER, leaf first), for DANE (lib/tlspolicy/dane.ts). */
  peerChain?: Uint8Array[];
}

/** The DER chain of a node:tls peer, leaf first (bounded; stops at a self-issued loop). */
function peerChain(sock: tls.TLSSocket): Uint8Array[] {
  const out: Uint8Array[] = [];
  let cert = sock.getPeerCertificate?.(true) as tls.DetailedPeerCertificate | undefined;
  const seen = new Set<unknown>();
  while (cert?.raw && !seen.has(cert) && out.length < 10) {
    seen.add(cert);
    out.push(new Uint8Array(cert.raw));
    cert = cert.issuerCertificate;
  }
  return out;
}

/** The Conn a socket's events go to (set by the Conn that listens to it). */
const CONN = Symbol("skiff.conn");
type Hooked = net.Socket & { [CONN]?: Conn };

/**
 * A read waiting for bytes, with its deadline in {@link ioDeadlines}. One
 * small object per wait instead of a timer and its closures.
 */
class PendingRead implements Waiter {
  due = 0;
  /** Settled already (the deadline passed): a late chunk is kept for the next read. */
  done = false;
  constructor(
    readonly resolve: (chunk: Uint8Array | null) => void,
    readonly reject: (err: Error) => void,
    readonly ms: number,
  ) {}

  expire(): void {
    this.done = true;
    this.reject(new TimeoutError(`No data for ${this.ms} ms`));
  }
}

/** A write waiting for the kernel to take its bytes, with its deadline in {@link ioDeadlines}. */
class PendingWrite implements Waiter {
  due = 0;
  /** Settled already (the deadline passed). */
  done = false;
  constructor(
    readonly conn: Conn,
    readonly reject: (err: Error) => void,
    readonly ms: number,
  ) {}

  expire(): void {
    this.done = true;
    // Reject first: destroying fails the pending write with ECANCELED.
    this.reject(
      new OutputBoundError(`Peer did not read for ${this.ms} ms`, this.conn.queued, true),
    );
    this.conn.destroy();
  }
}

/** A byte stream with pull-style reads, bounded by per-read deadlines. */
export class Conn {
  #socket: Hooked;
  #chunks: Uint8Array[] = [];
  #ended = false;
  #error: Error | null = null;
  #reader: PendingRead | null = null;
  #closed = false;
  #remoteAddress: string;
  #remotePort: number;
  /** Unix sockets: the peer's kernel credentials (SO_PEERCRED), read at accept. */
  peer: PeerCred | null = null;
  /** Set once TLS is up. */
  tls: TlsInfo | null = null;

  /**
   * The socket events a Conn listens to. The same four functions serve every
   * connection (they find their Conn on the socket), so an idle connection
   * holds no closures of its own.
   */
  static #handlers: [string, (this: Hooked, arg?: unknown) => void][] = [
    ["data", function (this: Hooked, chunk: unknown) {
      const c = this[CONN];
      if (c) c.#onData(chunk as Uint8Array);
    }],
    ["end", function (this: Hooked) {
      const c = this[CONN];
      if (!c) return;
      c.#ended = true;
      c.#wake();
    }],
    ["error", function (this: Hooked, err: unknown) {
      const c = this[CONN];
      if (!c) return;
      c.#error = err as Error;
      c.#wake();
    }],
    ["close", function (this: Hooked) {
      const c = this[CONN];
      if (!c) return;
      c.#ended = true;
      c.#closed = true;
      c.#wake();
    }],
  ];

  constructor(
    socket: net.Socket,
    from?: { remoteAddress: string; remotePort: number; peer: PeerCred | null },
  ) {
    this.#socket = socket;
    this.#remoteAddress = from?.remoteAddress ?? socket.remoteAddress ?? "";
    this.#remotePort = from?.remotePort ?? socket.remotePort ?? 0;
    this.peer = from?.peer ?? null;
    socket.setNoDelay?.(true);
    this.#socket[CONN] = this;
    for (const [ev, fn] of Conn.#handlers) socket.on(ev, fn);
  }

  /** Stops listening to the socket (a TLS upgrade hands it to a new Conn). */
  #unhook(): void {
    for (const [ev, fn] of Conn.#handlers) this.#socket.off(ev, fn);
    if (this.#socket[CONN] === this) delete this.#socket[CONN];
  }

  #onData(chunk: Uint8Array): void {
    const r = this.#takeReader();
    if (r && this.#chunks.length === 0) return r.resolve(chunk);
    this.#chunks.push(chunk);
    // Stop reading from the kernel while the session has unread input:
    // bounded memory however fast the peer writes.
    if (this.#chunks.length > 8) this.#socket.pause();
    if (r) this.#settle(r);
  }

  /**
   * Server-side TLS on this connection (STARTTLS, RFC 3207, or implicit TLS,
   * RFC 8314): stops reading, drops any plaintext already received (it must
   * never be executed after the upgrade: CVE-2011-0411), writes `greeting`
   * (the 220 reply) in plaintext, then runs the handshake. The old Conn is
   * dead afterwards; use the one returned. Node's TLSSocket needs the socket
   * paused with its data listener gone before the 220, or a fast ClientHello
   * is consumed as plaintext and the handshake hangs.
   */
  async startTlsServer(
    opts: { secureContext: tls.SecureContext; timeoutMs: number; greeting?: Uint8Array },
  ): Promise<Conn> {
    const raw = this.#socket;
    raw.pause();
    this.#unhook();
    this.#chunks = [];
    this.#closed = true;
    if (opts.greeting) {
      await new Promise<void>((resolve, reject) =>
        raw.write(opts.greeting!, (err) => err ? reject(err) : resolve())
      );
    }
    return await Conn.acceptTls(raw, { ...opts, from: this });
  }

  /** Runs a server TLS handshake on a fresh socket (implicit TLS) and wraps the result. */
  static async acceptTls(
    raw: net.Socket,
    opts: { secureContext: tls.SecureContext; timeoutMs: number; from?: Conn },
  ): Promise<Conn> {
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: opts.secureContext });
    await new Promise<void>((resolve, reject) => {
      // A client that drops the connection mid-handshake (as one does when our
      // certificate fails its checks) makes the TLSSocket emit "end"/"close"
      // but no "error" (Deno 2.9, listeners with allowHalfOpen). Without these
      // the session, and a graceful stop, waited out the handshake timeout
      // (the command timeout, 300 s by default). tests/client_tls_test.ts.
      const unhook = () => {
        raw.off("close", closed);
        raw.off("end", closed);
        secure.off("end", closed);
        secure.off("close", closed);
      };
      const closed = () => {
        clearTimeout(timer);
        unhook();
        secure.destroy();
        reject(new Error("Connection closed during the TLS handshake"));
      };
      const timer = setTimeout(() => {
        unhook();
        secure.destroy();
        reject(new TimeoutError(`TLS handshake not done after ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
      raw.once("close", closed);
      raw.once("end", closed);
      secure.once("end", closed);
      secure.once("close", closed);
      secure.once("secure", () => {
        clearTimeout(timer);
        unhook();
        resolve();
      });
      secure.once("error", (err) => {
        clearTimeout(timer);
        unhook();
        reject(err);
      });
    });
    const conn = new Conn(secure, {
      remoteAddress: opts.from?.remoteAddress ?? raw.remoteAddress ?? "",
      remotePort: opts.from?.remotePort ?? raw.remotePort ?? 0,
      peer: opts.from?.peer ?? null,
    });
    conn.tls = {
      version: secure.getProtocol() ?? "TLS",
      cipher: secure.getCipher()?.name ?? "unknown",
    };
    return conn;
  }

  /** Connects to host:port, failing after timeoutMs. */
  static connect(host: string, port: number, timeoutMs: number): Promise<Conn> {
    return Conn.connectTo({ host, port }, timeoutMs);
  }

  /** Connects over TCP (host:port) or a unix socket (path), failing after timeoutMs. */
  static connectTo(
    to: { host: string; port: number } | { path: string },
    timeoutMs: number,
  ): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = "path" in to ? net.connect({ path: to.path }) : net.connect(to);
      const what = "path" in to ? to.path : `${to.host}:${to.port}`;
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new TimeoutError(`Connection to ${what} timed out after ${timeoutMs} ms`));
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

  /**
   * Client-side TLS on this connection, after the server's 220 to STARTTLS.
   * The old Conn is dead afterwards; use the one returned. `verify` checks the
   * chain and host name; otherwise any certificate is taken (opportunistic
   * TLS: protection against passive eavesdroppers only).
   */
  startTlsClient(
    opts: { servername: string; verify: boolean; timeoutMs: number; ca?: string[] },
  ): Promise<{ conn: Conn; info: ClientTlsInfo }> {
    const raw = this.#socket;
    this.#unhook();
    this.#closed = true;
    raw.resume();
    return new Promise((resolve, reject) => {
      const servername = net.isIP(opts.servername) ? undefined : opts.servername;
      const sock = tls.connect({
        socket: raw,
        servername,
        rejectUnauthorized: opts.verify,
        ca: opts.ca,
        // The identity is checked against the name (or IP address) we meant to
        // reach. Without this, node:tls over an existing socket and without SNI
        // (an IP literal) checks the default host "localhost" instead, so any
        // trusted certificate for "localhost" passed for every address.
        checkServerIdentity: (_host, cert) =>
          opts.servername
            ? tls.checkServerIdentity(opts.servername, cert)
            : new Error("No host name to check the server certificate against"),
      });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new TimeoutError(`TLS handshake timed out after ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
      sock.once("secureConnect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        const conn = new Conn(sock, {
          remoteAddress: this.#remoteAddress,
          remotePort: this.#remotePort,
          peer: null,
        });
        const cipher = sock.getCipher?.();
        conn.tls = { version: sock.getProtocol?.() ?? "TLS", cipher: cipher?.name ?? "unknown" };
        resolve({
          conn,
          info: {
            authorized: sock.authorized,
            authorizationError: sock.authorizationError ? String(sock.authorizationError) : null,
            protocol: sock.getProtocol?.() ?? null,
            cipher: cipher?.name ?? null,
            peerChain: peerChain(sock),
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

  /** The peer's IP address ("" for unix sockets). */
  get remoteAddress(): string {
    return this.#remoteAddress;
  }

  /** The peer's port (0 for unix sockets). */
  get remotePort(): number {
    return this.#remotePort;
  }

  /** The local IP address of this connection. */
  get localAddress(): string {
    return this.#socket.localAddress ?? "";
  }

  /** Bytes received but not yet read (a STARTTLS upgrade must find none: RFC 3207 §4.2). */
  get unread(): number {
    return this.#chunks.reduce((n, c) => n + c.length, 0);
  }

  /** True when bytes have arrived that no read() has taken yet. */
  get pending(): boolean {
    return this.#chunks.length > 0;
  }

  /** True once the peer closed or the socket failed. */
  get closed(): boolean {
    return this.#closed || this.#error !== null;
  }

  /** The waiting read, if any, now no longer waiting (its deadline is dropped). */
  #takeReader(): PendingRead | null {
    const r = this.#reader;
    this.#reader = null;
    if (r === null || r.done) return null;
    ioDeadlines.remove(r);
    return r;
  }

  /** Something happened (end, error, close): a waiting read settles. */
  #wake(): void {
    const r = this.#takeReader();
    if (r) this.#settle(r);
  }

  /** Settles a read from the state now: the next chunk, the error, or null at the end. */
  #settle(r: { resolve: (c: Uint8Array | null) => void; reject: (e: Error) => void }): boolean {
    const chunk = this.#chunks.shift();
    if (chunk) {
      if (this.#chunks.length <= 2 && !this.#closed) this.#socket.resume();
      r.resolve(chunk);
    } else if (this.#error) r.reject(this.#error);
    else if (this.#ended) r.resolve(null);
    else return false;
    return true;
  }

  /**
   * Reads the next chunk; null at end of stream. Rejects with a TimeoutError
   * when nothing arrives within timeoutMs. One read at a time.
   */
  read(timeoutMs: number): Promise<Uint8Array | null> {
    return new Promise((resolve, reject) => {
      if (this.#settle({ resolve, reject })) return;
      const r = new PendingRead(resolve, reject, timeoutMs);
      this.#reader = r;
      ioDeadlines.add(r, timeoutMs);
    });
  }

  /** Bytes handed to write() that the kernel has not taken yet (the peer is not reading). */
  get queued(): number {
    return this.#socket.writableLength ?? 0;
  }

  /**
   * Writes bytes or text and waits until the socket has taken them. With
   * `timeoutMs`, a peer that does not drain the data within that time (it
   * never reads) makes the write reject with a TimeoutError; with
   * `maxQueued`, so does output queued past that many bytes. Either way the
   * connection is destroyed: a client that never reads must not hold its
   * slot and our memory (RFC 5321 §4.5.3.2 bounds waits on both sides).
   */
  write(
    data: Uint8Array | string,
    opts: { timeoutMs?: number; maxQueued?: number } = {},
  ): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("Connection is closed"));
    // Output still queued from earlier writes: the peer is behind by that much.
    const queued = this.queued;
    if (opts.maxQueued !== undefined && queued > opts.maxQueued) {
      this.destroy();
      return Promise.reject(
        new OutputBoundError(`Output of ${queued} bytes queued past ${opts.maxQueued}`, queued),
      );
    }
    return new Promise((resolve, reject) => {
      let w: PendingWrite | null = null;
      if (opts.timeoutMs !== undefined) {
        w = new PendingWrite(this, reject, opts.timeoutMs);
        ioDeadlines.add(w, opts.timeoutMs);
      }
      this.#socket.write(data, (err) => {
        if (w) {
          if (w.done) return;
          ioDeadlines.remove(w);
        }
        err ? reject(err) : resolve();
      });
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

/** Raised when a peer does not read what we write: the deadline passed or too much is queued. */
export class OutputBoundError extends Error {
  /** Bytes queued for the peer when the connection was dropped. */
  readonly queued: number;
  /** True for the write deadline, false for the queue bound. */
  readonly timeout: boolean;
  constructor(message: string, queued: number, timeout = false) {
    super(message);
    this.name = "OutputBoundError";
    this.queued = queued;
    this.timeout = timeout;
  }
}
