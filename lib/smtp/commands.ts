/**
 * The server's command table: each verb has a check (is it allowed in this
 * state?) and a run (what it does), returning a Reply value; one place in
 * the session writes replies. Verbs come from a fixed table, never from a
 * method name built out of client input (STYLE item 2; cf. OpenSMTPD's
 * commands[] and Postfix's smtpd_cmd_table). A command whose work needs the
 * socket (DATA, BDAT, STARTTLS, AUTH) leaves an Action in the state for the
 * session to perform after its reply.
 */
import type { RecipientSpec } from "../spool/records.ts";
import type { Config, LimitsConfig, ListenerConfig } from "../config/types.ts";
import { parseMailFrom, parseRcptTo, validHeloArg, type Verb } from "../wire/command.ts";
import { type MailParams, mailParams, rcptParams } from "../wire/params.ts";
import { checkRecipient, checkSender, type Identity, isLocalAddress } from "./policy.ts";
import { type Reply, reply } from "../wire/reply.ts";

/** Negotiated TLS, as recorded in the Received header. */
export interface TlsInfo {
  version: string;
  cipher: string;
}

/** Work the session does after writing a command's reply. */
export type Action =
  | { kind: "data" }
  /** RFC 3030: read `size` octets; `refuse` is the reply to give after reading them, if any. */
  | { kind: "bdat"; size: number; last: boolean; refuse?: Reply }
  | { kind: "starttls" }
  | { kind: "auth"; mechanism: "PLAIN" | "LOGIN"; initial: string | null };

/** The state of one server session. */
export interface SessionState {
  /** Set by HELO/EHLO/LHLO; null before. */
  helo: string | null;
  esmtp: boolean;
  /** The listener speaks LMTP (RFC 2033). */
  lmtp: boolean;
  /** The reverse-path of the current transaction; null when none is open. */
  from: string | null;
  mail: MailParams;
  recipients: RecipientSpec[];
  /** BDAT chunks were received in this transaction (DATA is then out of sequence). */
  bdat: boolean;
  /** Set by a command; the session performs it after the reply. */
  action: Action | null;
  /** Client IP address; "" on a unix socket. */
  clientAddress: string;
  identity: Identity | null;
  tls: TlsInfo | null;
}

/** What commands may consult besides the state. */
export interface CommandEnv {
  cfg: Config;
  listener: ListenerConfig;
  /** [limits] with the listener's overrides applied. */
  limits: LimitsConfig;
  /** STARTTLS is offered now (listener tls = "starttls", not yet under TLS). */
  canStartTls: boolean;
  /** AUTH is offered now (sasl listener, under TLS or plaintext allowed on loopback). */
  canAuth: boolean;
  /** Whether a local address names a known user (lib/route/verify.ts); absent: all are taken. */
  knownRecipient?: (address: string) => boolean;
  /** The spool's free space (lib/spool/space.ts); absent: not checked. */
  space?: { fits(size: number): boolean };
}

/** A fresh session state for a client. */
export function newSessionState(clientAddress: string, lmtp = false): SessionState {
  return {
    helo: null,
    esmtp: false,
    lmtp,
    from: null,
    mail: { smtputf8: false },
    recipients: [],
    bdat: false,
    action: null,
    clientAddress,
    identity: null,
    tls: null,
  };
}

/** Ends the current mail transaction (RSET, HELO, after DATA). */
export function resetTransaction(s: SessionState): void {
  s.from = null;
  s.mail = { smtputf8: false };
  s.recipients = [];
  s.bdat = false;
  s.action = null;
}

interface CommandSpec {
  /** Null when the command may run now, else the reply refusing it. */
  check: (s: SessionState, env: CommandEnv) => Reply | null;
  run: (s: SessionState, arg: string, env: CommandEnv) => Reply;
}

