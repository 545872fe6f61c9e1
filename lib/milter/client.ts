/**
 * One conversation with one milter for one SMTP session, in the order
 * sendmail and Postfix use: negotiate, connect, helo, then per message
 * mail, rcpt..., data, headers, end of headers, body chunks, end of
 * message (collecting the milter's modifications), abort between
 * messages, quit at the end. Every step has a deadline; a milter that
 * breaks the protocol, times out or goes away makes the step throw
 * MilterUnavailable, and the caller applies the configured default action
 * (Postfix's milter_default_action). Steps the milter asked to skip
 * (SMFIP_NO*) are not sent, and steps it asked not to answer
 * (SMFIP_NR_*) are not waited for.
 */
import type { MilterAddress } from "../config/milter_address.ts";
import { Conn, TimeoutError } from "../net/conn.ts";
import {
  Actions,
  CHUNK_SIZE,
  Cmd,
  connect as connectPacket,
  decodeReply,
  macros,
  MilterProtocolError,
  type MilterReply,
  optneg,
  packet,
  PacketReader,
  Proto,
  strings,
  SUPPORTED_PROTO,
} from "./protocol.ts";

/** Deadlines, in milliseconds. */
export interface MilterTimeouts {
  connect: number;
  command: number;
  /** For end of message, when a milter scans the whole content. */
  content: number;
}

/** A verdict that ends the conversation about the current message (or connection). */
export type Verdict =
  | { kind: "continue" }
  | { kind: "accept" }
  | { kind: "reject"; code: number; text: string }
  | { kind: "tempfail"; code: number; text: string }
  | { kind: "discard" };

/** A change to the message a milter asked for at end of message. */
export type Modification = Extract<
  MilterReply,
  { kind: "addHeader" | "insertHeader" | "changeHeader" | "replaceBody" | "quarantine" }
>;

/** The milter did not answer as the protocol says (down, slow, or broken). */
export class MilterUnavailable extends Error {}

function describe(a: MilterAddress): string {
  return "path" in a ? `unix:${a.path}` : `inet:${a.host}:${a.port}`;
}

/** A connected, negotiated milter. */
export class MilterSession {
  readonly name: string;
  #conn: Conn;
  #reader = new PacketReader();
  #queue: { cmd: string; data: Uint8Array }[] = [];
  #t: MilterTimeouts;
  #proto = 0;
  #actions = 0;

  private constructor(name: string, conn: Conn, t: MilterTimeouts) {
    this.name = name;
    this.#conn = conn;
    this.#t = t;
  }

  /** Connects and negotiates (SMFIC_OPTNEG). */
  static async open(address: MilterAddress, t: MilterTimeouts): Promise<MilterSession> {
    const name = describe(address);
    let conn: Conn;
    try {
      conn = await Conn.connectTo(address, t.connect);
    } catch (err) {
      throw new MilterUnavailable(`Milter ${name} is not reachable: ${(err as Error).message}`);
    }
    const s = new MilterSession(name, conn, t);
    try {
      // Not SMFIF_QUARANTINE: skiff has no quarantine a milter could put mail into yet.
      const allowed = Actions.addHeaders | Actions.changeHeaders | Actions.changeBody;
      const r = await s.#ask(optneg(allowed, SUPPORTED_PROTO), t.command);
      if (r.kind !== "optneg" || r.version < 2) {
        throw new MilterUnavailable(`Milter ${name} did not negotiate (${r.kind})`);
      }
      s.#proto = r.proto & SUPPORTED_PROTO;
      s.#actions = r.actions & allowed;
    } catch (err) {
      s.close();
      throw err;
    }
    return s;
  }

  /** Whether the milter asked for a step to be left out. */
  #skips(flag: number): boolean {
    return (this.#proto & flag) !== 0;
  }

  /** SMFIC_CONNECT, with the macros milters commonly read. */
  connect(
    info: { host: string; address: string; port: number; ourName: string },
  ): Promise<Verdict> {
    if (this.#skips(Proto.noConnect)) return Promise.resolve({ kind: "continue" });
    return this.#step(
      [
        macros(Cmd.connect, { j: info.ourName, "{daemon_name}": "skiff", _: info.address }),
        connectPacket(info.host, info.address, info.port),
      ],
      Proto.noReplyConnect,
    );
  }

