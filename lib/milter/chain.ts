/**
 * The milters of one SMTP session, in their configured order, as Postfix's
 * smtpd_milters: each sees connect, HELO, MAIL, RCPT and the message;
 * the first reject, tempfail or discard wins; the changes of every milter
 * that accepts are applied in order, each milter seeing the message as
 * the ones before it left it. A milter that is down, slow or breaks the
 * protocol gets the configured default action (Postfix's
 * milter_default_action): "tempfail" (451 4.7.1, the default: mail waits
 * rather than skip a filter), "accept" (the milter is left out for the rest
 * of the session) or "reject" (550 5.7.1). Every outcome is logged.
 */
import { type Reply, reply } from "../wire/reply.ts";
import { logWarn } from "../log/log.ts";
import { applyChanges, splitMessage } from "./apply.ts";
import type { MilterAddress } from "../config/milter_address.ts";
import {
  type MilterSession,
  MilterSession as Session,
  type MilterTimeouts,
  MilterUnavailable,
  type Verdict,
} from "./client.ts";

/** What to do when a milter cannot be used. */
export type MilterDefaultAction = "tempfail" | "accept" | "reject";

/** The milter settings of a listener. */
export interface MilterSettings {
  milters: { name: string; address: MilterAddress }[];
  defaultAction: MilterDefaultAction;
  timeouts: MilterTimeouts;
}

/** The connecting client, as milters are told about it. */
export interface MilterClient {
  host: string;
  address: string;
  port: number;
  ourName: string;
}

/** What the chain decided about a message. */
export interface ContentOutcome {
  /** A refusal for the DATA (or the last BDAT), when a milter refused. */
  refuse?: Reply;
  /** Accept with 250 but do not queue (SMFIR_DISCARD). */
  discard?: boolean;
  /** The message as the milters changed it; absent when unchanged. */
  content?: Uint8Array;
  /** Why a milter asked for quarantine (the message is held). */
  quarantine?: string;
}

type Slot = { name: string; session: MilterSession | null; acceptedAll: boolean; done: boolean };

/** The milters of one session. */
export class MilterChain {
  #s: MilterSettings;
  #slots: Slot[] = [];
  /** A session-wide refusal (a milter refused the connection, or one is down and tempfail). */
  #sticky: Reply | null = null;

  private constructor(s: MilterSettings) {
    this.#s = s;
  }

  /** Connects every milter and tells it about the client; a refusal sticks to the session. */
  static async open(s: MilterSettings, client: MilterClient): Promise<MilterChain> {
    const chain = new MilterChain(s);
    for (const m of s.milters) {
      const slot: Slot = { name: m.name, session: null, acceptedAll: false, done: false };
      chain.#slots.push(slot);
      try {
        slot.session = await Session.open(m.address, s.timeouts);
      } catch (err) {
        chain.#unavailable(slot, err);
        continue;
      }
      await chain.#each(slot, (x) => x.connect(client), true);
    }
    return chain;
  }

