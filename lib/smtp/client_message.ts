/**
 * What the outgoing SMTP/LMTP client is given and what it reports: the
 * message to hand over and the per-recipient results. A module of its own so
 * client.ts (sendMessage) and client_session.ts / client_params.ts (the
 * session) share the types without importing each other.
 */

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