  /** SMFIC_HELO. */
  helo(name: string): Promise<Verdict> {
    if (this.#skips(Proto.noHelo)) return Promise.resolve({ kind: "continue" });
    return this.#step([packet(Cmd.helo, strings(name))], Proto.noReplyHelo);
  }

  /** SMFIC_MAIL with the sender in angle brackets and its ESMTP parameters. */
  mail(
    from: string,
    params: string[],
    macro: { queueId?: string; authUser?: string },
  ): Promise<Verdict> {
    if (this.#skips(Proto.noMail)) return Promise.resolve({ kind: "continue" });
    const m: Record<string, string> = {};
    if (macro.queueId) m.i = macro.queueId;
    if (macro.authUser) m["{auth_authen}"] = macro.authUser;
    return this.#step(
      [macros(Cmd.mail, m), packet(Cmd.mail, strings(`<${from}>`, ...params))],
      Proto.noReplyMail,
    );
  }

  /** SMFIC_RCPT. */
  rcpt(to: string, params: string[]): Promise<Verdict> {
    if (this.#skips(Proto.noRcpt)) return Promise.resolve({ kind: "continue" });
    return this.#step([packet(Cmd.rcpt, strings(`<${to}>`, ...params))], Proto.noReplyRcpt);
  }

  /**
   * DATA, the headers, end of headers and the body, then end of message:
   * the verdict and the modifications asked for (only those negotiated).
   */
  async content(
    headers: { name: string; value: string }[],
    body: Uint8Array,
    queueId: string,
  ): Promise<{ verdict: Verdict; changes: Modification[] }> {
    const steps: [Uint8Array[], number, boolean][] = [
      [
        [macros(Cmd.data, { i: queueId }), packet(Cmd.data)],
        Proto.noReplyData,
        !this.#skips(Proto.noData),
      ],
    ];
    if (!this.#skips(Proto.noHeaders)) {
      const lead = this.#skips(Proto.headerLeadingSpace) ? "" : " ";
      for (const h of headers) {
        // libmilter wants the value without the one space after the colon, unless asked.
        const value = lead === " " && h.value.startsWith(" ") ? h.value.slice(1) : h.value;
        steps.push([[packet(Cmd.header, strings(h.name, value))], Proto.noReplyHeader, true]);
      }
    }
    steps.push([
      [packet(Cmd.endOfHeaders)],
      Proto.noReplyEndOfHeaders,
      !this.#skips(Proto.noEndOfHeaders),
    ]);
    if (!this.#skips(Proto.noBody)) {
      for (let at = 0; at < body.length; at += CHUNK_SIZE) {
        steps.push([
          [packet(Cmd.body, body.subarray(at, at + CHUNK_SIZE))],
          Proto.noReplyBody,
          true,
        ]);
      }
    }
    for (const [packets, noReply, send] of steps) {
      if (!send) continue;
      const v = await this.#step(packets, noReply);
      if (v.skipped) break; // SMFIR_SKIP: no more body chunks wanted
      if (v.kind !== "continue") return { verdict: v, changes: [] };
    }
    await this.#send([packet(Cmd.endOfBody)]);
    const changes: Modification[] = [];
    while (true) {
      const r = await this.#next(this.#t.content);
      if (r.kind === "progress") continue;
      if (
        r.kind === "addHeader" || r.kind === "insertHeader" || r.kind === "changeHeader"
      ) {
        if (this.#actions & (r.kind === "addHeader" ? Actions.addHeaders : Actions.changeHeaders)) {
          changes.push(r);
        }
        continue;
      }
      if (r.kind === "replaceBody") {
        if (this.#actions & Actions.changeBody) changes.push(r);
        continue;
      }
      if (r.kind === "quarantine") {
        if (this.#actions & Actions.quarantine) changes.push(r);
        continue;
      }
      if (r.kind === "other") continue; // an action skiff did not negotiate: ignored
      return { verdict: toVerdict(r), changes };
    }
  }

  /** SMFIC_ABORT: the current message is over (RSET, or the session goes on). */
  async abort(): Promise<void> {
    await this.#send([packet(Cmd.abort)]).catch(() => {});
  }

  /** SMFIC_QUIT and close. */
  async quit(): Promise<void> {
    await this.#send([packet(Cmd.quit)]).catch(() => {});
    this.close();
  }

  /** Closes the connection. */
  close(): void {
    this.#conn.close();
  }

  /** Sends one step; waits for its reply unless the milter asked for none (SMFIP_NR_*). */
  async #step(packets: Uint8Array[], noReply: number): Promise<Verdict & { skipped?: true }> {
    if (this.#skips(noReply)) {
      await this.#send(packets);
      return { kind: "continue" };
    }
    await this.#send(packets);
    while (true) {
      const r = await this.#next(this.#t.command);
      if (r.kind === "progress") continue;
      if (r.kind === "skip") return { kind: "continue", skipped: true };
      return toVerdict(r);
    }
  }

  async #ask(p: Uint8Array, timeoutMs: number): Promise<MilterReply> {
    await this.#send([p]);
    return await this.#next(timeoutMs);
  }

  async #send(packets: Uint8Array[]): Promise<void> {
    try {
      for (const p of packets) await this.#conn.write(p);
    } catch (err) {
      throw new MilterUnavailable(`Milter ${this.name} went away: ${(err as Error).message}`);
    }
  }

  async #next(timeoutMs: number): Promise<MilterReply> {
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length === 0) {
      let chunk: Uint8Array | null;
      try {
        chunk = await this.#conn.read(Math.max(1, deadline - Date.now()));
      } catch (err) {
        const why = err instanceof TimeoutError ? `no reply within ${timeoutMs} ms` : String(err);
        throw new MilterUnavailable(`Milter ${this.name}: ${why}`);
      }
      if (chunk === null) throw new MilterUnavailable(`Milter ${this.name} closed the connection`);
      try {
        this.#queue.push(...this.#reader.push(chunk));
      } catch (err) {
        throw new MilterUnavailable(`Milter ${this.name}: ${(err as Error).message}`);
      }
    }
    const { cmd, data } = this.#queue.shift()!;
    try {
      return decodeReply(cmd, data);
    } catch (err) {
      if (err instanceof MilterProtocolError) {
        throw new MilterUnavailable(`Milter ${this.name}: ${err.message}`);
      }
      throw err;
    }
  }
}

/** A reply to a step, as a verdict; anything unexpected is a protocol error. */
function toVerdict(r: MilterReply): Verdict {
  switch (r.kind) {
    case "continue":
      return { kind: "continue" };
    case "accept":
      return { kind: "accept" };
    case "discard":
      return { kind: "discard" };
    case "reject":
      return { kind: "reject", code: 550, text: "5.7.1 Command rejected" };
    case "tempfail":
      return { kind: "tempfail", code: 451, text: "4.7.1 Service unavailable - try again later" };
    case "replycode":
      return r.code >= 500
        ? { kind: "reject", code: r.code, text: r.text.slice(4) }
        : { kind: "tempfail", code: r.code, text: r.text.slice(4) };
    default:
      throw new MilterUnavailable(`Milter sent ${r.kind} where a verdict was expected`);
  }
}