  /**
   * HELO/EHLO. Only a refusal that arises now answers the HELO; one from
   * connect time (a milter down, or refusing the client) answers MAIL on,
   * so the client learns why in a transaction, as with Postfix.
   */
  async helo(name: string): Promise<Reply | null> {
    const before = this.#sticky;
    for (const slot of this.#live()) await this.#each(slot, (x) => x.helo(name), true);
    return this.#sticky !== before ? this.#sticky : null;
  }

  /** MAIL FROM; a refusal is for this transaction only. */
  async mail(
    from: string,
    params: string[],
    macro: { queueId?: string; authUser?: string },
  ): Promise<Reply | null> {
    if (this.#sticky) return this.#sticky;
    for (const slot of this.#slots) slot.done = false;
    for (const slot of this.#live()) {
      const r = await this.#each(slot, (x) => x.mail(from, params, macro), false);
      if (r) return r;
    }
    return this.#sticky;
  }

  /** RCPT TO; a refusal is for this recipient only. */
  async rcpt(to: string, params: string[]): Promise<Reply | null> {
    if (this.#sticky) return this.#sticky;
    for (const slot of this.#live()) {
      const r = await this.#each(slot, (x) => x.rcpt(to, params), false);
      if (r) return r;
    }
    return this.#sticky;
  }

  /** The whole message at end of DATA: each milter in turn, with the changes before it applied. */
  async content(message: Uint8Array, queueId: string): Promise<ContentOutcome> {
    if (this.#sticky) return { refuse: this.#sticky };
    let current = message;
    let changed = false;
    let quarantine: string | undefined;
    for (const slot of this.#live()) {
      const { headers, body } = splitMessage(current);
      let result;
      try {
        result = await slot.session!.content(headers, body, queueId);
      } catch (err) {
        this.#unavailable(slot, err);
        if (this.#sticky) return { refuse: this.#sticky };
        continue;
      }
      const { verdict, changes } = result;
      if (verdict.kind === "reject" || verdict.kind === "tempfail") {
        this.#log(slot, verdict);
        return { refuse: reply(verdict.code, ...splitText(verdict.text)) };
      }
      if (verdict.kind === "discard") {
        this.#log(slot, verdict);
        return { discard: true };
      }
      const q = changes.find((c) => c.kind === "quarantine");
      if (q && q.kind === "quarantine") quarantine = q.reason || `milter ${slot.name}`;
      const next = applyChanges(current, changes);
      if (next) {
        current = next;
        changed = true;
      }
    }
    return { ...(changed ? { content: current } : {}), ...(quarantine ? { quarantine } : {}) };
  }

  /** The transaction ended (RSET, or after the message): milters forget it. */
  async reset(): Promise<void> {
    for (const slot of this.#live()) await slot.session!.abort();
    for (const slot of this.#slots) slot.done = false;
  }

  /** QUIT to every milter. */
  async close(): Promise<void> {
    for (const slot of this.#slots) await slot.session?.quit().catch(() => {});
  }

  #live(): Slot[] {
    return this.#slots.filter((s) => s.session && !s.acceptedAll && !s.done);
  }

  /**
   * Runs one step on one milter. Connection-level steps (connect, HELO) make
   * a refusal stick to the session; transaction steps return it.
   */
  async #each(
    slot: Slot,
    step: (s: MilterSession) => Promise<Verdict>,
    sessionWide: boolean,
  ): Promise<Reply | null> {
    let v: Verdict;
    try {
      v = await step(slot.session!);
    } catch (err) {
      this.#unavailable(slot, err);
      return this.#sticky;
    }
    if (v.kind === "continue") return null;
    if (v.kind === "accept") {
      if (sessionWide) slot.acceptedAll = true;
      else slot.done = true;
      return null;
    }
    this.#log(slot, v);
    if (v.kind === "discard") {
      slot.done = true; // a discard before DATA: the message is dropped at its end
      return null;
    }
    const r = reply(v.code, ...splitText(v.text));
    if (sessionWide) this.#sticky = r;
    return r;
  }

  #unavailable(slot: Slot, err: unknown): void {
    const why = err instanceof MilterUnavailable ? err.message : String(err);
    slot.session?.close();
    slot.session = null;
    const action = this.#s.defaultAction;
    logWarn("milter unavailable", { milter: slot.name, error: why, action });
    if (action === "tempfail") {
      this.#sticky = reply(451, "4.7.1", "Service unavailable - try again later");
    } else if (action === "reject") {
      this.#sticky = reply(550, "5.7.1", "Command rejected");
    }
  }

  #log(slot: Slot, v: Verdict): void {
    logWarn("milter", {
      milter: slot.name,
      verdict: v.kind,
      ...("text" in v ? { text: `${v.code} ${v.text}` } : {}),
    });
  }
}

/** "5.7.1 Some text" → the enhanced code and the text (a bare text gets a code by class). */
function splitText(text: string): [string, string] {
  const m = /^([245]\.\d{1,3}\.\d{1,3}) (.*)$/s.exec(text);
  return m ? [m[1], m[2]] : ["5.7.1", text];
}
