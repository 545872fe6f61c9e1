/**
 * A tiny receiving SMTP server for the crash-torture and fault checks. It
 * records every message it accepts as a line (the `X-Torture-Token` header,
 * skiff's queue id from its Received header, the time in ms: enough to
 * trace a duplicate) appended to a file and fdatasynced BEFORE it says 250,
 * so the file is an exact list of deliveries: a token listed twice was
 * delivered twice. Postfix's smtp-sink only counts messages, and an
 * aiosmtpd script would add a Python dependency for thirty lines of Deno;
 * hence this one. It can also misbehave on purpose (faults): drop the
 * connection in the middle of DATA, or accept a connection and never answer.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What the sink does with one connection (numbered from 1). */
export type SinkBehaviour = "ok" | "drop-in-data" | "silent";

/** Options for a TokenSink. */
export interface TokenSinkOptions {
  /** File that receives one token per accepted message. */
  file: string;
  /** Port on 127.0.0.1 (0: any free one). */
  port?: number;
  /** How to treat the nth connection (default: always "ok"). */
  behaviour?: (connection: number) => SinkBehaviour;
}

/** The header whose value identifies a message. */
export const TOKEN_HEADER = "X-Torture-Token";
const TOKEN_RE = new RegExp(`^${TOKEN_HEADER}: *(\\S+)`, "im");
/** skiff's queue id in its Received header. */
const QUEUE_ID_RE = /\(skiff\) with \S+ id ([0-9A-Z]+)/;
/** Bounds a misbehaving or stuck client: no line or message is kept past this. */
const MAX_BUFFER = 4 * 1024 * 1024;

/** A running token sink. */
export class TokenSink {
  readonly port: number;
  readonly file: string;
  /** Connections accepted so far. */
  connections = 0;
  #listener: Deno.Listener;
  #out: Deno.FsFile;
  #chain: Promise<void> = Promise.resolve();
  #conns = new Set<Deno.Conn>();
  #behaviour: (n: number) => SinkBehaviour;
  #done: Promise<void>;

  private constructor(listener: Deno.Listener, out: Deno.FsFile, opts: TokenSinkOptions) {
    this.#listener = listener;
    this.#out = out;
    this.file = opts.file;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#behaviour = opts.behaviour ?? (() => "ok");
    this.#done = this.#accept();
  }

  /** Starts listening on 127.0.0.1. */
  static async start(opts: TokenSinkOptions): Promise<TokenSink> {
    const out = await Deno.open(opts.file, { append: true, create: true });
    const listener = Deno.listen({ hostname: "127.0.0.1", port: opts.port ?? 0 });
    return new TokenSink(listener, out, opts);
  }

  /** Every token recorded so far, in arrival order (one per delivery). */
  async tokens(): Promise<string[]> {
    await this.#chain;
    const text = await Deno.readTextFile(this.file);
    return text.split("\n").filter((l) => l !== "").map((l) => l.split(" ")[0]);
  }

  /** Stops listening and closes every connection. */
  async stop(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await this.#done;
    await this.#chain;
    await this.#nextSync?.catch(() => {});
    await this.#syncing?.catch(() => {});
    this.#out.close();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const n = ++this.connections;
        this.#conns.add(conn);
        this.#serve(conn, this.#behaviour(n))
          .catch(() => {})
          .finally(() => {
            this.#conns.delete(conn);
            try {
              conn.close();
            } catch { /* closed */ }
          });
      }
    } catch { /* listener closed */ }
  }

  /**
   * Appends a line at once and resolves after an fdatasync that began after
   * it (group commit, as a receiving MTA with parallel sessions does): one
   * sync at a time, every line written meanwhile joins the next. A sink
   * that wrote and synced each line in turn would keep every waiting
   * message between "end of data received" and "250 sent" for the whole
   * queue of syncs, and measure its own queue rather than skiff.
   */
  async #record(text: string): Promise<void> {
    const line = encoder.encode(text + "\n");
    const write = this.#chain.then(async () => {
      let off = 0;
      while (off < line.length) off += await this.#out.write(line.subarray(off));
    });
    this.#chain = write.catch(() => {});
    await write;
    await this.#sync();
  }

  #syncing: Promise<void> | null = null;
  #nextSync: Promise<void> | null = null;

  #sync(): Promise<void> {
    if (this.#syncing === null) {
      this.#syncing = this.#out.syncData().finally(() => this.#syncing = null);
      return this.#syncing;
    }
    this.#nextSync ??= this.#syncing.catch(() => {}).then(() => {
      this.#nextSync = null;
      return this.#sync();
    });
    return this.#nextSync;
  }

  async #serve(conn: Deno.Conn, behaviour: SinkBehaviour): Promise<void> {
    if (behaviour === "silent") {
      // Read and ignore everything until the peer gives up.
      const buf = new Uint8Array(4096);
      while ((await conn.read(buf)) !== null) { /* never answer */ }
      return;
    }
    const say = async (text: string) => {
      const b = encoder.encode(text);
      let off = 0;
      while (off < b.length) off += await conn.write(b.subarray(off));
    };
    await say("220 token-sink ESMTP\r\n");
    let buf = "";
    let inData = false;
    const chunk = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(chunk);
      if (n === null) return;
      buf += decoder.decode(chunk.subarray(0, n), { stream: true });
      if (buf.length > MAX_BUFFER) return;
      while (true) {
        if (inData) {
          const end = buf.startsWith(".\r\n") ? 0 : buf.indexOf("\r\n.\r\n");
          if (end < 0) {
            // RFC 5321 §4.1.1.4 content is arriving: the fault drops it here.
            if (behaviour === "drop-in-data" && buf.length > 0) return;
            break;
          }
          if (behaviour === "drop-in-data") return;
          const body = buf.slice(0, end);
          buf = buf.slice(end === 0 ? 3 : end + 5);
          inData = false;
          const id = QUEUE_ID_RE.exec(body)?.[1] ?? "-";
          await this.#record(`${TOKEN_RE.exec(body)?.[1] ?? "-"} ${id} ${Date.now()}`);
          await say("250 2.0.0 Ok: recorded\r\n");
          continue;
        }
        const eol = buf.indexOf("\r\n");
        if (eol < 0) break;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO") await say("250-token-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        else if (verb === "HELO") await say("250 token-sink\r\n");
        else if (verb === "DATA") {
          inData = true;
          await say("354 End data with <CR><LF>.<CR><LF>\r\n");
        } else if (verb === "QUIT") {
          await say("221 2.0.0 Bye\r\n");
          return;
        } else if (["MAIL", "RCPT", "RSET", "NOOP"].includes(verb)) await say("250 2.0.0 Ok\r\n");
        else await say("502 5.5.2 Unknown command\r\n");
      }
    }
  }
}
