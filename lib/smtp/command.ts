/**
 * Parses SMTP command lines, MAIL/RCPT paths and their ESMTP parameters
 * (RFC 5321 §4.1, RFC 6531 for UTF-8 addresses). Everything returned here
 * ends up in the spool's control file, so the grammar is applied strictly and
 * no control character (CR, LF, NUL, ...) ever survives into a result: a
 * client must not be able to inject records (the Exim "21Nails" class).
 */

import { type Reply, reply } from "./reply.ts";

/** The commands the server knows; anything else is reported as unknown. */
export type Verb =
  | "HELO"
  | "EHLO"
  | "MAIL"
  | "RCPT"
  | "DATA"
  | "RSET"
  | "NOOP"
  | "QUIT"
  | "VRFY"
  | "HELP"
  | "EXPN"
  | "STARTTLS"
  | "AUTH"
  | "BDAT"
  | "LHLO";

const VERBS: ReadonlySet<string> = new Set<Verb>([
  "HELO",
  "EHLO",
  "MAIL",
  "RCPT",
  "DATA",
  "RSET",
  "NOOP",
  "QUIT",
  "VRFY",
  "HELP",
  "EXPN",
  "STARTTLS",
  "AUTH",
  "BDAT",
  "LHLO",
]);

/** A parsed reverse-path or forward-path with its ESMTP parameters. */
export interface MailPath {
  /**
   * "local@domain" as sent (a quoted local part keeps its quotes, case is
   * kept), "" for the null reverse-path <>, "postmaster" for RCPT TO:<postmaster>.
   */
  address: string;
  /** ESMTP parameters: keyword upper-cased, value as sent or null when absent. */
  params: Map<string, string | null>;
}

// RFC 5321 §4.5.3.1: size limits, in octets of the UTF-8 form.
const MAX_LOCAL = 64;
const MAX_DOMAIN = 255;
const MAX_PATH = 256;
const MAX_LABEL = 63; // RFC 1035 §2.3.4, for ASCII labels.

/**
 * Never allowed anywhere in a path or parameter: control characters, lone
 * surrogates, U+FFFD (what invalid UTF-8 decodes to), line and paragraph
 * separators, and invisible format characters such as bidi overrides (which
 * would let an address read differently in logs and mailq), except the
 * joiners ZWNJ/ZWJ that some scripts need in IDN labels. Decoded ESMTP
 * parameter values (params.ts) are held to the same set.
 */
export const UNSAFE = /[\p{Cc}\p{Cs}\p{Zl}\p{Zp}\uFFFD]|(?![\u200C\u200D])\p{Cf}/u;
// UTF8-non-ascii (RFC 6531 §3.3) is written [^\p{ASCII}\p{Z}] below: any
// non-ASCII character except Unicode spaces, which would hide word breaks.
/** RFC 5321 §4.1.2 atext, plus UTF8-non-ascii. */
const ATOM = /^(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\p{ASCII}\p{Z}])+$/u;
/** RFC 5321 §4.1.2 qtextSMTP / quoted-pairSMTP, plus UTF8-non-ascii. */
const QUOTED = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\p{ASCII}\p{Z}])*"$/u;
/** RFC 5321 §4.1.2 sub-domain (Let-dig [Ldh-str]), or a U-label (RFC 6531 §3.3). */
const LABEL =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|(?=.*[^\p{ASCII}])(?:[A-Za-z0-9-]|[^\p{ASCII}\p{Z}])+)$/u;
/** RFC 5321 §4.1.2 esmtp-keyword. */
const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/** RFC 5321 §4.1.2 esmtp-value, plus UTF8-non-ascii (RFC 6531 §3.3). */
const VALUE = /^(?:[\x21-\x3c\x3e-\x7e]|[^\p{ASCII}\p{Z}])+$/u;

const encoder = new TextEncoder();

function octets(s: string): number {
  return encoder.encode(s).length;
}

/**
 * Splits a command line into its verb and argument.
 *
 * RFC 5321 §4.1.1 asks for exactly one SP between verb and argument. Like
 * Postfix we accept a run of spaces there and drop trailing spaces (some
 * clients send "RSET " or "MAIL  FROM:"), since neither changes the meaning
 * of any argument. The verb must be ASCII letters, matched case-insensitively
 * (ASCII only: "ſtarttls" must not become STARTTLS). Anything else, HTTP
 * verbs included, is `{ unknown }` with the upper-cased first word; it is
 * client input and must not be echoed.
 */
