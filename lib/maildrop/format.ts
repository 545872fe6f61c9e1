/**
 * The maildrop file: what the sendmail shim leaves when no manager runs.
 * A first line `skiff-maildrop 1`, one JSON line with the envelope the user
 * asked for, then the message as CRLF lines. Nothing in it is trusted for
 * identity: the pickup takes the sender's identity from the file's owner.
 * Completeness is the owner-execute bit (set last, after fdatasync), as in
 * Postfix's queue files, so a half-written drop is never picked up.
 * Every envelope field is held to what the SMTP server accepts: a drop is
 * as untrusted as a network client (issue 9: a NOTIFY holding CRLF and
 * commands once reached the relay as a forged transaction).
 */
import { concatBytes } from "../sys/bytes.ts";
import type { RecipientSpec } from "../spool/records.ts";
import {
  checkParams,
  checkRecipient,
  checkSender,
  EnvelopeError,
} from "../spool/envelope_check.ts";

/** The envelope a submitter asked for. */
export interface DropEnvelope {
  /** Envelope sender as given (-f), "" for the null sender. */
  from: string;
  recipients: RecipientSpec[];
  /** RET, ENVID, BODY (RFC 3461, RFC 6152). */
  params?: Record<string, string>;
}

const MAGIC = "skiff-maildrop 1\n";
/** The MAIL parameters a submitter may ask for (sendmail -R, -V, -B). */
const DROP_PARAMS = ["RET", "ENVID", "BODY"] as const;
const encoder = new TextEncoder();

/**
 * The file bytes for an envelope and message content. The envelope is
 * checked as the pickup will check it, so the submitter hears of a bad one
 * now (a MaildropError) instead of the pickup refusing the file later.
 */
export function encodeDrop(env: DropEnvelope, content: Uint8Array): Uint8Array {
  checkDrop(JSON.parse(JSON.stringify(env)));
  const head = encoder.encode(MAGIC + JSON.stringify(env) + "\n");
  return concatBytes([head, content]);
}

/** A maildrop file that cannot be queued; the message names what is wrong (and `field`, if one). */
export class MaildropError extends Error {
  /** The envelope field at fault ("recipient 1 NOTIFY", "params.ENVID"), or "" for the format. */
  readonly field: string;
  constructor(message: string, field = "") {
    super(message);
    this.name = "MaildropError";
    this.field = field;
  }
}

/** Parses a maildrop file; throws a MaildropError naming what is wrong. */
export function decodeDrop(bytes: Uint8Array): { envelope: DropEnvelope; content: Uint8Array } {
  const magic = encoder.encode(MAGIC);
  if (bytes.length < magic.length || !magic.every((b, i) => bytes[i] === b)) {
    throw new MaildropError("Not a maildrop file (bad first line)");
  }
  const nl = bytes.indexOf(10, magic.length);
  if (nl < 0) throw new MaildropError("Maildrop file has no envelope line");
  let v: unknown;
  try {
    v = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(magic.length, nl)),
    );
  } catch {
    throw new MaildropError("Maildrop envelope line is not JSON in UTF-8");
  }
  return { envelope: checkDrop(v), content: bytes.subarray(nl + 1) };
}

/**
 * The envelope's shape, then every field as the SMTP server would take it
 * (lib/spool/envelope_check.ts): the sender as in MAIL FROM, each recipient
 * as in RCPT TO (fully qualified, as the shim writes them) with NOTIFY, and
 * RET, ENVID and BODY as MAIL parameters. Unknown keys are refused too.
 */
export function checkDrop(v: unknown): DropEnvelope {
  const bad = (what: string): never => {
    throw new MaildropError(`Maildrop envelope has a bad ${what}`, what);
  };
  if (typeof v !== "object" || v === null || Array.isArray(v)) return bad("shape");
  const e = v as Record<string, unknown>;
  const extra = Object.keys(e).find((k) => !["from", "recipients", "params"].includes(k));
  if (extra !== undefined) bad(`key ${JSON.stringify(extra)}`);
  if (typeof e.from !== "string") bad("from");
  if (!Array.isArray(e.recipients) || e.recipients.length === 0) bad("recipients");
  const recipients: RecipientSpec[] = (e.recipients as unknown[]).map((r, i) => {
    if (typeof r !== "object" || r === null || Array.isArray(r)) return bad(`recipient ${i + 1}`);
    const x = r as Record<string, unknown>;
    if (Object.keys(x).some((k) => k !== "address" && k !== "notify")) bad(`recipient ${i + 1}`);
    if (typeof x.address !== "string") return bad(`recipient ${i + 1} address`);
    if (x.notify !== undefined) {
      if (!Array.isArray(x.notify) || !x.notify.every((n) => typeof n === "string")) {
        bad(`recipient ${i + 1} NOTIFY`);
      }
    }
    return {
      address: x.address,
      ...(x.notify !== undefined ? { notify: x.notify as string[] } : {}),
    };
  });
  let params: Record<string, string> | undefined;
  if (e.params !== undefined) {
    if (typeof e.params !== "object" || e.params === null || Array.isArray(e.params)) {
      bad("params");
    }
    params = {};
    for (const [k, val] of Object.entries(e.params as Record<string, unknown>)) {
      if (typeof val !== "string") bad(`params.${k}`);
      params[k] = val as string;
    }
  }
  const env = { from: e.from as string, recipients, ...(params ? { params } : {}) };
  try {
    checkSender(env.from);
    env.recipients.forEach((r, i) => checkRecipient(r, i + 1, { mailboxOnly: true }));
    if (params) checkParams(params, DROP_PARAMS);
  } catch (err) {
    if (!(err instanceof EnvelopeError)) throw err;
    throw new MaildropError(`Maildrop file: ${err.message}`, err.field);
  }
  return env;
}
