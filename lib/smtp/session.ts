/**
 * One SMTP server session: reads command lines and message data from a
 * connection through the strict SmtpInput reader, dispatches commands
 * through the COMMANDS table, streams DATA into the spool and answers
 * "250" only once the message is durable. All session limits live here
 * (STYLE item 5): per-command and data timeouts, the error count that ends
 * with 421, the message size counted while streaming.
 */
import type { Config } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { type Conn, TimeoutError } from "../net/conn.ts";
import type { Envelope } from "../spool/records.ts";
import type { Spool } from "../spool/spool.ts";
import { parseCommand } from "./command.ts";
import { COMMANDS, newSessionState, resetTransaction, type SessionState } from "./commands.ts";
import { type DataEvent, type LineEvent, SmtpInput } from "./input.ts";
import { receivedHeader } from "./received.ts";
import { formatReply, type Reply, reply } from "./reply.ts";

/** What a session needs from the process around it. */
export interface SessionContext {
  config: Config;
  spool: Spool;
  /** Called once a message is durable in the queue. */
  onQueued: (id: string) => void;
  /** The wall clock (injectable for tests). */
  now?: () => number;
}

const HTTP_VERBS = /^(GET|POST|HEAD|PUT|CONNECT|OPTIONS|DELETE) /i;
const encoder = new TextEncoder();

/** Thrown to end a session after its final reply has been written. */
class SessionEnd extends Error {}

/** Runs one session to its end; never throws. */
export async function runSession(conn: Conn, ctx: SessionContext): Promise<void> {
  const session = new ServerSession(conn, ctx);
  try {
    await session.run();
  } catch (err) {
    if (!(err instanceof SessionEnd)) {
      logWarn("session error", { client: conn.remoteAddress, error: String(err) });
    }
  } finally {
    conn.close();
  }
}

class ServerSession {
  #conn: Conn;
  #ctx: SessionContext;
  #cfg: Config;
  #input: SmtpInput;
  #state: SessionState;
  #pending = "";
  #errors = 0;