export function parseCommand(line: string): { verb: Verb; arg: string } | { unknown: string } {
  const sp = line.indexOf(" ");
  const word = sp === -1 ? line : line.slice(0, sp);
  const verb = /^[A-Za-z]+$/.test(word) ? word.toUpperCase() : word;
  if (!VERBS.has(verb)) return { unknown: verb };
  return { verb: verb as Verb, arg: sp === -1 ? "" : trimSpaces(line, sp + 1) };
}

/** line.slice(from) without leading and trailing SP (not other whitespace). */
function trimSpaces(line: string, from: number): string {
  let a = from;
  let b = line.length;
  while (a < b && line[a] === " ") a++;
  while (b > a && line[b - 1] === " ") b--;
  return line.slice(a, b);
}

/**
 * Parses a Mailbox (RFC 5321 §4.1.2): a Dot-string or Quoted-string local
 * part, "@", and a Domain or address literal. UTF-8 is allowed in both parts
 * (RFC 6531 §3.3); whether the transaction asked for SMTPUTF8 is the
 * session's concern. Returns the parts as sent, or null when invalid.
 */
export function parseMailbox(s: string): { local: string; domain: string } | null {
  if (UNSAFE.test(s)) return null;
  const at = s.startsWith('"') ? quotedEnd(s) : s.indexOf("@");
  if (at <= 0 || s[at] !== "@") return null;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  if (!isLocalPart(local) || octets(local) > MAX_LOCAL) return null;
  if (!isDomain(domain) && !isAddressLiteral(domain)) return null;
  if (octets(domain) > MAX_DOMAIN) return null;
  return { local, domain };
}

/** Index just past the closing quote of a Quoted-string at the start of s, or -1. */
function quotedEnd(s: string): number {
  for (let i = 1; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === '"') return i + 1;
  }
  return -1;
}

function isLocalPart(local: string): boolean {
  if (local.startsWith('"')) return QUOTED.test(local);
  return local.split(".").every((atom) => ATOM.test(atom));
}

/** RFC 5321 §4.1.2 Domain: dot-separated sub-domains; no trailing dot. */
function isDomain(domain: string): boolean {
  if (domain === "") return false;
  return domain.split(".").every((label) =>
    LABEL.test(label) && (/[^\p{ASCII}]/u.test(label) || label.length <= MAX_LABEL)
  );
}

/** RFC 5321 §4.1.3 address literal: [IPv4] or [IPv6:...]; general literals have no registered tags. */
function isAddressLiteral(s: string): boolean {
  if (!s.startsWith("[") || !s.endsWith("]")) return false;
  const inner = s.slice(1, -1);
  if (/^ipv6:/i.test(inner)) return isIPv6(inner.slice(5));
  return isIPv4(inner);
}

function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/**
 * RFC 5321 §4.1.3 IPv6-addr: full, compressed ("::" stands for at least two
 * zero groups, at most 6 other groups), and both with a trailing IPv4 part.
 */
function isIPv6(s: string): boolean {
  let groupsWanted = 8;
  let hex = s;
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".")) {
    if (!isIPv4(s.slice(lastColon + 1))) return false;
    groupsWanted = 6;
    hex = s.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::"; "a:...:f:1.2.3.4" leaves a trailing ":" to drop.
    if (!hex.endsWith("::")) hex = hex.slice(0, -1);
  }
  const halves = hex.split("::");
  if (halves.length > 2) return false;
  const groups = halves.map((h) => h === "" ? [] : h.split(":"));
  if (!groups.flat().every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  const count = groups.flat().length;
  return halves.length === 2 ? count <= groupsWanted - 2 : count === groupsWanted;
}

/** Which command a path belongs to: it decides the prefix and the replies. */
interface PathKind {
  prefix: "FROM:" | "TO:";
  syntax: Reply;
  badAddress: Reply;
  tooLong: Reply;
}

// RFC 3463: X.5.4 invalid command arguments, X.5.2 syntax error, X.1.7 bad
// sender mailbox syntax, X.1.3 bad destination mailbox syntax. RFC 5321
// §4.5.3.1.10 says a path over the limit gets 501.
const FROM: PathKind = {
  prefix: "FROM:",
  syntax: reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"),
  badAddress: reply(501, "5.1.7", "Bad sender address syntax"),
  tooLong: reply(501, "5.1.7", "Sender address too long"),
};
const TO: PathKind = {
  prefix: "TO:",
  syntax: reply(501, "5.5.4", "Syntax: RCPT TO:<address>"),
  badAddress: reply(501, "5.1.3", "Bad recipient address syntax"),
  tooLong: reply(501, "5.1.3", "Recipient address too long"),
};
const BAD_CHAR = reply(501, "5.5.2", "Syntax error: control or invalid character");

