/**
 * ESMTP parameters of MAIL and RCPT: SIZE (RFC 1870), BODY (RFC 6152),
 * SMTPUTF8 (RFC 6531), the DSN parameters RET, ENVID, NOTIFY, ORCPT
 * (RFC 3461) and AUTH= (RFC 4954 §5). Values that reach the control file are
 * xtext-decoded here and refused when they decode to a control character,
 * so no parameter can carry CR, LF or NUL into a record (the Exim 21Nails
 * class); JSON encoding of the journal is the second line of defence.
 */
import { type Reply, reply } from "./reply.ts";

/** The validated MAIL parameters worth keeping in the envelope. */
export interface MailParams {
  /** Declared size, if any. */
  size?: number;
  body?: "7BIT" | "8BITMIME";
  smtputf8: boolean;
  ret?: "FULL" | "HDRS";
  /** Decoded ENVID. */
  envid?: string;
  /** RFC 8689 REQUIRETLS (taken only under TLS: commands.ts). */
  requireTls?: boolean;
}

/** The validated RCPT parameters. */
export interface RcptParams {
  notify?: string[];
  /** "addr-type;decoded address", e.g. "rfc822;bob@example.org". */
  orcpt?: string;
}

const bad = (what: string): Reply => reply(501, "5.5.4", `Bad ${what} parameter`);
/** Any control character or U+FFFD after decoding: never stored. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f\uFFFD]/;

/**
 * Decodes RFC 3461 §4 xtext ("+" followed by two upper-case hex digits
 * stands for that octet); UTF-8 characters are allowed as RFC 6533 §3 does
 * for SMTPUTF8 sessions. Null when malformed or when it decodes to a
 * control character.
 */
export function decodeXtext(s: string): string | null {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "+") {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return null;
      out += String.fromCharCode(parseInt(hex, 16));
      i += 2;
    } else if (c === "=" || c <= " " || c === "\x7f") return null;
    else out += c;
  }
  return CONTROL.test(out) ? null : out;
}

/** Encodes a string as xtext (for tests and for relaying ORCPT/ENVID onwards). */
export function encodeXtext(s: string): string {
  return s.replace(
    /[^\x21-\x2a\x2c-\x3c\x3e-\x7e]/g,
    (c) =>
      c.charCodeAt(0) < 0x80
        ? `+${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`
        : c,
  );
}

/** Validates MAIL parameters (keys upper-cased by the parser); a Reply when refused. */
export function mailParams(
  params: Map<string, string | null>,
  opts: { maxSize: number },
): MailParams | Reply {
  const out: MailParams = { smtputf8: false };
  for (const [key, value] of params) {
    switch (key) {
      case "SIZE":
        if (value === null || !/^\d{1,20}$/.test(value)) return bad("SIZE");
        // RFC 1870 §6.2: refuse early when the declared size is over the limit.
        if (Number(value) > opts.maxSize) {
          return reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        out.size = Number(value);
        break;
      case "BODY": {
        // RFC 6152: 8BITMIME; content is stored as received either way.
        const v = value?.toUpperCase();
        if (v !== "7BIT" && v !== "8BITMIME") return bad("BODY");
        out.body = v;
        break;
      }
      case "SMTPUTF8":
        // RFC 6531 §3.4: the parameter has no value.
        if (value !== null) return bad("SMTPUTF8");
        out.smtputf8 = true;
        break;
      case "RET": {
        // RFC 3461 §4.3.
        const v = value?.toUpperCase();
        if (v !== "FULL" && v !== "HDRS") return bad("RET");
        out.ret = v;
        break;
      }
      case "ENVID": {
        // RFC 3461 §4.4: xtext, at most 100 characters.
        const v = value === null ? null : decodeXtext(value);
        if (v === null || v === "" || v.length > 100) return bad("ENVID");
        out.envid = v;
        break;
      }
      case "REQUIRETLS":
        // RFC 8689 §4.1: no value.
        if (value !== null) return bad("REQUIRETLS");
        out.requireTls = true;
        break;
      case "AUTH":
        // RFC 4954 §5: accepted and not trusted; the session's own identity is what counts.
        if (value === null || (value !== "<>" && decodeXtext(value) === null)) return bad("AUTH");
        break;
      default:
        return reply(555, "5.5.4", `Unsupported MAIL parameter ${key}`);
    }
  }
  return out;
}

const NOTIFY_VALUES = new Set(["SUCCESS", "FAILURE", "DELAY"]);

/** Validates RCPT parameters; a Reply when refused. */
export function rcptParams(params: Map<string, string | null>): RcptParams | Reply {
  const out: RcptParams = {};
  for (const [key, value] of params) {
    if (key === "NOTIFY") {
      // RFC 3461 §4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY.
      if (value === null) return bad("NOTIFY");
      const list = value.toUpperCase().split(",");
      const ok = list.length === 1 && list[0] === "NEVER" ||
        list.every((v) => NOTIFY_VALUES.has(v)) && new Set(list).size === list.length;
      if (!ok) return bad("NOTIFY");
      out.notify = list;
    } else if (key === "ORCPT") {
      // RFC 3461 §4.2: addr-type ";" xtext; the decoded address is at most 500 octets.
      const semi = value?.indexOf(";") ?? -1;
      if (value === null || semi < 1) return bad("ORCPT");
      const type = value.slice(0, semi);
      const addr = decodeXtext(value.slice(semi + 1));
      if (!/^[A-Za-z0-9-]{1,32}$/.test(type) || addr === null || addr === "" || addr.length > 500) {
        return bad("ORCPT");
      }
      out.orcpt = `${type.toLowerCase()};${addr}`;
    } else {
      return reply(555, "5.5.4", `Unsupported RCPT parameter ${key}`);
    }
  }
  return out;
}
