/**
 * The envelope of a queued message: what the journal's first record holds
 * (lib/spool/records.ts) and what lib/spool/envelope_check.ts validates. Its
 * own module so the validator and the journal reader share the shape without
 * importing each other.
 */

/** A recipient as given in RCPT TO, with its DSN parameters (RFC 3461). */
export interface RecipientSpec {
  address: string;
  orcpt?: string;
  notify?: string[];
}

/** Everything known about a message when DATA ends. */
export interface Envelope {
  id: string;
  /** "" is the null sender. */
  from: string;
  recipients: RecipientSpec[];
  /** Epoch milliseconds. */
  received: number;
  client: { address: string; helo: string; auth?: string };
  /** "SMTP" | "ESMTP" (or the LMTP/submission variants). */
  protocol: string;
  /** Content bytes. */
  size: number;
  params?: Record<string, string>;
}
