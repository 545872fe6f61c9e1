/**
 * One message being received over DATA or BDAT: prepends the Received
 * header, streams content into a SpoolWriter while counting its size, and
 * at the end commits the envelope, answering only once the message is
 * durable (group commit batches the syncs of concurrent sessions). A
 * message to be DKIM-signed or checked (lib/mailauth/hook.ts), or shown to
 * the listener's milters (lib/smtp/filter.ts), is held in memory instead (at
 * most limits.message_size) until the end: milters see it first (and may
 * change it), then it is signed or checked, then written. LMTP
 * gets one reply per accepted recipient (RFC 2033 §4.2), all alike, since
 * every recipient's fate is sealed by the same commit.
 */
import type { Config, ListenerConfig } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { authenticateMessage, type AuthRole, authRole } from "../mailauth/hook.ts";
import { concatBytes } from "../sys/bytes.ts";
import type { Envelope } from "../spool/records.ts";
import type { Spool, SpoolWriter } from "../spool/spool.ts";
import type { SessionState } from "./commands.ts";
import { receivedHeader } from "./received.ts";
import { type Reply, reply } from "../wire/reply.ts";
import type { SessionFilter } from "./filter.ts";

const encoder = new TextEncoder();
const CR = 0x0d;
const LF = 0x0a;

/** The RFC 3848 / RFC 6531 §3.7.3 "with" protocol name of a transaction. */
export function protocolName(s: SessionState): string {
  let name = s.lmtp ? "LMTP" : "SMTP";
  if (s.mail.smtputf8) name = `UTF8${name}`;
  else if (s.esmtp && !s.lmtp) name = `E${name}`;
  if (s.tls) name += "S";
  if (s.identity) name += "A";
  return name;
}

/** Options for {@link Receipt.begin}. */
export interface ReceiptOptions {
  cfg: Config;
  listener: ListenerConfig;
  spool: Spool;
  state: SessionState;
  /** Largest content accepted, in bytes. */
  maxSize: number;
  /** Log label for the client ("127.0.0.1", "unix:uid=1000"). */
  client: string;
  now: number;
  /** BDAT content is raw: a bare CR or LF in it is refused at the end (SMTP smuggling). */
  checkLineEnds: boolean;
  /** The listener's milters: the message is held until they have seen it. */
  filter?: SessionFilter | null;
}

/** A message on its way into the spool. */
export class Receipt {
  readonly #o: ReceiptOptions;
  readonly #writer: SpoolWriter;
  #headerLength: number;
  /**
   * Milters, DKIM signing or inbound checks need the whole message: it is
   * held here (without the Received header) until finish().
   */
  readonly #hold: { role: AuthRole; received: Uint8Array; held: Uint8Array[] } | null;
  #size = 0;
  #tooBig = false;
  #badLineEnd: "bare-cr" | "bare-lf" | null = null;
  #lastCR = false;
  #done = false;
  #discarded = false;

  private constructor(
    o: ReceiptOptions,
    writer: SpoolWriter,
    received: Uint8Array,
    role: AuthRole,
  ) {
    this.#o = o;
    this.#writer = writer;
    this.#headerLength = received.length;
    this.#hold = role || o.filter ? { role, received, held: [] } : null;
  }

  /** A milter asked for the message to be dropped after its 250. */
  get discarded(): boolean {
    return this.#discarded;
  }

  /** Opens the spool file and writes the Received header. */
  static async begin(o: ReceiptOptions): Promise<Receipt> {
    const writer = await o.spool.begin();
    const st = o.state;
    const header = receivedHeader({
      helo: st.helo ?? "unknown",
      clientAddress: st.clientAddress,
      peer: st.identity?.kind === "peercred" ? st.identity.uid : undefined,
      hostname: o.cfg.hostname,
      protocol: protocolName(st),
      tls: st.tls ?? undefined,
      id: writer.id,
      recipient: st.recipients.length === 1 ? st.recipients[0].address : undefined,
      time: o.now,
    });
    const bytes = encoder.encode(header);
    const role = authRole(o.cfg, authSubject(st));
    try {
      if (!role && !o.filter) await writer.write(bytes);
    } catch (e) {
      await writer.abort().catch(() => {});
      throw e;
    }
    return new Receipt(o, writer, bytes, role);
  }

  /** The queue id. */
  get id(): string {
    return this.#writer.id;
  }