/**
 * Parses the argument of MAIL: `FROM:<reverse-path> [params]` (RFC 5321
 * §4.1.1.2, §4.1.2). "FROM:" is case-insensitive; one space after the colon
 * is tolerated ("MAIL FROM: <a@b>" is common in the wild though not in the
 * grammar). The null path <> gives address "".
 */
export function parseMailFrom(arg: string): MailPath | Reply {
  return parsePathArg(arg, FROM);
}

/**
 * Parses the argument of RCPT: `TO:<forward-path> [params]` (RFC 5321
 * §4.1.1.3). The bare <postmaster> is allowed and yields "postmaster"; the
 * null path is not.
 */
export function parseRcptTo(arg: string): MailPath | Reply {
  return parsePathArg(arg, TO);
}

function parsePathArg(arg: string, kind: PathKind): MailPath | Reply {
  if (UNSAFE.test(arg)) return BAD_CHAR;
  if (arg.slice(0, kind.prefix.length).toUpperCase() !== kind.prefix) return kind.syntax;
  let rest = arg.slice(kind.prefix.length);
  if (rest.startsWith(" ")) rest = rest.slice(1);
  const close = pathEnd(rest);
  if (!rest.startsWith("<") || close === -1) return kind.syntax;
  const path = rest.slice(0, close + 1);
  const after = rest.slice(close + 1);
  if (after !== "" && !after.startsWith(" ")) return kind.syntax;
  const params = parseParams(after);
  if ("code" in params) return params;
  if (octets(path) > MAX_PATH) return kind.tooLong;
  const address = pathAddress(path.slice(1, -1), kind);
  if (typeof address !== "string") return address;
  return { address, params };
}

/** Index of the ">" closing the path that starts at s[0], skipping quoted strings; -1 if none. */
function pathEnd(s: string): number {
  let quoted = false;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (quoted && c === "\\") i++;
    else if (c === '"') quoted = !quoted;
    else if (c === ">" && !quoted) return i;
  }
  return -1;
}

/** The address inside the angle brackets, with any source route dropped. */
function pathAddress(inner: string, kind: PathKind): string | Reply {
  if (inner === "") return kind === FROM ? "" : kind.badAddress;
  // RFC 5321 §4.1.1.3: <postmaster> without a domain, case-insensitive.
  if (kind === TO && inner.toLowerCase() === "postmaster") return "postmaster";
  let mailbox = inner;
  if (inner.startsWith("@")) {
    // RFC 5321 §4.1.2 A-d-l and Appendix C: accept a source route, ignore it.
    const colon = routeEnd(inner);
    if (colon === -1) return kind.badAddress;
    mailbox = inner.slice(colon + 1);
  }
  const parsed = parseMailbox(mailbox);
  if (parsed !== null) return `${parsed.local}@${parsed.domain}`;
  // The whole path is within 256 octets here, so only the local part can be over its limit.
  return octets(mailbox.slice(0, mailbox.lastIndexOf("@"))) > MAX_LOCAL
    ? kind.tooLong
    : kind.badAddress;
}

/** Validates `@dom *("," @dom) ":"` at the start of s; returns the index of the ":" or -1. */
function routeEnd(s: string): number {
  let i = 0;
  while (s[i] === "@") {
    let j = i + 1;
    if (s[j] === "[") j = s.indexOf("]", j) + 1;
    if (j === 0) return -1;
    while (j < s.length && s[j] !== "," && s[j] !== ":") j++;
    const domain = s.slice(i + 1, j);
    if (!isDomain(domain) && !isAddressLiteral(domain)) return -1;
    if (s[j] === ":") return j;
    if (s[j] !== ",") return -1;
    i = j + 1;
  }
  return -1;
}

const BAD_PARAM = reply(501, "5.5.4", "Bad ESMTP parameter syntax");

/**
 * RFC 5321 §4.1.2 Mail-parameters: `keyword[=value]` separated by spaces.
 * Runs of spaces are tolerated (as Postfix does); duplicates are refused.
 */
function parseParams(s: string): Map<string, string | null> | Reply {
  const params = new Map<string, string | null>();
  for (const word of s.split(" ")) {
    if (word === "") continue;
    const eq = word.indexOf("=");
    const key = eq === -1 ? word : word.slice(0, eq);
    const value = eq === -1 ? null : word.slice(eq + 1);
    if (!KEYWORD.test(key) || (value !== null && !VALUE.test(value))) return BAD_PARAM;
    const upper = key.toUpperCase();
    if (params.has(upper)) return reply(501, "5.5.4", `Duplicate ESMTP parameter ${upper}`);
    params.set(upper, value);
  }
  return params;
}
