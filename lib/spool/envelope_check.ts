/**
 * The one validator for envelopes that do not arrive over SMTP: maildrop
 * files (lib/maildrop/format.ts) and spool journals (lib/spool/records.ts,
 * on every read and every write). Each field is held to exactly what the
 * SMTP server accepts, by the same code: the stored value is written back
 * as the MAIL or RCPT argument it would have come from, run through
 * parseMailFrom/parseRcptTo (command.ts) and mailParams/rcptParams
 * (params.ts), and must come back unchanged. So a field that could not
 * have come in over SMTP — a NOTIFY holding "\r\nRSET\r\n...", an ENVID with
 * a control character, an address with a source route — cannot come in
 * through a file either (issue 9, finding 1). Errors name the field.
 */
import { isIP } from "node:net";
import type { Envelope, RecipientSpec } from "./envelope.ts";
import { isQueueId } from "./queue_id.ts";
import { DESTINATION } from "../config/listeners.ts";
import { parseMailbox, parseMailFrom, parseRcptTo, validHeloArg } from "../wire/command.ts";
import { encodeXtext, mailParams, rcptParams } from "../wire/params.ts";
import type { Reply } from "../wire/reply.ts";

/** An envelope field that the SMTP server would have refused; `field` names it. */
export class EnvelopeError extends Error {
  /** "from", "recipient 2 NOTIFY", "params.ENVID", "client.auth", ... */
  readonly field: string;
  constructor(field: string, detail: string) {
    super(`Bad envelope ${field}: ${detail}`);
    this.name = "EnvelopeError";
    this.field = field;
  }
}

/** Envelope protocols skiff itself writes for messages it makes (router.ts, bounce.ts). */
const ALIAS = "ALIAS";
/** The longest user name SASL LOGIN lets through (lib/auth/sasl.ts). */
const MAX_AUTH = 1024;

/**
 * A value quoted for an error text or log line: JSON quoting, plus \uXXXX
 * for what JSON leaves raw (DEL, C1 controls such as U+0085, line and
 * paragraph separators, bidi and other invisible format characters), so a
 * bad value can never break or disguise the line it is shown on.
 */