const OK = (text = "Ok"): Reply => reply(250, "2.0.0", text);
const badSequence = (text: string): Reply => reply(503, "5.5.1", text);
const notImplemented = (): Reply => reply(502, "5.5.1", "Error: command not implemented");
const always = () => null;
const needHelo = (s: SessionState) => s.helo ? null : badSequence("Error: send HELO/EHLO first");
const NON_ASCII = /[^\p{ASCII}]/u;

function runHelo(s: SessionState, arg: string, env: CommandEnv, verb: "HELO" | "EHLO" | "LHLO") {
  if (!validHeloArg(arg)) return reply(501, "5.5.4", `Syntax: ${verb} hostname`);
  resetTransaction(s);
  s.helo = arg;
  s.esmtp = verb !== "HELO";
  if (!s.esmtp) return reply(250, undefined, env.cfg.hostname);
  // RFC 2034 §3: no enhanced codes on the EHLO response.
  const lines = [
    env.cfg.hostname,
    "PIPELINING",
    `SIZE ${env.limits.messageSize}`,
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "DSN",
    "CHUNKING",
  ];
  if (env.canStartTls) lines.push("STARTTLS");
  // RFC 8689 §4: offered only where it can be taken, under TLS.
  if (s.tls) lines.push("REQUIRETLS");
  if (env.canAuth && !s.identity) lines.push("AUTH PLAIN LOGIN");
  return reply(250, undefined, lines);
}

