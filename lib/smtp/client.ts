/**
 * The outgoing SMTP/LMTP client's public face: the message and result
 * types, and sendMessage(), which connects, runs one session
 * (client_session.ts) for one message and says, per recipient, whether it
 * was delivered, deferred or failed. Trouble on the network or in the
 * protocol never throws: it becomes a temporary outcome, so the queue
 * manager retries and a message is never lost (delivered at least once).
 * Delivery with reuse of sessions goes through lib/deliver/smtp.ts and the
 * connection cache instead.
 */
import { isIP } from "node:net";
import { printable } from "./client_reply.ts";
import { unsendableAddress } from "./client_params.ts";
import { Conn } from "../net/conn.ts";
import type { Wire } from "./client_conn.ts";
import { SessionEnd, type SessionOptions, SmtpSession } from "./client_session.ts";

/** Where to deliver, and the session's deadlines. */
export interface SmtpTarget {
  host: string;
  port: number;
  /** A unix socket path instead of host:port (LMTP). */
  socket?: string;
  /** Our name for EHLO/HELO. */
  helo: string;
  connectTimeoutMs: number;
  /** Deadline for each reply, and for each write to be taken by the peer. */
  replyTimeoutMs: number;
  lmtp?: boolean;
  /** The host's name when `host` is an address from DNS (certificate checks, logs). */
  servername?: string;
  tls?: SessionOptions["tls"];
  ca?: string[];
  authUser?: string;
  authPassword?: string;
  /** Checks a handshake beyond node:tls (DANE, MTA-STS testing): a refusal text or null (lib/tlspolicy). */
  tlsCheck?: SessionOptions["tlsCheck"];
  /** Told how the session's TLS went, for TLS-RPT (lib/tlspolicy/policy.ts). */
  tlsReport?: (r: { tls: boolean; end?: SessionEnd }) => void;
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
  /** The message was received with BODY=8BITMIME (RFC 6152). */
  body8bit?: boolean;
  /** The message needs SMTPUTF8 (RFC 6531): received with it, or has UTF-8 addresses. */
  smtputf8?: boolean;
  /** DSN RET and ENVID (RFC 3461 §4.3, §4.4), passed on when the server offers DSN. */
  ret?: "FULL" | "HDRS";
  envid?: string;
  /** Per recipient (same order): NOTIFY and ORCPT (RFC 3461 §4.1, §4.2). */
  rcptParams?: ({ notify?: string[]; orcpt?: string } | undefined)[];
  /** RFC 8689 REQUIRETLS: verified TLS on every hop, and the next hop must offer it. */
  requireTls?: boolean;
  /**
   * Called the moment the server's reply after the content settles
   * recipients (once for SMTP's single reply, once per LMTP reply), before
   * the session does anything else, so the caller can journal a delivery
   * the peer already holds without waiting for QUIT or the cache: the
   * shorter that wait, the fewer copies a crash sends twice. Indexes are
   * into `recipients`; the same results also come back from send().
   * `dsn` says whether the server offered DSN (as SendResult.dsn), which
   * decides the success notice of a delivered recipient.
   */
  onResults?: (settled: SettledResult[], relay: string, dsn: boolean) => void;
}

/** A recipient's result reported through OutgoingMessage.onResults. */
export interface SettledResult {
  /** Index into OutgoingMessage.recipients. */
  index: number;
  result: RecipientResult;
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
  /** Nobody was answered by a server: another server of the destination may be tried. */
  tryNext?: boolean;
  /** The server offered DSN (RFC 3461), so the NOTIFY/ORCPT/RET/ENVID requests went on with the message. */
  dsn?: boolean;
}

/** "host[ip]:port" (or the socket path) for texts and logs. */
export function relayName(
  target: { host: string; port: number; socket?: string; servername?: string },
  ip?: string,
): string {
  if (target.socket) return target.socket;
  const name = target.servername ?? target.host;
  return `${name}[${ip ?? (isIP(target.host) ? target.host : "unknown")}]:${target.port}`;
}

/** Connects to the target; throws SessionEnd (4.4.1, early) when that fails. */
export async function connectTarget(target: SmtpTarget): Promise<Wire> {
  const { host, port, connectTimeoutMs } = target;
  try {
    return await Conn.connectTo(
      target.socket ? { path: target.socket } : { host, port },
      connectTimeoutMs,
    );
  } catch (err) {
    const e = err as Error & { code?: string };
    const where = target.socket ?? `${host}:${port}`;
    const text = e.code === "ECONNREFUSED"
      ? `Connection refused by ${where}`
      : e.code === undefined
      ? e.message
      : `Cannot connect to ${where}: ${e.message}`;
    // RFC 3463 §3.5: X.4.1 "No answer from host".
    throw new SessionEnd({
      outcome: "deferred",
      code: 0,
      dsn: "4.4.1",
      text: printable(text, 500),
      usable: false,
      early: true,
    });
  }
}

/** Opens a session on the target: connect, greeting, hello, STARTTLS, AUTH. Throws SessionEnd. */
export async function openSession(target: SmtpTarget): Promise<SmtpSession> {
  const wire = await connectTarget(target);
  return await SmtpSession.open(wire, {
    helo: target.helo,
    lmtp: target.lmtp,
    tls: target.tls ?? "none",
    servername: target.servername ?? target.host,
    ca: target.ca,
    authUser: target.authUser,
    authPassword: target.authPassword,
    tlsCheck: target.tlsCheck,
    replyTimeoutMs: target.replyTimeoutMs,
    relay: relayName(target, wire.remoteAddress || undefined),
  });
}

/** Every recipient gets the same outcome from a session end. */
export function endResults(msg: OutgoingMessage, end: SessionEnd): RecipientResult[] {
  return msg.recipients.map((address) => ({
    address,
    outcome: end.outcome,
    code: end.code,
    dsn: end.dsn,
    text: end.message,
  }));
}

/**
 * Delivers msg to target in one session, then QUIT. Never throws for
 * network or protocol trouble: every recipient gets an outcome.
 */
export async function sendMessage(target: SmtpTarget, msg: OutgoingMessage): Promise<SendResult> {
  const helo = target.helo;
  // deno-lint-ignore no-control-regex
  if (!helo || /[\x00-\x20\x7f<>]/.test(helo)) {
    const end = new SessionEnd({
      outcome: "deferred",
      code: 0,
      dsn: "4.3.5",
      text: `Invalid HELO name ${JSON.stringify(helo)}`,
      usable: false,
    });
    return { relay: relayName(target), recipients: endResults(msg, end) };
  }
  // Addresses refused locally need no connection at all.
  if (
    msg.recipients.every((a) => a === "" || unsendableAddress(a)) || unsendableAddress(msg.from)
  ) {
    const early = msg.recipients.map((address) => ({
      address,
      outcome: "failed" as const,
      code: 0,
      dsn: unsendableAddress(msg.from) ? "5.1.7" : "5.1.3",
      text: unsendableAddress(msg.from)
        ? `Invalid sender address ${JSON.stringify(msg.from)}`
        : `Invalid recipient address ${JSON.stringify(address)}`,
    }));
    return { relay: relayName(target), recipients: early };
  }
  let session: SmtpSession;
  try {
    session = await openSession(target);
  } catch (err) {
    if (!(err instanceof SessionEnd)) throw err;
    return { relay: relayName(target), recipients: endResults(msg, err), tryNext: err.early };
  }
  const result = await session.send(msg);
  await session.quit();
  return {
    relay: session.relay,
    recipients: result.recipients,
    tryNext: result.tryNext,
    dsn: session.extensions.has("DSN"),
  };
}
