/**
 * The MAIL FROM and RCPT TO lines the client sends, built from a stored
 * envelope and checked before they leave. Envelopes are validated when they
 * enter the spool (envelope_check.ts); this is the second line of defence:
 * whatever slipped past, no command line carries CR, LF, NUL or another
 * control character, and no ESMTP parameter value carries a space, so a
 * field can never become a command of its own (issue 9, finding 1: NOTIFY
 * with "\r\nRSET\r\nMAIL FROM:..." made the relay see a forged transaction).
 */
import type { OutgoingMessage } from "./client.ts";
import { parseMailbox } from "./command.ts";
import { quote } from "./envelope_check.ts";
import { encodeXtext } from "./params.ts";

/** A line to send, or why it was refused (the affected recipients fail with this text). */
export type Built = { line: string } | { error: string };

/** RFC 5321 §4.1.2 esmtp-keyword and (ASCII) esmtp-value: no space, "=" or control inside. */
const PARAM = /^[A-Za-z0-9][A-Za-z0-9-]*(?:=[\x21-\x3c\x3e-\x7e]+)?$/;
/**
 * True when an address cannot go inside "<...>": a control or line
 * separator anywhere, or an angle bracket outside a quoted local part
 * (`"a>b"@example.org` is a valid mailbox; `a@b> NOTIFY=...` is not).
 */
export function unsendableAddress(address: string): boolean {
  if (/[\p{Cc}\p{Zl}\p{Zp}]/u.test(address)) return true;
  return /[<>]/.test(address) && parseMailbox(address) === null;
}
/** RFC 3461 §4.1: NOTIFY values. */
const NOTIFY = /^(?:NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY)){0,2})$/;

/** Quoting that shows CR, LF and every other control escaped, never raw, in texts and logs. */
const show = (s: string) => quote(s, 100);

/**
 * True when `line` may be written as one command: printable, no control
 * character anywhere (a CR or LF would end it early and start another).
 */
export function safeCommandLine(line: string): boolean {
  return !/\p{Cc}/u.test(line) && line.length <= 2048;
}

function withParams(head: string, params: string[]): Built {
  for (const p of params) {
    if (!PARAM.test(p)) return { error: `Refused to send the ESMTP parameter ${show(p)}` };
  }
  const line = head + params.map((p) => " " + p).join("");
  if (!safeCommandLine(line)) return { error: `Refused to send the command ${show(line)}` };
  return { line };
}

/** The MAIL FROM line for msg given the server's extensions; an error refuses the transaction. */
export function mailCommand(
  msg: OutgoingMessage,
  o: { ext: ReadonlyMap<string, string>; utf8: boolean },
): Built {
  if (unsendableAddress(msg.from)) {
    return { error: `Invalid sender address ${show(msg.from)}` };
  }
  const params: string[] = [];
  if (o.ext.has("SIZE")) params.push(`SIZE=${msg.size}`);
  if (msg.body8bit && o.ext.has("8BITMIME")) params.push("BODY=8BITMIME");
  if (o.utf8) params.push("SMTPUTF8");
  const dsn = o.ext.has("DSN");
  if (dsn && msg.ret) params.push(`RET=${msg.ret}`);
  if (dsn && msg.envid) params.push(`ENVID=${encodeXtext(msg.envid)}`);
  return withParams(`MAIL FROM:<${msg.from}>`, params);
}

/** The RCPT TO line for one recipient; an error fails that recipient only. */
export function rcptCommand(
  address: string,
  extra: { notify?: string[]; orcpt?: string } | undefined,
  o: { dsn: boolean },
): Built {
  if (address === "" || unsendableAddress(address)) {
    return { error: `Invalid recipient address ${show(address)}` };
  }
  const params: string[] = [];
  if (o.dsn && extra?.notify?.length) {
    const notify = extra.notify.join(",").toUpperCase();
    if (!NOTIFY.test(notify)) return { error: `Invalid NOTIFY ${show(extra.notify.join(","))}` };
    params.push(`NOTIFY=${notify}`);
  }
  if (o.dsn && extra?.orcpt) {
    const semi = extra.orcpt.indexOf(";");
    const type = semi > 0 ? extra.orcpt.slice(0, semi) : "rfc822";
    const addr = semi > 0 ? extra.orcpt.slice(semi + 1) : extra.orcpt;
    if (!/^[A-Za-z0-9-]{1,32}$/.test(type)) return { error: `Invalid ORCPT ${show(extra.orcpt)}` };
    params.push(`ORCPT=${type};${encodeXtext(addr)}`);
  }
  return withParams(`RCPT TO:<${address}>`, params);
}
