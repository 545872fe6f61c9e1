/**
 * One SMTP or LMTP server session: reads command lines and message data
 * from a connection through the strict SmtpInput reader, dispatches
 * commands through the COMMANDS table, performs the actions they leave
 * (DATA, BDAT, STARTTLS, AUTH) and answers "250" only once a message is
 * durable. All session limits live here (STYLE item 5): greeting pause and
 * early talkers, per-command and data timeouts, the whole-session deadline,
 * the error count that ends with 421, unknown and unauthenticated command
 * caps, HTTP verbs, and the write deadline and output bound that drop a
 * client that never reads.
 */
import type * as tls from "node:tls";
import { loginOf } from "../auth/peercred.ts";
import type { Config, LimitsConfig, ListenerConfig } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { type Conn, OutputBoundError, TimeoutError } from "../net/conn.ts";
import type { SpaceMonitor } from "../spool/space.ts";
import { metrics } from "../metrics/metrics.ts";
import { formatListenAddress } from "../config/listeners.ts";
import type { Spool } from "../spool/spool.ts";
import { runAuth, type SaslContext } from "./auth_exchange.ts";
import { parseCommand, type Verb } from "../wire/command.ts";
import {
  type Action,
  type CommandEnv,
  COMMANDS,
  newSessionState,
  resetTransaction,
  type SessionState,
} from "./commands.ts";
import { type DataEvent, type LineEvent, SmtpInput } from "./input.ts";
import type { Identity } from "./policy.ts";
import { Receipt } from "./receive.ts";
import { formatReply, type Reply, reply } from "../wire/reply.ts";
import { type FilterClient, paramWords, type SessionFilter } from "./filter.ts";

/** What a session needs from the process around it. */
export interface SessionContext {
  config: Config;
  /** The listener the client connected to. */
  listener: ListenerConfig;
  spool: Spool;
  /** Called once a message is durable in the queue. */
  onQueued: (id: string) => void;
  /** The wall clock (injectable for tests). */
  now?: () => number;
  /** The listener's current TLS context (re-read on SIGHUP); absent without TLS. */
  secureContext?: () => tls.SecureContext;
  /** SASL checking and throttling; absent when the listener has no SASL. */
  sasl?: SaslContext;
  /** Opens the listener's content filter (its milters) for a client; absent without one. */
  openFilter?: (client: FilterClient) => Promise<SessionFilter>;
  /** The spool's free space: MAIL is refused with 452 when a message would not fit. */
  space?: SpaceMonitor;
  /** Whether a local address names a known user; absent when skiff cannot know. */
  knownRecipient?: (address: string) => boolean;
}

const HTTP_VERBS = /^(GET|POST|HEAD|PUT|CONNECT|OPTIONS|DELETE|PATCH|TRACE) /i;
const encoder = new TextEncoder();
const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/** Thrown to end a session after its final reply has been written. */
class SessionEnd extends Error {}

/** Runs one session to its end; never throws. */
export function runSession(conn: Conn, ctx: SessionContext): Promise<void> {
  return new ServerSession(conn, ctx).run();
}

/** The identity the kernel gives a unix-socket peer on a peercred listener. */
function peerIdentity(conn: Conn, ctx: SessionContext): Identity | null {
  if (ctx.listener.auth !== "peercred" || !conn.peer) return null;
  const { uid, gid, pid } = conn.peer;
  const login = loginOf(uid);
  return {
    kind: "peercred",
    name: login ?? `uid${uid}`,
    uid,
    gid,
    pid,
    trusted: uid === 0 || (login !== null && ctx.config.auth.trustedUsers.includes(login)),
  };
}

/** [limits] with the listener's overrides, merged once per listener context, not per session. */
const mergedLimits = new WeakMap<SessionContext, LimitsConfig>();

function limitsOf(ctx: SessionContext): LimitsConfig {
  let l = mergedLimits.get(ctx);
  if (!l) mergedLimits.set(ctx, l = { ...ctx.config.limits, ...ctx.listener.limits });
  return l;
}