export function quote(v: unknown, max = 120): string {
  const s = (JSON.stringify(v) ?? String(v)).replace(
    /[\x7f-\x9f\u2028\u2029\p{Cf}\p{Cs}]/gu,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return s.length > max ? s.slice(0, max) + '..."' : s;
}
const show = (v: unknown) => quote(v);

function why(r: Reply): string {
  return `${r.code} ${r.enhanced ?? ""} ${[r.text].flat().join(" ")}`.replace(/ +/g, " ");
}

/** The sender: "" (null reverse-path) or what `MAIL FROM:<...>` accepts, unchanged. */
export function checkSender(from: string): void {
  if (from === "") return;
  const p = parseMailFrom(`FROM:<${from}>`);
  if ("code" in p) throw new EnvelopeError("from", `${show(from)} (${why(p)})`);
  if (p.address !== from || p.params.size > 0) {
    throw new EnvelopeError("from", `${show(from)} is not one plain address`);
  }
}

/** Options for recipients: what else skiff's own messages may hold. */
export interface RecipientRules {
  /** A message made by alias expansion (protocol ALIAS): local names and |program targets too. */
  alias?: boolean;
  /** Only "local@domain" (maildrop files: the shim qualifies every address). */
  mailboxOnly?: boolean;
}

/** One recipient with its NOTIFY and ORCPT; `n` is its 1-based position for errors. */
export function checkRecipient(r: RecipientSpec, n: number, rules: RecipientRules = {}): void {
  checkRecipientAddress(r.address, `recipient ${n}`, rules);
  if (r.notify !== undefined) {
    const field = `recipient ${n} NOTIFY`;
    if (!Array.isArray(r.notify) || r.notify.length === 0) {
      throw new EnvelopeError(field, "an empty list");
    }
    const got = rcptParam("NOTIFY", r.notify.join(","), field);
    // Compared item by item: ["SUCCESS,DELAY"] joins like two items but is not a list of values.
    if (got.notify?.join("\n") !== r.notify.join("\n")) {
      throw new EnvelopeError(field, `${show(r.notify)} is not a list of NOTIFY values`);
    }
  }
  if (r.orcpt !== undefined) {
    const field = `recipient ${n} ORCPT`;
    const semi = r.orcpt.indexOf(";");
    if (semi < 1) throw new EnvelopeError(field, `${show(r.orcpt)} has no address type`);
    const wire = `${r.orcpt.slice(0, semi)};${encodeXtext(r.orcpt.slice(semi + 1))}`;
    const got = rcptParam("ORCPT", wire, field);
    if (got.orcpt !== r.orcpt) {
      throw new EnvelopeError(field, `${show(r.orcpt)} is not stored as the server stores it`);
    }
  }
}

function checkRecipientAddress(address: string, field: string, rules: RecipientRules): void {
  if (rules.alias && address.startsWith("|")) return checkSpecial(address, field);
  if (rules.alias && !address.includes("@")) {
    // An unqualified local name from an aliases file ("bob"): a local part's grammar.
    if (parseMailbox(`${address}@localhost`)) return;
    throw new EnvelopeError(field, `${show(address)} is not a local name`);
  }
  const p = parseRcptTo(`TO:<${address}>`);
  if ("code" in p) throw new EnvelopeError(field, `${show(address)} (${why(p)})`);
  if (p.address !== address || p.params.size > 0) {
    throw new EnvelopeError(field, `${show(address)} is not one plain address`);
  }
  if (rules.mailboxOnly && !parseMailbox(address)) {
    throw new EnvelopeError(field, `${show(address)} is not local@domain`);
  }
}

function rcptParam(key: string, value: string, field: string) {
  const p = parseRcptTo(`TO:<postmaster> ${key}=${value}`);
  if ("code" in p) throw new EnvelopeError(field, `${show(value)} (${why(p)})`);
  const got = rcptParams(p.params);
  if ("code" in got) throw new EnvelopeError(field, `${show(value)} (${why(got)})`);
  return got;
}

/**
 * A |program or |file target that alias expansion wrote (router.ts
 * encodeSpecial): JSON with an absolute command or path, no control
 * character anywhere, and the user to run as.
 */
function checkSpecial(address: string, field: string): void {
  let spec: unknown;
  try {
    spec = JSON.parse(address.slice(1));
  } catch {
    throw new EnvelopeError(field, `${show(address)} is not a command or file target`);
  }
  const s = spec as Record<string, unknown>;
  const clean = (v: unknown) => typeof v === "string" && v !== "" && !/\p{Cc}/u.test(v);
  const command = Array.isArray(s?.command) && s.command.length > 0 &&
    s.command.every(clean) && (s.command[0] as string).startsWith("/");
  const file = clean(s?.file) && (s.file as string).startsWith("/");
  const u = s?.user as Record<string, unknown> | null | undefined;
  const user = u === null ||
    (typeof u === "object" && clean(u.name) && Number.isSafeInteger(u.uid) &&
      Number.isSafeInteger(u.gid));
  if (typeof spec !== "object" || spec === null || command === file || !user) {
    throw new EnvelopeError(field, `${show(address)} is not a command or file target`);
  }
}

/** Envelope params other than MAIL parameters: skiff's own, written by receive.ts. */
const OWN_PARAMS: Record<string, RegExp> = {
  destination: DESTINATION,
  peer_uid: /^\d{1,10}$/,
  peer_gid: /^\d{1,10}$/,
  peer_pid: /^\d{1,10}$/,
  // RFC 8689 REQUIRETLS, stored by receive.ts as "yes" (lib/tlspolicy enforces it).
  REQUIRETLS: /^yes$/,
};

/**
 * The stored MAIL parameters (BODY, SMTPUTF8, RET, ENVID, as receive.ts
 * writes them) and skiff's own keys; `allowed` limits the keys (maildrop).
 */
export function checkParams(params: Record<string, string>, allowed?: readonly string[]): void {
  for (const [key, value] of Object.entries(params)) {
    // The key is input too: quoted unless it is a plain name, so no error or log line carries a raw control.
    const field = `params.${/^[A-Za-z0-9_-]{1,40}$/.test(key) ? key : show(key)}`;
    if (typeof value !== "string") throw new EnvelopeError(field, "not a string");
    if (allowed && !allowed.includes(key)) throw new EnvelopeError(field, "not allowed here");
    if (Object.hasOwn(OWN_PARAMS, key)) {
      if (!OWN_PARAMS[key].test(value)) throw new EnvelopeError(field, show(value));
      continue;
    }
    if (!["BODY", "SMTPUTF8", "RET", "ENVID"].includes(key)) {
      throw new EnvelopeError(field, "unknown parameter");
    }
    // receive.ts stores SMTPUTF8 as "yes" and ENVID decoded.
    const wire = key === "SMTPUTF8"
      ? (value === "yes" ? "SMTPUTF8" : `SMTPUTF8=${value}`)
      : key === "ENVID"
      ? `ENVID=${encodeXtext(value)}`
      : `${key}=${value}`;
    const p = parseMailFrom(`FROM:<> ${wire}`);
    if ("code" in p) throw new EnvelopeError(field, `${show(value)} (${why(p)})`);
    const got = mailParams(p.params, { maxSize: Infinity });
    if ("code" in got) throw new EnvelopeError(field, `${show(value)} (${why(got)})`);
    const stored = {
      BODY: got.body,
      SMTPUTF8: got.smtputf8 ? "yes" : "",
      RET: got.ret,
      ENVID: got.envid,
    };
    if (stored[key as keyof typeof stored] !== value) {
      throw new EnvelopeError(field, `${show(value)} is not stored as the server stores it`);
    }
  }
}

/** The client the message came from, as receive.ts, pickup.ts and the queue write it. */
function checkClient(c: Envelope["client"]): void {
  if (c.address !== "" && c.address !== "unix" && isIP(c.address) === 0) {
    throw new EnvelopeError("client.address", show(c.address));
  }
  if (c.helo !== "" && !validHeloArg(c.helo)) throw new EnvelopeError("client.helo", show(c.helo));
  if (c.auth !== undefined) {
    // A user name from the credentials file or the passwd database: any printable text.
    if (c.auth === "" || c.auth.length > MAX_AUTH || /\p{Cc}/u.test(c.auth)) {
      throw new EnvelopeError("client.auth", show(c.auth));
    }
  }
}

/**
 * A whole spool envelope (the first journal record): ids, times and sizes,
 * the client, then sender, recipients and parameters as above. Throws an
 * EnvelopeError naming the first bad field.
 */
export function checkEnvelope(env: Envelope): void {
  if (!isQueueId(env.id)) throw new EnvelopeError("id", show(env.id));
  if (!(env.received >= 0)) throw new EnvelopeError("received", show(env.received));
  if (!Number.isSafeInteger(env.size) || env.size < 0) {
    throw new EnvelopeError("size", show(env.size));
  }
  if (!/^[A-Z0-9]{1,20}$/.test(env.protocol)) {
    throw new EnvelopeError("protocol", show(env.protocol));
  }
  checkClient(env.client);
  checkSender(env.from);
  if (env.recipients.length === 0) throw new EnvelopeError("recipients", "none");
  const rules = { alias: env.protocol === ALIAS };
  env.recipients.forEach((r, i) => checkRecipient(r, i + 1, rules));
  if (env.params !== undefined) checkParams(env.params);
}
