/**
 * SMTP replies as values. Handlers return a Reply; one place in the session
 * writes it to the socket. Failures throw a ReplyError that carries its reply
 * (RFC 5321 §4.2 reply codes, RFC 3463 enhanced status codes).
 */

/** One SMTP reply: a three-digit code, an RFC 3463 enhanced status and text. */
export interface Reply {
  code: number;
  /** RFC 3463 enhanced status code such as "2.1.0"; omitted only for greeting-like replies. */
  enhanced?: string;
  /** Reply text; several lines make a multi-line reply. */
  text: string | string[];
  /** Close the connection after this reply is written. */
  close?: boolean;
}

/** An error that carries the reply the client should see. */
export class ReplyError extends Error {
  readonly reply: Reply;
  constructor(reply: Reply) {
    super(`${reply.code} ${reply.enhanced ?? ""} ${[reply.text].flat().join(" ")}`.trim());
    this.name = "ReplyError";
    this.reply = reply;
  }
}

/** Builds a reply value. */
export function reply(code: number, enhanced: string | undefined, text: string | string[]): Reply {
  return { code, enhanced, text };
}

/** Formats a reply as wire text, CRLF-terminated, multi-line per RFC 5321 §4.2.1. */
export function formatReply(r: Reply): string {
  const lines = [r.text].flat();
  if (lines.length === 0) lines.push("");
  const prefix = r.enhanced ? `${r.enhanced} ` : "";
  return lines.map((line, i) => {
    const sep = i === lines.length - 1 ? " " : "-";
    // A reply line never carries CR or LF from anywhere: they would split it.
    const clean = line.replace(/[\r\n]/g, " ");
    return `${r.code}${sep}${prefix}${clean}\r\n`;
  }).join("");
}
