/**
 * ESMTP parameters of MAIL and RCPT: SIZE (RFC 1870), BODY (RFC 6152),
 * SMTPUTF8 (RFC 6531), the DSN parameters RET, ENVID, NOTIFY, ORCPT
 * (RFC 3461) and AUTH= (RFC 4954 §5). Values that reach the control file are
 * xtext-decoded here (octets, then UTF-8) and refused when they decode to
 * invalid UTF-8 or a control character,
 * so no parameter can carry CR, LF or NUL into a record (the Exim 21Nails
 * class); JSON encoding of the journal is the second line of defence.
 */
import { UNSAFE } from "./command.ts";
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

const bad = (what: string, why?: string): Reply =>
  reply(501, "5.5.4", why ? `Bad ${what} parameter: ${why}` : `Bad ${what} parameter`);

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The decoded text of an xtext value, or why it cannot be stored. */
export type XtextResult = { text: string } | { error: string };

/**
 * Decodes RFC 3461 §4 xtext: "+" followed by two upper-case hex digits
 * stands for that octet. The octets are then read as UTF-8 (so "+C2+A9" is
 * "©", one character, never the two Latin-1 code points U+00C2 U+00A9), and
 * invalid UTF-8 or a decoded control character (e.g. "+C2+85", U+0085) is
 * refused. UTF-8 characters written as such are allowed, as RFC 6533 §3
 * does for SMTPUTF8 sessions.
 */
export function decodeXtextChecked(s: string): XtextResult {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return { error: '"+" is not followed by two hex digits' };
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (c === 0x3d || c <= 0x20 || c === 0x7f) {
      return { error: 'not xtext (space, "=" or a control character)' };
    } else if (c < 0x80) bytes.push(c);
    else {
      const cp = s.codePointAt(i)!;
      if (cp > 0xffff) i++;
      bytes.push(...encoder.encode(String.fromCodePoint(cp)));
    }
  }
  let text: string;
  try {
    text = utf8.decode(Uint8Array.from(bytes));
  } catch {
    return { error: "decodes to invalid UTF-8" };
  }
  if (UNSAFE.test(text)) return { error: "decodes to a control or invisible character" };
  return { text };
}

/** {@link decodeXtextChecked} without the reason: the text, or null when refused. */
export function decodeXtext(s: string): string | null {
  const r = decodeXtextChecked(s);
  return "text" in r ? r.text : null;
}

/**
 * Encodes text as RFC 3461 §4 xtext: its UTF-8 octets, with "+", "=" and
 * every octet outside "!".."~" written as "+XX". Pure ASCII, so it is valid
 * in any session; decodeXtext(encodeXtext(s)) === s for every storable s.
 */
export function encodeXtext(s: string): string {
  let out = "";
  for (const b of encoder.encode(s)) {
    out += b < 0x21 || b > 0x7e || b === 0x2b || b === 0x3d
      ? `+${b.toString(16).toUpperCase().padStart(2, "0")}`
      : String.fromCharCode(b);
  }
  return out;
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
        if (value === null) return bad("ENVID", "a value is needed");
        const v = decodeXtextChecked(value);
        if ("error" in v) return bad("ENVID", v.error);
        if (v.text === "" || v.text.length > 100) return bad("ENVID", "1 to 100 characters");
        out.envid = v.text;
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
      if (!/^[A-Za-z0-9-]{1,32}$/.test(type)) return bad("ORCPT", "bad address type");
      const addr = decodeXtextChecked(value.slice(semi + 1));
      if ("error" in addr) return bad("ORCPT", addr.error);
      if (addr.text === "" || encoder.encode(addr.text).length > 500) {
        return bad("ORCPT", "the address must be 1 to 500 octets");
      }
      out.orcpt = `${type.toLowerCase()};${addr.text}`;
    } else {
      return reply(555, "5.5.4", `Unsupported RCPT parameter ${key}`);
    }
  }
  return out;
}
