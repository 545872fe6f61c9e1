/**
 * The outgoing SMTP/LMTP session as a state machine over a Wire: greeting,
 * EHLO (HELO fallback) or LHLO, STARTTLS, AUTH, then any number of
 * transactions (MAIL, RCPT, DATA or BDAT) separated by RSET, then QUIT. A
 * session that ends a transaction cleanly can be parked in the connection
 * cache and reused after an RSET probe. Every reply comes through the
 * strict, bounded parser in client_reply.ts; network or protocol trouble
 * becomes a SessionEnd (temporary unless the server said 5xx), never a
 * crash, so the queue retries and no message is lost.
 */
import { type ClientReply, printable, ReplyParser, ReplyProtocolError } from "./client_reply.ts";
import { type ClientTlsInfo, Conn } from "../net/conn.ts";
import { type TlsInfo, type Wire, WireTimeout } from "./client_conn.ts";
import { concatBytes } from "../sys/bytes.ts";
import { metrics } from "../metrics/metrics.ts";
import { DotStuffer, needsUtf8 } from "./client_data.ts";
import { mailCommand, rcptCommand, safeCommandLine, unsendableAddress } from "./client_params.ts";
import type { Outcome, OutgoingMessage, RecipientResult } from "./client_message.ts";

/** How a session is opened. */
export interface SessionOptions {
  /** Our name for EHLO/HELO/LHLO. */
  helo: string;
  /** RFC 2033: LHLO, and one reply per recipient after the data. */
  lmtp?: boolean;
  /** STARTTLS policy (see lib/config/route_types.ts TlsMode). */
  tls?: "none" | "may" | "require" | "verify";
  /** Name the certificate must match ("verify"), and SNI. */
  servername?: string;
  /** Extra CA certificates (PEM) trusted by "verify" (tests). */
  ca?: string[];
  /** AUTH PLAIN/LOGIN identity (RFC 4954); "" = none. */
  authUser?: string;
  authPassword?: string;
  /** Checks the handshake beyond node:tls (DANE, lib/tlspolicy): a refusal text or null. */
  tlsCheck?: (info: ClientTlsInfo) => string | null;
  /** Deadline for each reply and each write. */
  replyTimeoutMs: number;
  /** "host[ip]:port" for texts and logs. */
  relay: string;
}

/** Where the session is; named in problem texts like Postfix's "while ...". */
type State =
  | "greeting"
  | "ehlo"
  | "helo"
  | "starttls"
  | "auth"
  | "mail"
  | "rcpt"
  | "data"
  | "content"
  | "dot"
  | "rset"
  | "quit"
  | "idle";

const DOING: Record<State, string> = {
  greeting: "receiving the initial server greeting",
  ehlo: "performing the EHLO handshake",
  helo: "performing the HELO handshake",
  starttls: "performing the STARTTLS handshake",
  auth: "authenticating",
  mail: "sending MAIL FROM",
  rcpt: "sending RCPT TO",
  data: "sending DATA",
  content: "sending message content",
  dot: "sending end of data -- message may be delivered more than once",
  rset: "sending RSET",
  quit: "sending QUIT",
  idle: "idle",
};

/** Longest reply or problem text kept in a result. */
const MAX_TEXT = 500;
/** Bytes collected before a write during DATA; bounds memory per session. */
const WRITE_BATCH = 64 * 1024;
/** BDAT chunk size (RFC 3030): one reply per chunk. */
const BDAT_CHUNK = 256 * 1024;

/** Trouble that ends the session (or its transaction) with one outcome for the unsettled. */
export class SessionEnd extends Error {
  readonly outcome: Outcome;
  readonly code: number;
  readonly dsn: string;
  /** Whether the connection can still carry a QUIT. */
  readonly usable: boolean;
  /** True when no recipient got an answer yet: another server may be tried. */
  readonly early: boolean;
  constructor(
    o: {
      outcome: Outcome;
      code: number;
      dsn: string;
      text: string;
      usable: boolean;
      early?: boolean;
    },
  ) {
    super(o.text);
    this.name = "SessionEnd";
    this.outcome = o.outcome;
    this.code = o.code;
    this.dsn = o.dsn;
    this.usable = o.usable;
    this.early = o.early ?? false;
  }
}

