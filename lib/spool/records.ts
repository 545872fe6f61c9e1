/**
 * The control journal: one JSON object per line, the envelope first, then one
 * record per delivery result. Replaying the records gives the message state,
 * so retry state lives in the file (readable with `cat`), not in its name.
 * Parsing is strict except for the one damage a crash can cause: a torn last
 * record, or a torn record that a later append marked with TORN_MARK.
 * The envelope record is held to what the SMTP server accepts
 * (lib/spool/envelope_check.ts) whenever it is written or read: a spool file
 * edited by hand or damaged cannot put a field on the wire that no SMTP
 * client could have sent.
 */
import { checkEnvelope } from "./envelope_check.ts";
import type { Envelope } from "./envelope.ts";

/** A journal that cannot be read: not JSON, a bad record, a bad envelope. Names the line. */
export class JournalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JournalError";
  }
}

export type { Envelope, RecipientSpec } from "./envelope.ts";

/** One journal line. `rcpt` is the index into `envelope.recipients`. */
export type JournalRecord =
  | ({ t: "envelope" } & Envelope)
  | {
    t: "delivered";
    rcpt: number;
    at: number;
    dsn: string;
    text: string;
    relay: string;
    /**
     * Absent: delivered to its final destination. "passed": handed to a
     * server that took the DSN request on (RFC 3461 §5.2.2: no success
     * notice from here); "relayed": to one without DSN (§5.2.3).
     */
    hop?: "passed" | "relayed";
  }
  | {
    t: "deferred";
    rcpt: number;
    at: number;
    until: number;
    dsn: string;
    text: string;
    relay?: string;
  }
  | { t: "failed"; rcpt: number; at: number; dsn: string; text: string; relay?: string }
  /** The sender was told about this recipient (a bounce, delay warning or success notice, queued as `id`). */
  | { t: "notified"; rcpt: number; at: number; action: NoticeAction; id: string };

/** The RFC 3464 actions skiff reports. */
export type NoticeAction = "failed" | "delayed" | "delivered" | "relayed";

/** Where one recipient stands. */
export type RecipientStatus = "pending" | "deferred" | "delivered" | "failed";

/** One recipient's state after replay. */
export interface RecipientState {
  index: number;
  address: string;
  status: RecipientStatus;
  /** Count of deferred records. */
  attempts: number;
  /** Epoch ms; 0 = now. 0 also for final recipients. */
  nextAttempt: number;
  dsn?: string;
  text?: string;
  /** The result records for this recipient, in journal order. */
  history: JournalRecord[];
  /** A bounce (action "failed") covering this recipient was queued. */
  bounced?: boolean;
  /** A delay warning (action "delayed") covering this recipient was queued. */
  warned?: boolean;
  /** A success notice (action "delivered" or "relayed", NOTIFY=SUCCESS) was queued. */
  succeeded?: boolean;
}

/** A message's state after replay. */
export interface MessageState {
  envelope: Envelope;
  recipients: RecipientState[];
  /** Every recipient is delivered or failed. */
  done: boolean;
  /** Min nextAttempt over non-final recipients; 0 (finish now) when done. */
  nextAttempt: number;
}

/**
 * Appended to a torn last line by the next append (which cannot know how
 * much of it is missing), so the line is complete and known to be ignorable.
 * JSON.stringify never emits a raw tab, so no real record can end this way.
 */
export const TORN_MARK = "\t#torn";

const encoder = new TextEncoder();

/**
 * Whether an append of `records` must be durable before the caller goes on.
 * A deferral only says when to try again: losing it in a power loss makes
 * the next attempt come earlier and count one attempt fewer (the queue
 * lifetime runs from the envelope's `received`, a delay warning needs its
 * own `notified` record, which is durable), so it needs no sync of its own
 * and rides on the next one anyone makes. Postfix does not sync its deferral
 * bookkeeping either. Results whose loss would deliver again (`delivered`,
 * `failed`) or notify again (`notified`) must be synced.
 */
export function mustSync(records: JournalRecord[]): boolean {
  return records.some((r) => r.t !== "deferred");
}

/**
 * The bytes of `records` as journal lines, each ending in "\n". Every record
 * is validated first, so the spool never writes a line it cannot read back.
 * JSON.stringify escapes CR, LF and other controls, so no envelope string
 * can break the one-record-per-line format.
 */
export function encodeRecords(records: JournalRecord[]): Uint8Array {
  let text = "";
  for (const r of records) {
    checkRecord(r);
    text += JSON.stringify(r) + "\n";
  }
  return encoder.encode(text);
}

/**
 * A complete journal line that is not a record: one ending in TORN_MARK (a
 * torn write repaired by a later append), or one holding a NUL byte, a
 * write lost in a power loss (JSON.stringify never emits one; only an
 * unsynced append, deferrals under mustSync, can be lost). Every reader of
 * journals skips exactly these.
 */
export function isLostLine(line: string): boolean {
  return line.endsWith(TORN_MARK) || line.includes("\0");
}

/**
 * The records in a journal's text. A last line without "\n" is a torn write
 * and ignored (even if it parses: the writer never finished it); a complete
 * line ending in TORN_MARK is a torn write repaired by a later append, and a
 * line holding a NUL byte is a lost write: both ignored. Any other line that
 * is not a valid record throws, naming its line.
 */
export function parseJournal(text: string): JournalRecord[] {
  const lines = text.split("\n");
  lines.pop(); // "" after the final "\n", or a torn (unterminated) fragment
  const records: JournalRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (isLostLine(line)) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new JournalError(`Journal line ${i + 1} is not JSON: ${preview(line)}`);
    }
    try {
      checkRecord(value);
    } catch (e) {
      throw new JournalError(`Journal line ${i + 1}: ${(e as Error).message}`);
    }
    records.push(value as JournalRecord);
  }
  return records;
}