  /** Adds content; past the size limit bytes are counted and dropped. */
  async write(bytes: Uint8Array): Promise<void> {
    if (this.#o.checkLineEnds && !this.#badLineEnd) this.#scan(bytes);
    this.#size += bytes.length;
    if (this.#size > this.#o.maxSize) this.#tooBig = true;
    if (this.#tooBig || this.#badLineEnd) return;
    if (this.#hold) this.#hold.held.push(bytes.slice());
    else await this.#writer.write(bytes);
  }

  /** RFC 5321 §2.3.8: CR and LF only as CRLF, across chunk boundaries too. */
  #scan(b: Uint8Array): void {
    for (let i = 0; i < b.length; i++) {
      const c = b[i];
      if (this.#lastCR && c !== LF) {
        this.#badLineEnd = "bare-cr";
        return;
      }
      if (c === LF && !this.#lastCR) {
        this.#badLineEnd = "bare-lf";
        return;
      }
      this.#lastCR = c === CR;
    }
  }

  /** Commits (or refuses) the message; the replies to send, one per LMTP recipient. */
  async finish(): Promise<Reply[]> {
    this.#done = true;
    const o = this.#o;
    const st = o.state;
    const n = st.lmtp ? st.recipients.length : 1;
    const each = (r: Reply) => Array.from({ length: n }, () => r);
    if (this.#lastCR && !this.#badLineEnd) this.#badLineEnd = "bare-cr";
    if (this.#badLineEnd) {
      await this.#writer.abort().catch(() => {});
      logWarn("reject", { id: this.id, client: o.client, reason: this.#badLineEnd });
      return each(reply(554, "5.6.0", "Error: bare CR or LF in message content; use CRLF"));
    }
    if (this.#tooBig) {
      await this.#writer.abort().catch(() => {});
      logWarn("reject", { id: this.id, client: o.client, reason: "size", size: this.#size });
      return each(reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size"));
    }
    if (this.#hold) {
      const refused = await this.#release();
      if (refused) return each(refused);
      if (this.#discarded) {
        await this.#writer.abort().catch(() => {});
        logEvent("discarded", { id: this.id, client: o.client, by: "milter" });
        return each(reply(250, "2.0.0", `Ok: queued as ${this.id}`));
      }
    }
    const envelope: Envelope = {
      id: this.id,
      from: st.from ?? "",
      recipients: st.recipients,
      received: o.now,
      client: {
        address: st.clientAddress || "unix",
        helo: st.helo ?? "",
        ...(st.identity ? { auth: st.identity.name } : {}),
      },
      protocol: protocolName(st),
      size: this.#size + this.#headerLength,
      params: envelopeParams(st, o.listener),
    };
    try {
      await this.#writer.commit(envelope);
    } catch (e) {
      logWarn("spool error", { id: this.id, error: String(e) });
      return each(reply(451, "4.3.0", "Error: queue file write error"));
    }
    logEvent("received", {
      id: this.id,
      from: `<${envelope.from}>`,
      size: envelope.size,
      nrcpt: envelope.recipients.length,
      client: o.client,
      ...(st.identity ? { auth: st.identity.name } : {}),
      protocol: envelope.protocol,
    });
    if (!st.lmtp) return [reply(250, "2.0.0", `Ok: queued as ${this.id}`)];
    return st.recipients.map((r) => reply(250, "2.1.5", `<${r.address}> Ok: queued as ${this.id}`));
  }

  /**
   * The held message goes to the listener's milters (which see the Received
   * header too, and may refuse, discard or change the message), then through
   * the mail authentication hook (lib/mailauth/hook.ts: signs or verifies),
   * then header fields, Received and content are written to the spool.
   * Returns the refusal, if any (the spool file is then dropped).
   */
  async #release(): Promise<Reply | null> {
    const a = this.#hold!;
    let received = a.received;
    let message = concatBytes(a.held);
    a.held = [];
    if (this.#o.filter) {
      const out = await this.#o.filter.content(concatBytes([received, message]), this.id);
      if (out.refuse) {
        await this.#writer.abort().catch(() => {});
        logWarn("reject", { id: this.id, client: this.#o.client, reason: "milter" });
        return out.refuse;
      }
      if (out.discard) {
        this.#discarded = true;
        return null;
      }
      if (out.content) {
        // The milters' message starts with our Received header (or what they put above it).
        received = new Uint8Array(0);
        message = out.content;
      }
    }
    if (!a.role) return await this.#writeHeld(received, message, "");
    return await this.#authenticate(received, message, a.role);
  }

  /** Signs or verifies (lib/mailauth/hook.ts), then writes. */
  async #authenticate(
    received: Uint8Array,
    message: Uint8Array,
    role: Exclude<AuthRole, null>,
  ): Promise<Reply | null> {
    const st = this.#o.state;
    const out = await authenticateMessage(message, {
      cfg: this.#o.cfg,
      listener: this.#o.listener,
      subject: authSubject(st),
      role,
      id: this.id,
      client: this.#o.client,
      now: this.#o.now,
    });
    if (out.reject) {
      await this.#writer.abort().catch(() => {});
      logWarn("reject", {
        id: this.id,
        client: this.#o.client,
        reason: [out.reject.text].flat().join(" "),
      });
      return out.reject;
    }
    return await this.#writeHeld(received, out.message, out.prepend);
  }

  /** Writes the held message: new header fields, the Received header, the content. */
  async #writeHeld(received: Uint8Array, message: Uint8Array, prepend: string) {
    const head = concatBytes([encoder.encode(prepend), received]);
    this.#headerLength = head.length;
    this.#size = message.length;
    try {
      await this.#writer.write(head);
      await this.#writer.write(message);
    } catch (e) {
      logWarn("spool error", { id: this.id, error: String(e) });
      return reply(451, "4.3.0", "Error: queue file write error");
    }
    return null;
  }

  /** Drops the partial message (connection lost, RSET during BDAT). */
  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#writer.abort().catch(() => {});
  }
}

/** What the mail authentication hook needs to know about the sender. */
function authSubject(st: SessionState) {
  return {
    identity: st.identity,
    clientAddress: st.clientAddress,
    helo: st.helo ?? "",
    from: st.from ?? "",
  };
}

/** The envelope params: DSN and body parameters, the listener's destination, peer credentials. */
function envelopeParams(st: SessionState, listener: ListenerConfig): Record<string, string> {
  const p: Record<string, string> = {};
  if (st.mail.body) p.BODY = st.mail.body;
  if (st.mail.smtputf8) p.SMTPUTF8 = "yes";
  if (st.mail.ret) p.RET = st.mail.ret;
  if (st.mail.envid !== undefined) p.ENVID = st.mail.envid;
  // RFC 8689: carried with the message; lib/tlspolicy enforces it on every hop.
  if (st.mail.requireTls) p.REQUIRETLS = "yes";
  if (listener.destination !== "router") p.destination = listener.destination;
  const id = st.identity;
  if (id?.kind === "peercred") {
    p.peer_uid = String(id.uid);
    p.peer_gid = String(id.gid);
    p.peer_pid = String(id.pid);
  }
  return p;
}