/** The result of one transaction. */
export interface TransactionResult {
  recipients: RecipientResult[];
  /** The session may carry another transaction (it can be cached). */
  reusable: boolean;
  /** Every recipient is unsettled by trouble before any RCPT reply: try another server. */
  tryNext: boolean;
}

/** One open SMTP/LMTP session. */
export class SmtpSession {
  #wire: Wire;
  #opts: SessionOptions;
  #parser = new ReplyParser();
  #state: State = "greeting";
  #ext = new Map<string, string>();
  #tls: TlsInfo | null = null;
  #broken = false;
  #closed = metrics.connectionOut();
  /** Transactions completed on this session. */
  transactions = 0;

  private constructor(wire: Wire, opts: SessionOptions) {
    this.#wire = wire;
    this.#opts = opts;
  }

  /** EHLO keywords (upper case) and their parameters. */
  get extensions(): ReadonlyMap<string, string> {
    return this.#ext;
  }

  /** TLS details once STARTTLS succeeded. */
  get tls(): TlsInfo | null {
    return this.#tls;
  }

  /** "host[ip]:port". */
  get relay(): string {
    return this.#opts.relay;
  }

  /** False once the connection failed or the server fell out of step. */
  get healthy(): boolean {
    return !this.#broken && !this.#wire.closed;
  }

  /**
   * Greeting, hello, STARTTLS and AUTH. Throws SessionEnd (with `early`
   * set: no recipient was tried, another server may be).
   */
  static async open(wire: Wire, opts: SessionOptions): Promise<SmtpSession> {
    const s = new SmtpSession(wire, opts);
    try {
      await s.#handshake();
      return s;
    } catch (err) {
      const end = s.#toEnd(err);
      if (end.usable) await s.quit();
      else s.destroy();
      throw new SessionEnd({ ...endFields(end), early: true });
    }
  }

  async #handshake(): Promise<void> {
    this.#state = "greeting";
    // RFC 5321 §4.3.2: the greeting is 220 or 554; a 4xx says "try later".
    this.#expect(await this.#read(), 2);
    await this.#hello();
    const mode = this.#opts.tls ?? "none";
    if (mode !== "none") await this.#startTls(mode);
    if (this.#opts.authUser) await this.#auth();
  }

