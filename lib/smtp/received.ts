/**
 * The trace header skiff prepends to every accepted message
 * (RFC 5321 §4.4, RFC 5322 §3.6.7), and the RFC 5322 date it carries.
 */

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/** An RFC 5322 §3.3 date-time in UTC, e.g. "Sun, 29 Nov 2026 17:00:00 +0000". */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${
    MONTHS[d.getUTCMonth()]
  } ${d.getUTCFullYear()} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
}

/** What the Received header records about one transaction. */
export interface ReceivedInfo {
  helo: string;
  /** IP address; "" for a unix socket. */
  clientAddress: string;
  /** Unix socket peers: the uid the kernel reported. */
  peer?: number;
  hostname: string;
  /** Negotiated TLS, named as Postfix does ("using TLSv1.3 with cipher ..."). */
  tls?: { version: string; cipher: string };
  protocol: string;
  id: string;
  /** Named only when there is exactly one recipient, so Bcc recipients do not leak. */
  recipient?: string;
  time: number;
}

/** Formats the Received header, folded, CRLF-terminated. */
export function receivedHeader(info: ReceivedInfo): string {
  // The HELO name is client-supplied: keep it printable so it cannot fold or split the header.
  const helo = info.helo.replace(/[^\x21-\x7e]/g, "?").slice(0, 255);
  const ip = info.clientAddress.includes(":") ? `IPv6:${info.clientAddress}` : info.clientAddress;
  const from = info.clientAddress === ""
    ? `(unix socket${info.peer !== undefined ? ` uid ${info.peer}` : ""})`
    : `([${ip}])`;
  const clean = (s: string) => s.replace(/[^\x21-\x7e]/g, "?").slice(0, 64);
  const tls = info.tls
    ? `\r\n\t(using ${clean(info.tls.version)} with cipher ${clean(info.tls.cipher)})`
    : "";
  const forPart = info.recipient ? `\r\n\tfor <${info.recipient}>` : "";
  return `Received: from ${helo} ${from}${tls}\r\n\tby ${info.hostname} (skiff) with ${info.protocol} ` +
    `id ${info.id}${forPart};\r\n\t${rfc5322Date(info.time)}\r\n`;
}
