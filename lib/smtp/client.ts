/**
 * The outgoing SMTP client (RFC 5321): one session per call that hands one
 * message to one server and says, per recipient, whether it was delivered,
 * deferred or failed. Trouble on the network or in the protocol never
 * throws: it becomes a temporary outcome, so the queue manager retries and a
 * message is never lost (delivered at least once). The session is a small
 * state machine over a strict reply reader (client_reply.ts); later
 * iterations add STARTTLS, AUTH, PIPELINING and a connection cache.
 */
import { isIP } from "node:net";
import { Conn, TimeoutError } from "../net/conn.ts";
import { type ClientReply, printable, ReplyParser, ReplyProtocolError } from "./client_reply.ts";

/** Where to deliver, and the session's deadlines. */
export interface SmtpTarget {
  host: string;
  port: number;
  /** Our name for EHLO/HELO. */
  helo: string;
  connectTimeoutMs: number;
  /** Deadline for each reply, and for each write to be taken by the peer. */
  replyTimeoutMs: number;
}

/** One message to hand over. */
export interface OutgoingMessage {
  /** Envelope sender; "" is the null sender (MAIL FROM:<>). */
  from: string;
  recipients: string[];
  /** The message bytes as stored: CRLF line endings, not dot-stuffed. */
  content: () => Promise<ReadableStream<Uint8Array>>;
  /** Size in bytes of the content. */
  size: number;
}

/** What became of one recipient. */
export type Outcome = "delivered" | "deferred" | "failed";

/** The result for one recipient. */
export interface RecipientResult {
  address: string;
  outcome: Outcome;
  /** The server's reply code, or 0 when the trouble was local or the server never answered. */
  code: number;
  /** RFC 3463 status: the server's enhanced code, else derived from the reply or trouble. */
  dsn: string;
  /** The server's reply text, or a description of the local problem. */
  text: string;
}

/** The result of one session. */
export interface SendResult {
  /** "host[ip]:port" of the server spoken to ("host[unknown]:port" when never connected). */
  relay: string;
  /** One entry per recipient, in the order of msg.recipients. */
  recipients: RecipientResult[];
}

/** Longest reply or problem text kept in a result. */
const MAX_TEXT = 500;

/** Bytes collected before a write during DATA; bounds memory per session. */
const WRITE_BATCH = 64 * 1024;

/**
 * Delivers msg to target in one SMTP session. Never throws for network or
 * protocol trouble: every recipient gets an outcome.
 */
export async function sendMessage(target: SmtpTarget, msg: OutgoingMessage): Promise<SendResult> {
  const session = new ClientSession(target, msg);
  await session.run();
  return { relay: session.relay, recipients: session.results() };
}

/** Where the session is; named in problem texts like Postfix's "while ...". */
type State =
  | "connect"
  | "greeting"
  | "ehlo"
  | "helo"
  | "mail"
  | "rcpt"
  | "data"
  | "content"
  | "dot"
  | "quit"
  | "done";

const DOING: Record<State, string> = {
  connect: "connecting",
  greeting: "receiving the initial server greeting",
  ehlo: "performing the EHLO handshake",
  helo: "performing the HELO handshake",
  mail: "sending MAIL FROM",
  rcpt: "sending RCPT TO",
  data: "sending DATA",
  content: "sending message content",
  dot: "sending end of data -- message may be delivered more than once",
  quit: "sending QUIT",
  done: "closing",
};

/** Trouble that ends the session with every unsettled recipient given one outcome. */
class SessionEnd extends Error {
  readonly outcome: Outcome;
  readonly code: number;
  readonly dsn: string;
  /** Whether the connection can still carry a QUIT. */
  readonly usable: boolean;
  constructor(
    o: { outcome: Outcome; code: number; dsn: string; text: string; usable: boolean },
  ) {
    super(o.text);
    this.name = "SessionEnd";
    this.outcome = o.outcome;
    this.code = o.code;
    this.dsn = o.dsn;
    this.usable = o.usable;
  }
}