  async #hello(): Promise<void> {
    this.#ext.clear();
    const { helo, lmtp } = this.#opts;
    this.#state = "ehlo";
    const reply = await this.#command(`${lmtp ? "LHLO" : "EHLO"} ${helo}`);
    // RFC 5321 §3.2: a server that does not know EHLO answers 5xx (502/500);
    // the client falls back to HELO. A 4xx is the server's trouble. LMTP has
    // no fallback (RFC 2033 §4.1).
    if (!lmtp && Math.floor(reply.code / 100) === 5) {
      this.#state = "helo";
      this.#expect(await this.#command(`HELO ${helo}`), 2);
      return;
    }
    this.#expect(reply, 2);
    for (const line of reply.lines.slice(1)) {
      const [keyword, ...params] = line.trim().split(/\s+/);
      if (keyword && /^[A-Za-z0-9][A-Za-z0-9-]*$/.test(keyword)) {
        this.#ext.set(keyword.toUpperCase(), params.join(" "));
      }
    }
  }

  async #startTls(mode: "may" | "require" | "verify"): Promise<void> {
    if (!this.#ext.has("STARTTLS")) {
      if (mode === "may") return;
      // RFC 3207 §4 / RFC 3463: X.7.10 would be "encryption needed"; Postfix uses 4.7.4.
      throw this.#local("deferred", "4.7.4", "TLS is required, but was not offered by the host");
    }
    this.#state = "starttls";
    const reply = await this.#command("STARTTLS");
    if (reply.code !== 220) {
      if (mode === "may" && Math.floor(reply.code / 100) !== 2) return; // carry on in clear
      throw this.#local("deferred", "4.7.4", `STARTTLS refused: ${replyText(reply)}`, true);
    }
    const sock = this.#wire;
    if (!(sock instanceof Conn)) throw this.#protocol("This transport cannot do TLS");
    // RFC 3207 §4.2: nothing may follow the 220 before the handshake (a
    // server that pipelines plaintext after it is injecting: CVE-2011-0411).
    if (this.#parser.buffered > 0 || this.#parser.pending > 0 || sock.unread > 0) {
      throw this.#protocol("Server sent data after its STARTTLS reply");
    }
    let upgraded: Awaited<ReturnType<Conn["startTlsClient"]>>;
    try {
      upgraded = await sock.startTlsClient({
        servername: this.#opts.servername ?? "",
        verify: mode === "verify",
        timeoutMs: this.#opts.replyTimeoutMs,
        ca: this.#opts.ca,
      });
    } catch (err) {
      // RFC 3463 §3.8: X.7.5 "Cryptographic failure" (as Postfix: "Cannot start
      // TLS: handshake failure", or the certificate that failed verification).
      // The connection is dead: nothing, certainly no mail, goes out in clear.
      this.#broken = true;
      const why = mode === "verify" ? "Server certificate not verified" : "TLS handshake failed";
      throw this.#local("deferred", "4.7.5", `${why} (${this.relay}): ${errText(err)}`);
    }
    const { conn, info } = upgraded;
    if (mode === "verify" && !info.authorized) {
      conn.destroy();
      this.#wire = conn;
      throw this.#local(
        "deferred",
        "4.7.5",
        `Server certificate not verified (${this.relay}): ${info.authorizationError ?? "unknown"}`,
      );
    }
    const refused = this.#opts.tlsCheck?.(info) ?? null;
    if (refused) {
      conn.destroy();
      this.#wire = conn;
      throw this.#local("deferred", "4.7.5", `${refused} (${this.relay})`);
    }
    this.#wire = conn;
    this.#tls = info;
    this.#parser = new ReplyParser();
    // RFC 3207 §4.2: forget what the server said before TLS; say hello again.
    await this.#hello();
  }

  async #auth(): Promise<void> {
    this.#state = "auth";
    const user = this.#opts.authUser!, pass = this.#opts.authPassword ?? "";
    if (!this.#tls && !/^(127\.|::1$|\[::1\])/.test(this.#wire.remoteAddress)) {
      // Never send a password in clear over a network.
      throw this.#local("deferred", "4.7.0", "AUTH needs TLS, and the session is not encrypted");
    }
    const mechs = (this.#ext.get("AUTH") ?? "").toUpperCase().split(/\s+/);
    const b64 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));
    let reply: ClientReply;
    if (mechs.includes("PLAIN")) {
      // RFC 4616: authzid NUL authcid NUL passwd.
      reply = await this.#command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`);
    } else if (mechs.includes("LOGIN")) {
      reply = await this.#command("AUTH LOGIN");
      if (reply.code === 334) reply = await this.#command(b64(user));
      if (reply.code === 334) reply = await this.#command(b64(pass));
    } else {
      throw this.#local("deferred", "4.7.0", "Server offers no AUTH mechanism skiff can use");
    }
    if (reply.code !== 235) {
      // RFC 4954 §6: 535 5.7.8 says these credentials are wrong. They are the
      // operator's to fix, not the sender's fault: the mail is deferred, never
      // bounced (Postfix's smtp_sasl_auth_soft_bounce), keeping the server's
      // detail (5.7.8 → 4.7.8) so the log says what to fix.
      const dsn = reply.enhanced ? `4${reply.enhanced.slice(1)}` : "4.7.0";
      const text = `SASL authentication failed; server ${this.relay} said: ${reply.code} ${
        reply.enhanced ? `${reply.enhanced} ` : ""
      }${replyText(reply)}`;
      throw this.#local("deferred", dsn, text, true);
    }
  }

  /** RSET probe before reuse (RFC 5321 §4.1.1.5): true when the session answers 250. */
  async probe(): Promise<boolean> {
    if (!this.healthy) return false;
    try {
      this.#state = "rset";
      const r = await this.#command("RSET");
      this.#state = "idle";
      return r.code === 250;
    } catch {
      this.#broken = true;
      return false;
    }
  }

  /** QUIT and close (RFC 5321 §4.1.1.10); never throws. */
  async quit(): Promise<void> {
    if (this.healthy) {
      this.#state = "quit";
      await this.#command("QUIT").catch(() => {});
    }
    this.destroy();
  }

  /** Closes at once. */
  destroy(): void {
    this.#broken = true;
    this.#wire.destroy();
    this.#closed();
  }

  /** One transaction: every recipient of msg gets an outcome. Never throws. */
  async send(msg: OutgoingMessage): Promise<TransactionResult> {
    const results: (RecipientResult | null)[] = msg.recipients.map(() => null);
    let answered = false;
    try {
      answered = await this.#transaction(msg, results);
      this.transactions++;
      this.#state = "idle";
      return { recipients: fill(results, msg, null), reusable: this.healthy, tryNext: false };
    } catch (err) {
      const end = this.#toEnd(err);
      if (!end.usable) this.destroy();
      else {
        // The transaction is over; the session may still be good after RSET.
        this.#state = "idle";
      }
      const early = !answered && end.outcome === "deferred";
      return {
        recipients: fill(results, msg, end),
        reusable: end.usable && this.healthy,
        tryNext: early && results.every((r) => r === null || r.code === 0),
      };
    }
  }

  /** Returns whether any recipient got a server answer. */
  async #transaction(msg: OutgoingMessage, results: (RecipientResult | null)[]): Promise<boolean> {
    checkAddresses(msg, results);
    if (results.every((r) => r !== null)) return false;
    const ext = this.#ext;
    // RFC 6531 §3.4: a message that needs SMTPUTF8 cannot go to a server without it.
    const utf8 = msg.smtputf8 || needsUtf8(msg.from) || msg.recipients.some(needsUtf8);
    if (utf8 && !ext.has("SMTPUTF8")) {
      throw this.#local(
        "failed",
        "5.6.7",
        `${this.relay} does not support SMTPUTF8, which this message needs`,
        true,
      );
    }
    // RFC 1870 §6: a declared limit the message exceeds is permanent.
    const limit = Number(ext.get("SIZE") ?? "0");
    if (ext.has("SIZE") && limit > 0 && msg.size > limit) {
      throw this.#local(
        "failed",
        "5.3.4",
        `Message size ${msg.size} exceeds the limit of ${limit} of ${this.relay}`,
        true,
      );
    }
    // Lines are built and checked before anything is sent (client_params.ts).
    const built = mailCommand(msg, { ext, utf8 });
    if ("error" in built) throw this.#local("failed", "5.5.4", built.error, true);
    const dsn = ext.has("DSN");
    if (msg.requireTls) {
      // RFC 8689 §5: only over TLS, and only to a server that takes REQUIRETLS on.
      const why = !this.#tls ? "the session is not encrypted" : "it does not offer REQUIRETLS";
      if (!this.#tls || !ext.has("REQUIRETLS")) {
        throw this.#local("failed", "5.7.30", `REQUIRETLS: ${this.relay}: ${why}`, true);
      }
    }
    const mailLine = msg.requireTls ? `${built.line} REQUIRETLS` : built.line;
    const rcptLines: [number, string][] = [];
    msg.recipients.forEach((address, i) => {
      if (results[i]) return;
      const rcpt = rcptCommand(address, msg.rcptParams?.[i], { dsn });
      if ("line" in rcpt) rcptLines.push([i, rcpt.line]);
      else {
        results[i] = {
          address,
          outcome: "failed",
          code: 0,
          dsn: "5.5.4",
          text: printable(rcpt.error, MAX_TEXT),
        };
      }
    });
    if (rcptLines.length === 0) return false;
    const pipelining = ext.has("PIPELINING");
    this.#state = "mail";
    let answered = false;
    if (pipelining) {
      // RFC 2920 §3.1: MAIL and every RCPT in one write, replies read in order.
      const lines = [mailLine, ...rcptLines.map(([, l]) => l)];
      lines.forEach((l) => this.#checkLine(l));
      await this.#write(lines.join("\r\n") + "\r\n");
      const mail = await this.#read(true);
      this.#state = "rcpt";
      if (Math.floor(mail.code / 100) !== 2) {
        // Stay in step: every RCPT of the group is answered (with 503s).
        for (const _ of rcptLines) await this.#read(true);
        this.#expect(mail, 2);
      }
      for (const [i] of rcptLines) {
        const reply = await this.#read(true);
        answered = true;
        this.#rcptResult(msg, results, i, reply);
      }
    } else {
      this.#expect(await this.#command(mailLine), 2);
      this.#state = "rcpt";
      for (const [i, line] of rcptLines) {
        const reply = await this.#command(line);
        answered = true;
        this.#rcptResult(msg, results, i, reply);
      }
    }
    const accepted = rcptLines.map(([i]) => i).filter((i) => results[i] === null);
    // RFC 5321 §3.3: without an accepted recipient DATA would only get 554.
    // The transaction is reset by the RSET probe before any reuse, or by QUIT.
    if (accepted.length === 0) return answered;
    await this.#content(msg, accepted, results);
    return true;
  }

  #rcptResult(
    msg: OutgoingMessage,
    results: (RecipientResult | null)[],
    i: number,
    reply: ClientReply,
  ): void {
    const cls = Math.floor(reply.code / 100);
    if (cls === 2) return;
    if (cls === 4 || cls === 5) results[i] = this.#fromReply(msg.recipients[i], reply);
    else throw this.#protocol(`Unexpected reply ${reply.code} to RCPT`);
  }

  /** DATA or BDAT, then the final reply (one per accepted recipient for LMTP). */
  async #content(
    msg: OutgoingMessage,
    accepted: number[],
    results: (RecipientResult | null)[],
  ): Promise<void> {
    // Open the content before DATA: a spool file that cannot be read then
    // ends the transaction with a clean RSET instead of a half-sent message.
    let content: ReadableStream<Uint8Array>;
    try {
      content = await msg.content();
    } catch (err) {
      throw this.#local("deferred", "4.3.0", `Cannot read message content: ${errText(err)}`, true);
    }
    const bdat = this.#ext.has("CHUNKING");
    try {
      if (!bdat) {
        this.#state = "data";
        // RFC 5321 §4.1.1.4: only 354 invites the content.
        const data = await this.#command("DATA");
        if (data.code !== 354) this.#expect(data, 0);
      }
    } catch (err) {
      await content.cancel().catch(() => {});
      throw err;
    }
    this.#state = "content";
    if (bdat) await this.#sendBdat(content);
    else await this.#sendData(content);
    this.#state = "dot";
    if (!this.#opts.lmtp) {
      const final = await this.#read();
      this.#expect(final, 2);
      for (const i of accepted) results[i] = this.#fromReply(msg.recipients[i], final);
      msg.onResults?.(
        accepted.map((i) => ({ index: i, result: results[i]! })),
        this.relay,
        this.#ext.has("DSN"),
      );
      return;
    }
    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order; each
    // result is settled as it arrives.
    for (const i of accepted) {
      const reply = await this.#read(true);
      if (![2, 4, 5].includes(Math.floor(reply.code / 100))) {
        throw this.#protocol(`Unexpected reply ${reply.code} after data`);
      }
      results[i] = this.#fromReply(msg.recipients[i], reply);
      msg.onResults?.([{ index: i, result: results[i]! }], this.relay, this.#ext.has("DSN"));
    }
  }

  /** Streams the content dot-stuffed, then the terminating "." line (RFC 5321 §4.5.2). */
  async #sendData(content: ReadableStream<Uint8Array>): Promise<void> {
    const stuffer = new DotStuffer({ stuff: true });
    let batch: Uint8Array[] = [];
    let batched = 0;
    await this.#eachChunk(content, async (chunk, last) => {
      const out = chunk ? stuffer.push(chunk) : stuffer.end();
      batch.push(out);
      batched += out.length;
      if (batched >= WRITE_BATCH || last) {
        await this.#write(batch.length === 1 ? batch[0] : concatBytes(batch, batched));
        batch = [];
        batched = 0;
      }
    });
  }

  /** RFC 3030: BDAT chunks, each answered; the last one says LAST. */
  async #sendBdat(content: ReadableStream<Uint8Array>): Promise<void> {
    const fixer = new DotStuffer({ stuff: false });
    let batch: Uint8Array[] = [];
    let batched = 0;
    await this.#eachChunk(content, async (chunk, last) => {
      const out = chunk ? fixer.push(chunk) : fixer.end();
      batch.push(out);
      batched += out.length;
      if (batched < BDAT_CHUNK && !last) return;
      const body = concatBytes(batch, batched);
      batch = [];
      batched = 0;
      this.#state = "content";
      await this.#write(concatBytes([
        new TextEncoder().encode(`BDAT ${body.length}${last ? " LAST" : ""}\r\n`),
        body,
      ]));
      if (last) return; // the final reply is read by #content
      const reply = await this.#read();
      if (reply.code !== 250) this.#expect(reply, 0);
    });
  }

  /** Calls fn per chunk, then once with null and last=true; cancels the source on trouble. */
  async #eachChunk(
    content: ReadableStream<Uint8Array>,
    fn: (chunk: Uint8Array | null, last: boolean) => Promise<void>,
  ): Promise<void> {
    const reader = content.getReader();
    let done = false;
    try {
      while (true) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (err) {
          // The server must not see an end of data for a message we could not
          // read: drop the connection so it discards the transaction.
          throw this.#local(
            "deferred",
            "4.3.0",
            `Cannot read message content: ${errText(err)}`,
          );
        }
        if (next.done) {
          done = true;
          await fn(null, true);
          break;
        }
        await fn(next.value, false);
      }
    } finally {
      if (!done) await reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }

  /** Sends one command line and reads its reply. */
  async #command(line: string): Promise<ClientReply> {
    this.#checkLine(line);
    await this.#write(`${line}\r\n`);
    return await this.#read();
  }

  /** Last line of defence: a command with a control character inside is never written. */
  #checkLine(line: string): void {
    if (safeCommandLine(line)) return;
    throw this.#local(
      "failed",
      "5.5.4",
      `Refused to send a command with a control character: ${JSON.stringify(line)}`,
      true,
    );
  }

  async #write(data: Uint8Array | string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new WireTimeout("Write not taken")),
        this.#opts.replyTimeoutMs,
      );
    });
    const written = this.#wire.write(data);
    written.catch(() => {}); // may settle after the deadline won
    try {
      await Promise.race([written, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Reads one complete reply; throws on timeout, close or malformed input.
   * Unless replies are pipelined, anything beyond the one reply means the
   * server is out of step (RFC 5321 §4.2).
   */
  async #read(pipelined = false): Promise<ClientReply> {
    while (true) {
      const reply = this.#parser.shift();
      if (reply) {
        if (!pipelined && (this.#parser.buffered > 0 || this.#parser.pending > 0)) {
          throw this.#protocol("Server sent more than one reply");
        }
        return reply;
      }
      const chunk = await this.#wire.read(this.#opts.replyTimeoutMs);
      if (chunk === null) {
        throw this.#local(
          "deferred",
          "4.4.2",
          `Lost connection with ${this.relay} while ${DOING[this.#state]}`,
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
    // RFC 5321 §3.8: a 421 means the server is closing the channel.
    return new SessionEnd({
      outcome,
      code: reply.code,
      dsn: reply.enhanced ?? `${cls === 2 || cls === 5 ? cls : 4}.0.0`,
      text: replyText(reply),
      usable: usable && reply.code !== 421,
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

  /** Maps any exception (timeout, socket error, parser error) to a session end. */
  #toEnd(err: unknown): SessionEnd {
    if (err instanceof SessionEnd) return err;
    this.#broken = true;
    if (err instanceof ReplyProtocolError) return this.#protocol(err.message);
    const doing = DOING[this.#state];
    if (err instanceof WireTimeout) {
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
}

function endFields(e: SessionEnd) {
  return {
    outcome: e.outcome,
    code: e.code,
    dsn: e.dsn,
    text: e.message,
    usable: e.usable,
  };
}

/** Refuses addresses that would break or inject command lines (RFC 5321 §4.1.2). */
function checkAddresses(msg: OutgoingMessage, results: (RecipientResult | null)[]): void {
  if (unsendableAddress(msg.from)) {
    throw new SessionEnd({
      outcome: "failed",
      code: 0,
      dsn: "5.1.7",
      text: `Invalid sender address ${JSON.stringify(msg.from)}`,
      usable: true,
    });
  }
  msg.recipients.forEach((address, i) => {
    if (unsendableAddress(address) || address === "") {
      results[i] = {
        address,
        outcome: "failed",
        code: 0,
        dsn: "5.1.3",
        text: `Invalid recipient address ${JSON.stringify(address)}`,
      };
    }
  });
}

/** Every recipient without a result gets the end's outcome (or "did not complete"). */
function fill(
  results: (RecipientResult | null)[],
  msg: OutgoingMessage,
  end: SessionEnd | null,
): RecipientResult[] {
  return results.map((r, i) =>
    r ?? {
      address: msg.recipients[i],
      outcome: end?.outcome ?? "deferred",
      code: end?.code ?? 0,
      dsn: end?.dsn ?? "4.3.0",
      text: end?.message ?? "Delivery did not complete",
    }
  );
}

/** A reply's text, cleaned and capped. */
export function replyText(reply: ClientReply): string {
  return printable(reply.lines.join(" ").trim(), MAX_TEXT);
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
