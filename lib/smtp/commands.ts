/**
 * The server's command table: each verb has a check (is it allowed in this
 * state?) and a run (what it does), returning a Reply value; one place in
 * the session writes replies. Verbs come from a fixed table, never from a
 * method name built out of client input (STYLE item 2; cf. OpenSMTPD's
 * commands[] and Postfix's smtpd_cmd_table).
 */
import type { RecipientSpec } from "../spool/records.ts";
import type { Config } from "../config/types.ts";
import { parseMailFrom, parseRcptTo, type Verb } from "./command.ts";
import { checkRecipient } from "./policy.ts";
import { type Reply, reply } from "./reply.ts";

/** The state of one server session. */
export interface SessionState {
  /** Set by HELO/EHLO; null before. */
  helo: string | null;
  esmtp: boolean;
  /** The reverse-path of the current transaction; null when none is open. */
  from: string | null;
  mailParams: Map<string, string | null>;
  recipients: RecipientSpec[];
  /** Set by a DATA command that was accepted; the session then reads message data. */
  dataPending: boolean;
  clientAddress: string;
}

/** A fresh session state for a client. */
export function newSessionState(clientAddress: string): SessionState {
  return {
    helo: null,
    esmtp: false,
    from: null,
    mailParams: new Map(),
    recipients: [],
    dataPending: false,
    clientAddress,
  };
}

/** Ends the current mail transaction (RSET, HELO, after DATA). */
export function resetTransaction(s: SessionState): void {
  s.from = null;
  s.mailParams = new Map();
  s.recipients = [];
  s.dataPending = false;
}

interface CommandSpec {
  /** Null when the command may run now, else the reply refusing it. */
  check: (s: SessionState) => Reply | null;
  run: (s: SessionState, arg: string, cfg: Config) => Reply;
}

const OK = (text = "Ok"): Reply => reply(250, "2.0.0", text);
const badSequence = (text: string): Reply => reply(503, "5.5.1", text);
const always = () => null;
const needHelo = (s: SessionState) => s.helo ? null : badSequence("Error: send HELO/EHLO first");

/** A HELO/EHLO argument: a domain or address literal; anything printable is tolerated as the name. */
function validHeloArg(arg: string): boolean {
  return /^[\x21-\x7e]{1,255}$/.test(arg);
}

function runHelo(s: SessionState, arg: string, cfg: Config, esmtp: boolean): Reply {
  const verb = esmtp ? "EHLO" : "HELO";
  if (!validHeloArg(arg)) return reply(501, "5.5.4", `Syntax: ${verb} hostname`);
  resetTransaction(s);
  s.helo = arg;
  s.esmtp = esmtp;
  if (!esmtp) return reply(250, undefined, cfg.hostname);
  // RFC 2034 §3: no enhanced codes on the EHLO response.
  return reply(250, undefined, [
    cfg.hostname,
    "PIPELINING",
    `SIZE ${cfg.limits.messageSize}`,
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
  ]);
}

function runMail(s: SessionState, arg: string, cfg: Config): Reply {
  const parsed = parseMailFrom(arg);
  if ("code" in parsed) return parsed;
  for (const [key, value] of parsed.params) {
    if (!s.esmtp) return reply(555, "5.5.4", "MAIL parameters need EHLO");
    if (key === "SIZE") {
      // RFC 1870 §6.2: refuse early when the declared size is over the limit.
      if (value === null || !/^\d{1,20}$/.test(value)) {
        return reply(501, "5.5.4", "Bad SIZE parameter");
      }
      if (Number(value) > cfg.limits.messageSize) {
        return reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
      }
    } else if (key === "BODY") {
      // RFC 6152: 8BITMIME; content is stored as received either way.
      if (value !== "7BIT" && value !== "8BITMIME") {
        return reply(501, "5.5.4", "Bad BODY parameter");
      }
    } else {
      return reply(555, "5.5.4", `Unsupported MAIL parameter ${key}`);
    }
  }
  s.from = parsed.address;
  s.mailParams = parsed.params;
  return OK();
}

function runRcpt(s: SessionState, arg: string, cfg: Config): Reply {
  const parsed = parseRcptTo(arg);
  if ("code" in parsed) return parsed;
  if (parsed.params.size > 0) {
    const [key] = parsed.params.keys();
    return reply(555, "5.5.4", `Unsupported RCPT parameter ${key}`);
  }
  if (s.recipients.length >= cfg.limits.recipients) {
    // RFC 5321 §4.5.3.1.10: 452 tells the client to send the rest in another transaction.
    return reply(452, "4.5.3", "Error: too many recipients");
  }
  const refusal = checkRecipient(cfg, { address: parsed.address, clientAddress: s.clientAddress });
  if (refusal) return refusal;
  s.recipients.push({ address: parsed.address });
  return OK();
}

/** The command table. */
export const COMMANDS: Record<Verb, CommandSpec> = {
  HELO: { check: always, run: (s, arg, cfg) => runHelo(s, arg, cfg, false) },
  EHLO: { check: always, run: (s, arg, cfg) => runHelo(s, arg, cfg, true) },
  MAIL: {
    check: (s) =>
      needHelo(s) ?? (s.from !== null ? badSequence("Error: nested MAIL command") : null),
    run: runMail,
  },
  RCPT: {
    check: (s) => needHelo(s) ?? (s.from === null ? badSequence("Error: need MAIL command") : null),
    run: runRcpt,
  },
  DATA: {
    check: (s) =>
      needHelo(s) ??
        (s.from === null
          ? badSequence("Error: need MAIL command")
          : s.recipients.length === 0
          ? reply(554, "5.5.1", "Error: no valid recipients")
          : null),
    run: (s, arg) => {
      if (arg !== "") return reply(501, "5.5.4", "Syntax: DATA");
      s.dataPending = true;
      return reply(354, undefined, "End data with <CR><LF>.<CR><LF>");
    },
  },
  RSET: {
    check: always,
    run: (s, arg) => {
      if (arg !== "") return reply(501, "5.5.4", "Syntax: RSET");
      resetTransaction(s);
      return OK();
    },
  },
  NOOP: { check: always, run: () => OK() },
  QUIT: { check: always, run: () => ({ ...reply(221, "2.0.0", "Bye"), close: true }) },
  // RFC 5321 §3.5.3: 252 when we will not verify but will try delivery.
  VRFY: {
    check: always,
    run: (_s, arg) =>
      arg === ""
        ? reply(501, "5.5.4", "Syntax: VRFY address")
        : reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"),
  },
  EXPN: { check: always, run: () => reply(502, "5.5.1", "Error: EXPN is not supported") },
  HELP: {
    check: always,
    run: () => reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"),
  },
  STARTTLS: { check: always, run: () => reply(502, "5.5.1", "Error: command not implemented") },
  AUTH: { check: always, run: () => reply(502, "5.5.1", "Error: command not implemented") },
  BDAT: { check: always, run: () => reply(502, "5.5.1", "Error: command not implemented") },
  LHLO: { check: always, run: () => reply(500, "5.5.1", "Error: LHLO is for LMTP") },
};