class ClientSession {
  #target: SmtpTarget;
  #msg: OutgoingMessage;
  #conn: Conn | null = null;
  #parser = new ReplyParser();
  #state: State = "connect";
  #results: (RecipientResult | null)[];
  #accepted = 0;
  #extensions = new Map<string, string>();
  #relay: string;

  constructor(target: SmtpTarget, msg: OutgoingMessage) {
    this.#target = target;
    this.#msg = msg;
    this.#results = msg.recipients.map(() => null);
    const ip = isIP(target.host) ? target.host : "unknown";
    this.#relay = `${target.host}[${ip}]:${target.port}`;
  }

  /** "host[ip]:port" of the server. */
  get relay(): string {
    return this.#relay;
  }

  /** EHLO keywords (upper case) and their parameters; empty after HELO. */
  get extensions(): ReadonlyMap<string, string> {
    return this.#extensions;
  }

  results(): RecipientResult[] {
    return this.#results.map((r, i) =>
      r ?? {
        address: this.#msg.recipients[i],
        outcome: "deferred",
        code: 0,
        dsn: "4.3.0",
        text: "Delivery did not complete",
      }
    );
  }

  async run(): Promise<void> {
    try {
      this.#checkEnvelope();
      if (this.#results.every((r) => r !== null)) return; // nobody left to send to
      await this.#connect();
      await this.#handshake();
      await this.#transaction();
      await this.#quit();
    } catch (err) {
      const end = err instanceof SessionEnd ? err : this.#trouble(err);
      this.#settle(end);
      if (end.usable) await this.#quit().catch(() => {});
    } finally {
      this.#state = "done";
      this.#conn?.destroy();
    }
  }

  /** Refuses addresses and names that would break or inject command lines (RFC 5321 §4.1.2). */
  #checkEnvelope(): void {
    // deno-lint-ignore no-control-regex
    const bad = /[\x00-\x1f\x7f<>]/;
    if (bad.test(this.#target.helo) || /\s/.test(this.#target.helo) || !this.#target.helo) {
      throw this.#local(
        "deferred",
        "4.3.5",
        `Invalid HELO name ${JSON.stringify(this.#target.helo)}`,
      );
    }
    if (bad.test(this.#msg.from)) {
      throw this.#local(
        "failed",
        "5.1.7",
        `Invalid sender address ${JSON.stringify(this.#msg.from)}`,
      );
    }
    this.#msg.recipients.forEach((address, i) => {
      if (bad.test(address) || address === "") {
        this.#results[i] = {
          address,
          outcome: "failed",
          code: 0,
          dsn: "5.1.3",
          text: `Invalid recipient address ${JSON.stringify(address)}`,
        };
      }
    });
  }

  async #connect(): Promise<void> {
    const { host, port, connectTimeoutMs } = this.#target;
    try {
      this.#conn = await Conn.connect(host, port, connectTimeoutMs);
    } catch (err) {
      const e = err as Error & { code?: string };
      const text = e.code === "ECONNREFUSED"
        ? `Connection refused by ${host}:${port}`
        : e.code === undefined
        ? e.message // Conn's own timeout message
        : `Cannot connect to ${host}:${port}: ${e.message}`;
      // RFC 3463 §3.5: X.4.1 "No answer from host".
      throw this.#local("deferred", "4.4.1", text, false);
    }
    this.#relay = `${host}[${this.#conn.remoteAddress}]:${port}`;
  }

  async #handshake(): Promise<void> {
    this.#state = "greeting";
    // RFC 5321 §4.3.2: the greeting is 220 or 554; a 4xx says "try later".
    const greeting = await this.#read();
    this.#expect(greeting, 2);

    this.#state = "ehlo";
    const ehlo = await this.#command(`EHLO ${this.#target.helo}`);
    // RFC 5321 §3.2: a server that does not know EHLO answers 5xx (502/500);
    // then the client falls back to HELO. A 4xx is the server's trouble.
    if (Math.floor(ehlo.code / 100) === 5) {
      this.#state = "helo";
      this.#expect(await this.#command(`HELO ${this.#target.helo}`), 2);
      return;
    }
    this.#expect(ehlo, 2);
    for (const line of ehlo.lines.slice(1)) {
      const [keyword, ...params] = line.trim().split(/\s+/);
      if (keyword) this.#extensions.set(keyword.toUpperCase(), params.join(" "));
    }
  }

  async #transaction(): Promise<void> {
    this.#state = "mail";
    this.#expect(await this.#command(`MAIL FROM:<${this.#msg.from}>`), 2);

    this.#state = "rcpt";
    for (const [i, address] of this.#msg.recipients.entries()) {
      if (this.#results[i]) continue; // refused locally
      const reply = await this.#command(`RCPT TO:<${address}>`);
      const cls = Math.floor(reply.code / 100);
      if (cls === 2) this.#accepted++;
      else if (cls === 4 || cls === 5) this.#results[i] = this.#fromReply(address, reply);
      else throw this.#protocol(`Unexpected reply ${reply.code}`);
    }
    // RFC 5321 §3.3: without an accepted recipient DATA would only get 554;
    // QUIT (which resets the transaction) follows in run().
    if (this.#accepted === 0) return;

    // Open the content before DATA: a spool file that cannot be read then
    // ends the session with a clean QUIT instead of a half-sent message.
    let content: ReadableStream<Uint8Array>;
    try {
      content = await this.#msg.content();
    } catch (err) {
      throw this.#local("deferred", "4.3.0", `Cannot read message content: ${errText(err)}`, true);
    }
    try {
      this.#state = "data";
      // RFC 5321 §4.1.1.4: only 354 invites the content.
      const data = await this.#command("DATA");
      if (data.code !== 354) this.#expect(data, 0);
    } catch (err) {
      await content.cancel().catch(() => {});
      throw err;
    }

    this.#state = "content";
    await this.#sendContent(content);

    this.#state = "dot";
    const final = await this.#read();
    this.#expect(final, 2);
    this.#settle(this.#end(final, true));
  }

  /** Streams the content dot-stuffed, then the terminating "." line (RFC 5321 §4.5.2). */
  async #sendContent(content: ReadableStream<Uint8Array>): Promise<void> {
    const stuffer = new DotStuffer();
    const reader = content.getReader();
    let done = false;
    try {
      let batch: Uint8Array[] = [];
      let batched = 0;
      while (true) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (err) {
          // The server must not see a "." for a message we could not read:
          // drop the connection so it discards the transaction (§4.1.1.4).
          throw this.#local(
            "deferred",
            "4.3.0",
            `Cannot read message content: ${errText(err)}`,
            false,
          );
        }
        const out = next.done ? stuffer.end() : stuffer.push(next.value);
        batch.push(out);
        batched += out.length;
        if (batched >= WRITE_BATCH || next.done) {
          await this.#write(batch.length === 1 ? batch[0] : concatBytes(batch, batched));
          batch = [];
          batched = 0;
        }
        if (next.done) break;
      }
      done = true;
    } finally {
      // Stopped early: cancel so the source (e.g. a spool file) is closed.
      if (!done) await reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }

  async #quit(): Promise<void> {
    if (!this.#conn || this.#state === "done") return;
    this.#state = "quit";
    // RFC 5321 §4.1.1.10: send QUIT and wait for the reply before closing;
    // the reply itself changes nothing.
    await this.#command("QUIT").catch(() => {});
  }

  /** Sends one command line and reads its reply. */
  async #command(line: string): Promise<ClientReply> {
    await this.#write(`${line}\r\n`);
    return await this.#read();
  }

  async #write(data: Uint8Array | string): Promise<void> {
    const conn = this.#conn!;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TimeoutError("Write not taken")),
        this.#target.replyTimeoutMs,
      );
    });
    const written = conn.write(data);
    written.catch(() => {}); // may settle after the deadline won
    try {
      await Promise.race([written, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads one complete reply; throws on timeout, close or malformed input. */
  async #read(): Promise<ClientReply> {
    const conn = this.#conn!;
    while (true) {
      const reply = this.#parser.shift();
      if (reply) {
        // RFC 5321 §4.2: every command gets exactly one reply, so without
        // PIPELINING anything beyond it means the server is out of step.
        if (this.#parser.buffered > 0 || this.#parser.pending > 0) {
          throw this.#protocol("Server sent more than one reply");
        }
        return reply;
      }
      const chunk = await conn.read(this.#target.replyTimeoutMs);
      if (chunk === null) {
        throw this.#local(
          "deferred",
          "4.4.2",
          `Lost connection with ${this.relay} while ${DOING[this.#state]}`,
          false,
        );
      }
      this.#parser.push(chunk);
    }
  }

  /** Turns a reply of the wrong class into the session's end (cls 0: none is right). */
  #expect(reply: ClientReply, cls: number): void {
    const got = Math.floor(reply.code / 100);
    if (got === cls) return;
    if (got === 4 || got === 5) throw this.#end(reply, true);
    throw this.#protocol(`Unexpected reply ${reply.code} ${replyText(reply)}`);
  }

  /** A session end from a server reply: 2xx delivered, 4xx deferred, 5xx failed. */
  #end(reply: ClientReply, usable: boolean): SessionEnd {
    const cls = Math.floor(reply.code / 100);
    const outcome: Outcome = cls === 2 ? "delivered" : cls === 5 ? "failed" : "deferred";
    return new SessionEnd({
      outcome,
      code: reply.code,
      dsn: reply.enhanced ?? `${cls === 2 || cls === 5 ? cls : 4}.0.0`,
      text: replyText(reply),
      usable,
    });
  }

  #fromReply(address: string, reply: ClientReply): RecipientResult {
    const end = this.#end(reply, true);
    return { address, outcome: end.outcome, code: end.code, dsn: end.dsn, text: end.message };
  }

  #local(outcome: Outcome, dsn: string, text: string, usable = false): SessionEnd {
    return new SessionEnd({ outcome, code: 0, dsn, text: printable(text, MAX_TEXT), usable });
  }

  /** RFC 3463 §3.6: X.5.0 "Other or undefined protocol status". */
  #protocol(detail: string): SessionEnd {
    const text = `Protocol error from ${this.relay} while ${DOING[this.#state]}: ${detail}`;
    return this.#local("deferred", "4.5.0", text, false);
  }

  /** Maps an unexpected exception (timeout, socket error, parser error) to a session end. */
  #trouble(err: unknown): SessionEnd {
    if (err instanceof ReplyProtocolError) return this.#protocol(err.message);
    const doing = DOING[this.#state];
    if (err instanceof TimeoutError) {
      // RFC 3463 §3.5: X.4.2 "Bad connection" covers time-outs mid-session.
      return this.#local(
        "deferred",
        "4.4.2",
        `Conversation with ${this.relay} timed out while ${doing}`,
      );
    }
    return this.#local(
      "deferred",
      "4.4.2",
      `Lost connection with ${this.relay} while ${doing}: ${errText(err)}`,
    );
  }

  /** Gives every recipient without a result the session end's outcome. */
  #settle(end: SessionEnd): void {
    this.#results = this.#results.map((r, i) =>
      r ?? {
        address: this.#msg.recipients[i],
        outcome: end.outcome,
        code: end.code,
        dsn: end.dsn,
        text: end.message,
      }
    );
  }
}

/**
 * Dot-stuffing with line-end repair, chunk by chunk: a "." at the start of a
 * line gets another "." (RFC 5321 §4.5.2), and a bare LF or bare CR becomes
 * CRLF (§2.3.8), so no "." line can hide behind a lone LF or CR and end the
 * message early at a server that reads those as line ends (SMTP smuggling).
 */
class DotStuffer {
  #lineStart = true;
  #pendingCR = false;

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
      if (this.#lineStart && b === 0x2e) out[n++] = 0x2e;
      out[n++] = b;
      this.#lineStart = false;
    }
    return out.subarray(0, n);
  }

  /** The rest: a held CR, a CRLF if the content did not end with one, and ".\r\n". */
  end(): Uint8Array {
    const tail = this.#pendingCR || !this.#lineStart ? "\r\n.\r\n" : ".\r\n";
    this.#pendingCR = false;
    this.#lineStart = true;
    return new TextEncoder().encode(tail);
  }
}

function concatBytes(parts: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function replyText(reply: ClientReply): string {
  return printable(reply.lines.join(" ").trim(), MAX_TEXT);
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