/**
 * The message state from its records (pure). The first record must be the
 * envelope and the only one. A final result (delivered/failed) is sticky: a
 * later record for that recipient is kept in its history but cannot make it
 * pending again, so a delivered recipient is never sent to twice by replay.
 */
export function replay(records: JournalRecord[]): MessageState {
  const [first, ...rest] = records;
  if (first?.t !== "envelope") {
    throw new JournalError("Journal does not start with an envelope record");
  }
  const { t: _t, ...envelope } = first;
  const recipients: RecipientState[] = envelope.recipients.map((r, index) => ({
    index,
    address: r.address,
    status: "pending",
    attempts: 0,
    nextAttempt: 0,
    history: [],
  }));
  return fold(envelope, recipients, rest);
}

/**
 * The state after `records` were appended to the journal `state` was read
 * from: exactly what replay() of the whole journal gives (each record
 * concerns one recipient, so the order across recipients does not matter).
 * The single writer of a journal (the queue manager) uses it instead of
 * reading back what it just wrote. `state` is not changed.
 */
export function applyRecords(state: MessageState, records: JournalRecord[]): MessageState {
  const recipients = state.recipients.map((r) => ({ ...r, history: [...r.history] }));
  return fold(state.envelope, recipients, records);
}

function fold(
  envelope: MessageState["envelope"],
  recipients: RecipientState[],
  records: JournalRecord[],
): MessageState {
  for (const r of records) {
    if (r.t === "envelope") {
      throw new JournalError(`Journal of ${envelope.id} has a second envelope`);
    }
    const rcpt = recipients[r.rcpt];
    if (!rcpt) {
      throw new JournalError(
        `Journal of ${envelope.id} has a result for recipient ${r.rcpt} of ${recipients.length}`,
      );
    }
    rcpt.history.push(r);
    if (r.t === "notified") {
      if (r.action === "failed") rcpt.bounced = true;
      else if (r.action === "delayed") rcpt.warned = true;
      else rcpt.succeeded = true;
      continue;
    }
    if (rcpt.status === "delivered" || rcpt.status === "failed") continue;
    if (r.t === "deferred") {
      rcpt.attempts++;
      rcpt.nextAttempt = r.until;
    } else {
      rcpt.nextAttempt = 0;
    }
    rcpt.status = r.t;
    rcpt.dsn = r.dsn;
    rcpt.text = r.text;
  }
  const open = recipients.filter((r) => r.status === "pending" || r.status === "deferred");
  return {
    envelope,
    recipients,
    done: open.length === 0,
    nextAttempt: open.length === 0 ? 0 : Math.min(...open.map((r) => r.nextAttempt)),
  };
}

function preview(line: string): string {
  return JSON.stringify(line.length > 60 ? line.slice(0, 60) + "..." : line);
}

type Check =
  | "string"
  | "number"
  | "action"
  | "hop?"
  | "string?"
  | "string[]?"
  | "params?"
  | "client"
  | "rcpts";

const RESULT_FIELDS: Record<string, Check> = {
  rcpt: "number",
  at: "number",
  dsn: "string",
  text: "string",
  relay: "string?",
};

const SHAPES: Record<JournalRecord["t"], Record<string, Check>> = {
  envelope: {
    id: "string",
    from: "string",
    recipients: "rcpts",
    received: "number",
    client: "client",
    protocol: "string",
    size: "number",
    params: "params?",
  },
  delivered: { ...RESULT_FIELDS, relay: "string", hop: "hop?" },
  deferred: { ...RESULT_FIELDS, until: "number" },
  failed: RESULT_FIELDS,
  notified: { rcpt: "number", at: "number", action: "action", id: "string" },
};

/** Throws unless `value` has the shape of a JournalRecord. */
function checkRecord(value: unknown): asserts value is JournalRecord {
  if (!isObject(value)) throw new Error("Record is not an object");
  const t = value.t;
  if (typeof t !== "string" || !Object.hasOwn(SHAPES, t)) {
    throw new Error(`Record has unknown type ${JSON.stringify(t)}`);
  }
  for (const [key, check] of Object.entries(SHAPES[t as JournalRecord["t"]])) {
    if (!fits(value[key], check)) throw new Error(`Record "${t}" has a bad ${key}`);
  }
  if (t !== "envelope" && !Number.isSafeInteger(value.rcpt)) {
    throw new Error(`Record "${t}" has a bad rcpt`);
  }
  // The shape is right; now each field as the SMTP server would take it (EnvelopeError).
  if (t === "envelope") checkEnvelope(value as unknown as Envelope);
}

function fits(v: unknown, check: Check): boolean {
  switch (check) {
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "action":
      return v === "failed" || v === "delayed" || v === "delivered" || v === "relayed";
    case "hop?":
      return v === undefined || v === "passed" || v === "relayed";
    case "string?":
      return v === undefined || typeof v === "string";
    case "string[]?":
      return v === undefined || (Array.isArray(v) && v.every((s) => typeof s === "string"));
    case "params?":
      return v === undefined ||
        (isObject(v) && Object.values(v).every((s) => typeof s === "string"));
    case "client":
      return isObject(v) && typeof v.address === "string" && typeof v.helo === "string" &&
        fits(v.auth, "string?");
    case "rcpts":
      return Array.isArray(v) &&
        v.every((r) =>
          isObject(r) && typeof r.address === "string" && fits(r.orcpt, "string?") &&
          fits(r.notify, "string[]?")
        );
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