function runMail(s: SessionState, arg: string, env: CommandEnv): Reply {
  const parsed = parseMailFrom(arg);
  if ("code" in parsed) return parsed;
  if (parsed.params.size > 0 && !s.esmtp) return reply(555, "5.5.4", "MAIL parameters need EHLO");
  const params = mailParams(parsed.params, { maxSize: env.limits.messageSize });
  if ("code" in params) return params;
  // RFC 6531 §3.4: a non-ASCII address needs the SMTPUTF8 parameter.
  if (NON_ASCII.test(parsed.address) && !params.smtputf8) {
    return reply(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8");
  }
  // RFC 8689 §4.1: REQUIRETLS is taken only over TLS (5.7.10 "encryption needed").
  if (params.requireTls && !s.tls) {
    return reply(530, "5.7.10", "REQUIRETLS needs a TLS session");
  }
  const refused = checkSender(env.cfg, env.listener, {
    address: parsed.address,
    identity: s.identity,
  });
  if (refused) return refused;
  // Refuse before the body is sent when it cannot fit (Postfix: 452 4.3.1, RFC 3463 4.3.1).
  if (env.space && !env.space.fits(params.size ?? env.limits.messageSize)) {
    return reply(452, "4.3.1", "Insufficient system storage");
  }
  s.from = parsed.address;
  s.mail = params;
  return OK();
}

function runRcpt(s: SessionState, arg: string, env: CommandEnv): Reply {
  const parsed = parseRcptTo(arg);
  if ("code" in parsed) return parsed;
  const params = rcptParams(parsed.params);
  if ("code" in params) return params;
  if (NON_ASCII.test(parsed.address) && !s.mail.smtputf8) {
    return reply(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8");
  }
  if (s.recipients.length >= env.limits.recipients) {
    // RFC 5321 §4.5.3.1.10: 452 tells the client to send the rest in another transaction.
    return reply(452, "4.5.3", "Error: too many recipients");
  }
  const refusal = checkRecipient(env.cfg, {
    address: parsed.address,
    clientAddress: s.clientAddress,
    identity: s.identity,
  });
  if (refusal) return refusal;
  // Backscatter: refuse an unknown local user now rather than bounce later. A fixed
  // destination on the listener (not the router) leaves that to the destination.
  if (
    env.knownRecipient && env.listener.destination === "router" &&
    isLocalAddress(env.cfg, parsed.address) && !env.knownRecipient(parsed.address)
  ) {
    return reply(
      550,
      "5.1.1",
      `<${parsed.address}>: Recipient address rejected: User unknown in local recipient table`,
    );
  }
  s.recipients.push({ address: parsed.address, ...params });
  return OK();
}

/** RFC 3030 §3: `BDAT chunk-size [LAST]`. */
function runBdat(s: SessionState, arg: string): Reply {
  const m = /^(\d{1,15})(?: +(LAST))?$/i.exec(arg);
  // Without a size the chunk cannot be skipped: a syntax error, the stream resyncs on lines.
  if (!m) return reply(501, "5.5.4", "Syntax: BDAT size [LAST]");
  const size = Number(m[1]);
  const last = m[2] !== undefined;
  // The chunk is read even when refused, so the session stays in step (RFC 3030 §2).
  const refuse = needHelo(s) ??
    (s.from === null
      ? badSequence("Error: need MAIL command")
      : s.recipients.length === 0
      ? reply(554, "5.5.1", "Error: no valid recipients")
      : undefined);
  s.action = { kind: "bdat", size, last, refuse: refuse ?? undefined };
  return OK(); // not sent: the session replies once the chunk is read
}

function runData(s: SessionState, arg: string): Reply {
  if (arg !== "") return reply(501, "5.5.4", "Syntax: DATA");
  s.action = { kind: "data" };
  return reply(354, undefined, "End data with <CR><LF>.<CR><LF>");
}

/** RFC 4954 §4: `AUTH mechanism [initial-response]`. */
function runAuth(s: SessionState, arg: string): Reply {
  const [mech, initial, extra] = arg.split(" ");
  const upper = mech?.toUpperCase();
  if (extra !== undefined || !mech) return reply(501, "5.5.4", "Syntax: AUTH mechanism");
  if (upper !== "PLAIN" && upper !== "LOGIN") {
    return reply(504, "5.5.4", "Unrecognized authentication type");
  }
  s.action = { kind: "auth", mechanism: upper, initial: initial ?? null };
  return OK(); // not sent: the session runs the exchange
}

/** The command table. */
export const COMMANDS: Record<Verb, CommandSpec> = {
  // RFC 2033 §4.1: an LMTP server answers LHLO only; SMTP servers do not know LHLO.
  HELO: {
    check: (s) => s.lmtp ? reply(500, "5.5.1", "Error: use LHLO") : null,
    run: (s, arg, env) => runHelo(s, arg, env, "HELO"),
  },
  EHLO: {
    check: (s) => s.lmtp ? reply(500, "5.5.1", "Error: use LHLO") : null,
    run: (s, arg, env) => runHelo(s, arg, env, "EHLO"),
  },
  LHLO: {
    check: (s) => s.lmtp ? null : reply(500, "5.5.1", "Error: LHLO is for LMTP"),
    run: (s, arg, env) => runHelo(s, arg, env, "LHLO"),
  },
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
          : s.bdat
          ? badSequence("Error: DATA after BDAT")
          : s.recipients.length === 0
          ? reply(554, "5.5.1", "Error: no valid recipients")
          : null),
    run: runData,
  },
  BDAT: { check: always, run: runBdat },
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
    run: () =>
      reply(214, "2.0.0", "Commands: EHLO HELO LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"),
  },
  STARTTLS: {
    // RFC 3207 §4: only when offered, not twice, and not inside a transaction.
    check: (s, env) =>
      !env.canStartTls ? notImplemented() : needHelo(s) ??
        (s.from !== null ? badSequence("Error: MAIL transaction in progress") : null),
    run: (s, arg) => {
      if (arg !== "") return reply(501, "5.5.4", "Syntax: STARTTLS");
      s.action = { kind: "starttls" };
      return reply(220, "2.0.0", "Ready to start TLS");
    },
  },
  AUTH: {
    // RFC 4954 §4: not offered, already authenticated, or inside a transaction.
    check: (s, env) =>
      !env.canAuth
        ? (env.listener.auth === "sasl"
          ? reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
          : notImplemented())
        : needHelo(s) ??
          (s.identity
            ? badSequence("Error: already authenticated")
            : s.from !== null
            ? badSequence("Error: MAIL transaction in progress")
            : null),
    run: runAuth,
  },
};