  constructor(conn: Conn, ctx: SessionContext) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.#cfg = ctx.config;
    this.#input = new SmtpInput({ maxLineLength: ctx.config.limits.commandLineLength });
    this.#state = newSessionState(conn.remoteAddress);
  }

  get #now(): number {
    return this.#ctx.now?.() ?? Date.now();
  }

  async run(): Promise<void> {
    logEvent("connect", { client: this.#conn.remoteAddress });
    await this.#send(reply(220, undefined, `${this.#cfg.hostname} ESMTP skiff`));
    while (true) {
      const ev = await this.#nextLine();
      if (ev === null) return; // client went away
      const r = ev.kind === "line" ? this.#command(ev.line) : this.#lineError(ev.error);
      await this.#send(r);
      if (this.#state.dataPending) await this.#send(await this.#receiveData());
    }
  }

  /** Queues a reply; it is written when the session next needs input (pipelining, RFC 2920). */
  async #send(r: Reply): Promise<void> {
    if (r.code >= 400 && r.code !== 421) this.#errors++;
    this.#pending += formatReply(r);
    if (!r.close && this.#errors >= this.#cfg.limits.errors) {
      this.#pending += formatReply(
        reply(421, "4.7.0", `${this.#cfg.hostname} Error: too many errors`),
      );
      r = { ...r, close: true };
    }
    if (r.close) {
      await this.#flush();
      throw new SessionEnd();
    }
  }

  async #flush(): Promise<void> {
    if (this.#pending === "") return;
    const out = this.#pending;
    this.#pending = "";
    await this.#conn.write(encoder.encode(out));
  }

  /** Reads more bytes; null at end of stream. Timeouts end the session with 421. */
  async #fill(timeoutSeconds: number): Promise<boolean> {
    await this.#flush();
    let chunk: Uint8Array | null;
    try {
      chunk = await this.#conn.read(timeoutSeconds * 1000);
    } catch (err) {
      if (err instanceof TimeoutError) {
        logWarn("timeout", { client: this.#conn.remoteAddress });
        this.#pending += formatReply(
          reply(421, "4.4.2", `${this.#cfg.hostname} Error: timeout exceeded`),
        );
        await this.#flush();
        throw new SessionEnd();
      }
      throw err;
    }
    if (chunk === null) return false;
    this.#input.push(chunk);
    return true;
  }

  async #nextLine(): Promise<LineEvent | null> {
    while (true) {
      const ev = this.#input.nextLine();
      if (ev) return ev;
      if (!await this.#fill(this.#cfg.limits.commandTimeout)) return null;
    }
  }

  async #nextData(): Promise<DataEvent | null> {
    while (true) {
      const ev = this.#input.nextData();
      if (ev) return ev;
      if (!await this.#fill(this.#cfg.limits.dataTimeout)) return null;
    }
  }

  #lineError(error: "bare-lf" | "bare-cr" | "too-long"): Reply {
    if (error === "too-long") return reply(500, "5.5.2", "Error: line too long");
    // RFC 5321 §2.3.8: lines end with CRLF only; a bare CR or LF is never a line end.
    return reply(
      500,
      "5.5.2",
      `Error: bare ${error === "bare-lf" ? "LF" : "CR"} received; use CRLF`,
    );
  }

  #command(line: string): Reply {
    if (HTTP_VERBS.test(line)) {
      // A web client (or a cross-protocol attack) on the SMTP port: drop it at once.
      logWarn("http command", { client: this.#conn.remoteAddress });
      return { ...reply(421, "4.7.0", "Error: HTTP is not spoken here"), close: true };
    }
    const parsed = parseCommand(line);
    if ("unknown" in parsed) return reply(500, "5.5.2", "Error: command not recognized");
    const spec = COMMANDS[parsed.verb];
    return spec.check(this.#state) ?? spec.run(this.#state, parsed.arg, this.#cfg);
  }

  /** Streams message data into the spool; the reply is 250 only once it is durable. */
  async #receiveData(): Promise<Reply> {
    const st = this.#state;
    st.dataPending = false;
    const received = this.#now;
    const writer = await this.#ctx.spool.begin();
    const header = receivedHeader({
      helo: st.helo ?? "unknown",
      clientAddress: this.#conn.remoteAddress,
      hostname: this.#cfg.hostname,
      protocol: st.esmtp ? "ESMTP" : "SMTP",
      id: writer.id,
      recipient: st.recipients.length === 1 ? st.recipients[0].address : undefined,
      time: received,
    });
    let size = 0;
    let tooBig = false;
    let committed = false;
    try {
      const headerBytes = encoder.encode(header);
      await writer.write(headerBytes);
      while (true) {
        const ev = await this.#nextData();
        if (ev === null) return { ...reply(421, "4.4.2", "Connection lost"), close: true };
        if (ev.kind === "error") {
          logWarn("reject", { id: writer.id, client: st.clientAddress, reason: ev.error });
          // The smuggling defence: never guess where such data ends; refuse and hang up.
          return {
            ...reply(
              554,
              "5.5.2",
              `Error: bare ${ev.error === "bare-lf" ? "LF" : "CR"} in message data; use CRLF`,
            ),
            close: true,
          };
        }
        if (ev.kind === "end") break;
        size += ev.bytes.length;
        if (size > this.#cfg.limits.messageSize) tooBig = true;
        if (!tooBig) await writer.write(ev.bytes);
      }
      if (tooBig) {
        logWarn("reject", { id: writer.id, client: st.clientAddress, reason: "size", size });
        return reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size");
      }
      const envelope: Envelope = {
        id: writer.id,
        from: st.from ?? "",
        recipients: st.recipients,
        received,
        client: { address: st.clientAddress, helo: st.helo ?? "" },
        protocol: st.esmtp ? "ESMTP" : "SMTP",
        size: size + headerBytes.length,
      };
      await writer.commit(envelope);
      committed = true;
      logEvent("received", {
        id: writer.id,
        from: `<${envelope.from}>`,
        size: envelope.size,
        nrcpt: envelope.recipients.length,
        client: st.clientAddress,
      });
      this.#ctx.onQueued(writer.id);
      return reply(250, "2.0.0", `Ok: queued as ${writer.id}`);
    } finally {
      if (!committed) await writer.abort().catch(() => {});
      resetTransaction(st);
    }
  }
}