class ServerSession {
  #conn: Conn;
  #ctx: SessionContext;
  #cfg: Config;
  #limits: LimitsConfig;
  #input: SmtpInput;
  #state: SessionState;
  #pending = "";
  #errors = 0;
  #unknown = 0;
  #unauthenticated = 0;
  #deadline: number;
  #receipt: Receipt | null = null;
  #filter: SessionFilter | null = null;

  constructor(conn: Conn, ctx: SessionContext) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.#cfg = ctx.config;
    this.#limits = limitsOf(ctx);
    this.#input = new SmtpInput({ maxLineLength: this.#limits.commandLineLength });
    this.#state = newSessionState(conn.remoteAddress, ctx.listener.protocol === "lmtp");
    this.#state.identity = peerIdentity(conn, ctx);
    this.#state.tls = conn.tls;
    // Deadlines arm real timers (setTimeout), so they read the real clock, not the
    // injectable #now, which dates what the session records (Received, envelopes).
    this.#deadline = Date.now() + this.#limits.sessionTimeout * 1000;
  }

  /** The listener as metrics label it: its configured address. */
  get #listenerName(): string {
    return formatListenAddress(this.#ctx.listener.address);
  }

  /** The client as logged: its IP, or the unix peer's uid. */
  get client(): string {
    if (this.#conn.remoteAddress) return this.#conn.remoteAddress;
    const p = this.#conn.peer;
    return p ? `unix:uid=${p.uid},pid=${p.pid}` : "unix";
  }

  get #now(): number {
    return this.#ctx.now?.() ?? Date.now();
  }

  get #env(): CommandEnv {
    const l = this.#ctx.listener;
    const st = this.#state;
    const plainOk = l.authPlaintext && (this.#conn.remoteAddress === "" ||
      LOOPBACK.test(this.#conn.remoteAddress));
    return {
      cfg: this.#cfg,
      listener: l,
      limits: this.#limits,
      canStartTls: l.tls === "starttls" && !st.tls && this.#ctx.secureContext !== undefined,
      canAuth: l.auth === "sasl" && this.#ctx.sasl !== undefined && (st.tls !== null || plainOk),
      space: this.#ctx.space,
      knownRecipient: this.#ctx.knownRecipient,
    };
  }

  async #cleanup(): Promise<void> {
    await this.#receipt?.abort();
    await this.#filter?.close();
    this.#conn.close();
  }

  /**
   * The whole session, never throwing. While the client is idle, this frame
   * (and the read it awaits) is all the session keeps suspended: the
   * command loop and its waiting are inlined here rather than behind helper
   * functions, and the work per line lives in #handle, so the frame stays
   * small (issue 13, docs/benchmarks.md).
   */
  async run(): Promise<void> {
    const closed = metrics.connectionIn(this.#listenerName);
    try {
      await this.#start();
      while (true) {
        const ev = this.#input.nextLine();
        if (ev !== null) {
          await this.#handle(ev);
          continue;
        }
        if (this.#pending !== "") await this.#flush();
        const ms = this.#readMs(this.#limits.commandTimeout);
        if (ms === 0) await this.#expired();
        let chunk: Uint8Array | null = null;
        try {
          chunk = await this.#conn.read(ms);
        } catch (err) {
          await this.#readFailed(err);
        }
        if (chunk === null) return; // client went away
        this.#input.push(chunk);
      }
    } catch (err) {
      if (!(err instanceof SessionEnd)) {
        logWarn("session error", { client: this.client, error: String(err) });
      }
    } finally {
      closed();
      await this.#cleanup();
    }
  }

  /** Logs the connection, opens the filter and greets. */
  async #start(): Promise<void> {
    const id = this.#state.identity;
    logEvent("connect", {
      client: this.client,
      listener: this.#ctx.listener.protocol,
      ...(id ? { user: id.name } : {}),
      ...(this.#state.tls ? { tls: this.#state.tls.version } : {}),
    });
    if (this.#ctx.openFilter) {
      this.#filter = await this.#ctx.openFilter({
        host: this.#conn.remoteAddress || "localhost",
        address: this.#conn.remoteAddress || "unix:",
        port: this.#conn.remotePort || 0,
        ourName: this.#cfg.hostname,
      });
    }
    await this.#greet();
  }

  /** Runs one command line (or refuses a bad one) and performs what it leaves to do. */
  async #handle(ev: LineEvent): Promise<void> {
    const done = ev.kind === "line" ? this.#command(ev.line) : { reply: this.#lineError(ev.error) };
    let r = done.reply;
    if (this.#filter && done.command) r = await this.#filtered(done.command, r);
    const action = this.#state.action;
    this.#state.action = null;
    if (action?.kind === "bdat") await this.#bdat(action);
    else if (action?.kind === "auth") await this.#auth(action);
    else {
      await this.#send(r);
      if (action?.kind === "data") await this.#data();
      else if (action?.kind === "starttls") await this.#startTls();
    }
  }

  /**
   * RFC 5321 §4.3.1: the greeting. A client that talks before it is not a
   * conforming SMTP client (spam bots, cross-protocol attacks): 554 and close.
   */
  async #greet(): Promise<void> {
    const pause = this.#limits.greetPause * 1000;
    let early = this.#conn.pending;
    if (!early && pause > 0) {
      try {
        early = await this.#conn.read(pause) !== null;
      } catch (err) {
        if (!(err instanceof TimeoutError)) throw err;
      }
    }
    if (early) {
      logWarn("reject", { client: this.client, reason: "talked before the greeting" });
      await this.#send({
        ...reply(554, "5.7.1", "Error: talked before the greeting"),
        close: true,
      });
    }
    const kind = this.#state.lmtp ? "LMTP" : "ESMTP";
    await this.#send(reply(220, undefined, `${this.#cfg.hostname} ${kind} skiff`));
  }

  /** Queues a reply; it is written when the session next needs input (pipelining, RFC 2920). */
  async #send(r: Reply): Promise<void> {
    if (r.code >= 400 && r.code !== 421) this.#errors++;
    if (r.code >= 400) metrics.rejected(this.#listenerName, r.code, r.enhanced);
    this.#pending += formatReply(r);
    // A client pipelining cheap commands (HELP) without reading must not grow our memory.
    if (this.#pending.length > this.#limits.outputBuffer) await this.#flush();
    if (!r.close && this.#errors >= this.#limits.errors) {
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

  async #close421(enhanced: string, text: string): Promise<never> {
    await this.#send({ ...reply(421, enhanced, `${this.#cfg.hostname} ${text}`), close: true });
    throw new SessionEnd();
  }

  /**
   * Writes the queued replies. The peer must take them within the command
   * timeout (and the session deadline), and output may not pile up past
   * limits.output_buffer: a client that never reads is dropped and logged.
   */
  async #flush(): Promise<void> {
    if (this.#pending === "") return;
    const out = this.#pending;
    this.#pending = "";
    // The final 421 of an expired session still gets a second to reach the client.
    const left = Math.max(1000, this.#deadline - Date.now());
    try {
      await this.#conn.write(encoder.encode(out), {
        timeoutMs: Math.min(this.#limits.commandTimeout * 1000, left),
        maxQueued: this.#limits.outputBuffer,
      });
    } catch (err) {
      if (!(err instanceof OutputBoundError)) throw err;
      logWarn("slow reader", {
        client: this.client,
        reason: err.timeout ? "write timeout" : "output bound",
        queued: err.queued,
      });
      throw new SessionEnd();
    }
  }

  /** Reads more bytes; false at end of stream. Timeouts end the session with 421. */
  async #fill(timeoutSeconds: number): Promise<boolean> {
    await this.#flush();
    const ms = this.#readMs(timeoutSeconds);
    if (ms === 0) await this.#expired();
    let chunk: Uint8Array | null = null;
    try {
      chunk = await this.#conn.read(ms);
    } catch (err) {
      await this.#readFailed(err);
    }
    if (chunk === null) return false;
    this.#input.push(chunk);
    return true;
  }

  /**
   * How long the next read may wait: the timeout, cut short by the session
   * deadline; 0 once that has passed (#expired then ends the session).
   */
  #readMs(timeoutSeconds: number): number {
    return Math.max(0, Math.min(timeoutSeconds * 1000, this.#deadline - Date.now()));
  }

  /** The whole-session deadline passed before a read: 421 and close. */
  #expired(): Promise<never> {
    return this.#close421("4.4.2", "Error: session time limit exceeded");
  }

  /** A read failed: a timeout ends the session with 421; anything else is thrown on. */
  async #readFailed(err: unknown): Promise<never> {
    if (err instanceof TimeoutError) {
      const whole = Date.now() >= this.#deadline;
      logWarn("timeout", { client: this.client, ...(whole ? { limit: "session" } : {}) });
      await this.#close421(
        "4.4.2",
        whole ? "Error: session time limit exceeded" : "Error: timeout exceeded",
      );
    }
    throw err;
  }

  async #nextLine(): Promise<LineEvent | null> {
    while (true) {
      const ev = this.#input.nextLine();
      if (ev) return ev;
      if (!await this.#fill(this.#limits.commandTimeout)) return null;
    }
  }

  async #nextData(): Promise<DataEvent | null> {
    while (true) {
      const ev = this.#input.nextData();
      if (ev) return ev;
      if (!await this.#fill(this.#limits.dataTimeout)) return null;
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

  /** Runs one command line; `command` is set when the table ran it (the filter's cue). */
  #command(line: string): { reply: Reply; command?: { verb: Verb; arg: string } } {
    if (HTTP_VERBS.test(line)) {
      // A web client (or a cross-protocol attack) on the SMTP port: drop it at once.
      logWarn("http command", { client: this.client });
      return { reply: { ...reply(421, "4.7.0", "Error: HTTP is not spoken here"), close: true } };
    }
    const st = this.#state;
    if (this.#ctx.listener.requireAuth && !st.identity) {
      if (++this.#unauthenticated > this.#limits.unauthenticatedCommands) {
        const r = reply(421, "4.7.0", "Error: too many commands before AUTH");
        return { reply: { ...r, close: true } };
      }
    }
    const parsed = parseCommand(line);
    if ("unknown" in parsed) {
      if (++this.#unknown > this.#limits.unknownCommands) {
        return {
          reply: { ...reply(421, "4.7.0", "Error: too many unknown commands"), close: true },
        };
      }
      return { reply: reply(500, "5.5.2", "Error: command not recognized") };
    }
    const spec = COMMANDS[parsed.verb];
    const env = this.#env;
    const r = spec.check(st, env) ?? spec.run(st, parsed.arg, env);
    if (st.from === null && this.#receipt) {
      // RSET, HELO or a new EHLO ended a BDAT transaction.
      const receipt = this.#receipt;
      this.#receipt = null;
      receipt.abort();
    }
    return { reply: r, command: parsed };
  }

  /**
   * The filter's word on a command the table accepted: HELO, MAIL and RCPT
   * go to it; its refusal replaces the 250 and undoes what the command did
   * (RFC 5321 state stays as if the command had been refused).
   */
  async #filtered(parsed: { verb: Verb; arg: string }, r: Reply): Promise<Reply> {
    const f = this.#filter!;
    const st = this.#state;
    if (parsed.verb === "RSET" || parsed.verb === "HELO" || parsed.verb === "EHLO") {
      await f.reset();
    }
    if (r.code !== 250) return r;
    let refusal = null;
    if (parsed.verb === "HELO" || parsed.verb === "EHLO" || parsed.verb === "LHLO") {
      refusal = await f.helo(st.helo ?? "");
    } else if (parsed.verb === "MAIL") {
      refusal = await f.mail(st.from ?? "", paramWords(parsed.arg), {
        ...(st.identity ? { authUser: st.identity.name } : {}),
      });
      if (refusal) resetTransaction(st);
    } else if (parsed.verb === "RCPT") {
      const last = st.recipients[st.recipients.length - 1];
      refusal = await f.rcpt(last.address, paramWords(parsed.arg));
      if (refusal) st.recipients.pop();
    }
    return refusal ?? r;
  }

  #receiptOptions(checkLineEnds: boolean) {
    return {
      cfg: this.#cfg,
      listener: this.#ctx.listener,
      spool: this.#ctx.spool,
      state: this.#state,
      maxSize: this.#limits.messageSize,
      client: this.client,
      now: this.#now,
      checkLineEnds,
      filter: this.#filter,
    };
  }

  /** Sends the final replies of a message and ends the transaction. */
  async #finish(receipt: Receipt): Promise<void> {
    this.#receipt = null;
    const started = performance.now();
    const replies = await receipt.finish();
    if (replies[0].code === 250 && !receipt.discarded) {
      metrics.acceptLatency((performance.now() - started) / 1000);
      metrics.received(this.#listenerName);
      this.#ctx.onQueued(receipt.id);
    }
    resetTransaction(this.#state);
    await this.#filter?.reset();
    for (const r of replies) await this.#send(r);
  }

  /** DATA: streams dot-unstuffed content into the spool. */
  async #data(): Promise<void> {
    const receipt = await Receipt.begin(this.#receiptOptions(false));
    this.#receipt = receipt;
    while (true) {
      const ev = await this.#nextData();
      if (ev === null) return; // cleanup() aborts the receipt
      if (ev.kind === "error") {
        logWarn("reject", { id: receipt.id, client: this.client, reason: ev.error });
        // The smuggling defence: never guess where such data ends; refuse and hang up.
        const what = ev.error === "bare-lf" ? "LF" : "CR";
        await this.#send({
          ...reply(554, "5.5.2", `Error: bare ${what} in message data; use CRLF`),
          close: true,
        });
      } else if (ev.kind === "end") break;
      else await receipt.write(ev.bytes);
    }
    await this.#finish(receipt);
  }

  /** BDAT (RFC 3030): reads exactly the chunk's octets, refused or not, to stay in step. */
  async #bdat(a: Extract<Action, { kind: "bdat" }>): Promise<void> {
    const st = this.#state;
    let receipt = this.#receipt;
    if (!a.refuse && !receipt) {
      receipt = this.#receipt = await Receipt.begin(this.#receiptOptions(true));
      st.bdat = true;
    }
    let left = a.size;
    while (left > 0) {
      const bytes = this.#input.take(left);
      if (bytes === null) {
        if (!await this.#fill(this.#limits.dataTimeout)) throw new SessionEnd();
        continue;
      }
      left -= bytes.length;
      if (!a.refuse) await receipt!.write(bytes);
    }
    if (a.refuse) return await this.#send(a.refuse);
    if (!a.last) return await this.#send(reply(250, "2.0.0", `${a.size} octets received`));
    await this.#finish(receipt!);
  }

  /** STARTTLS (RFC 3207): discards pipelined plaintext, upgrades, forgets the session. */
  async #startTls(): Promise<void> {
    const dropped = this.#input.discard();
    if (dropped > 0) {
      // RFC 3207 §4.2 / CVE-2011-0411: nothing sent before the handshake may be executed.
      logWarn("plaintext after STARTTLS discarded", { client: this.client, bytes: dropped });
    }
    const greeting = encoder.encode(this.#pending);
    this.#pending = "";
    try {
      this.#conn = await this.#conn.startTlsServer({
        secureContext: this.#ctx.secureContext!(),
        timeoutMs: this.#limits.commandTimeout * 1000,
        greeting,
      });
    } catch (err) {
      logWarn("tls handshake failed", { client: this.client, error: String(err) });
      throw new SessionEnd();
    }
    // RFC 3207 §4.2: the client must start over with EHLO.
    const st = this.#state;
    resetTransaction(st);
    st.helo = null;
    st.esmtp = false;
    if (st.identity?.kind === "sasl") st.identity = null;
    st.tls = this.#conn.tls;
    logEvent("starttls", { client: this.client, ...st.tls });
  }

  /** AUTH (RFC 4954): the SASL exchange, throttled per client. */
  async #auth(a: Extract<Action, { kind: "auth" }>): Promise<void> {
    const r = await runAuth(a, {
      sasl: this.#ctx.sasl!,
      client: this.client,
      ask: async (challenge) => {
        await this.#send(reply(334, undefined, challenge));
        const ev = await this.#nextLine();
        if (ev === null) throw new SessionEnd();
        return ev.kind === "line" ? ev.line : null;
      },
    });
    if (r.identity) this.#state.identity = r.identity;
    await this.#send(r.reply);
  }
}
