/**
 * Delivery status notifications (RFC 3464): the bounce for failed recipients,
 * the delay warning for long-deferred ones and the success notice for
 * NOTIFY=SUCCESS (RFC 3461 §5.2.2), as a multipart/report with a
 * human-readable part, a message/delivery-status part, and the original
 * message (RET=FULL) or its header (RET=HDRS, and always for a success
 * notice: RET concerns failures only, RFC 3461 §4.3).
 *
 * Who gets one: the envelope sender. Never for the null sender (RFC 5321
 * §6.1: that is how bounce loops are prevented), except that a bounce skiff
 * itself made and could not deliver goes to the postmaster once (a "double
 * bounce"); a failed double bounce is only logged.
 */
import { concatBytes } from "../sys/bytes.ts";
import type { Config } from "../config/types.ts";
import { rfc5322Date } from "../smtp/received.ts";
import type { MessageState, NoticeAction, RecipientState } from "../spool/records.ts";

/** envelope.protocol of a bounce skiff made; its failure notifies the postmaster. */
export const PROTOCOL_BOUNCE = "DSN";
/** envelope.protocol of a double bounce; its failure notifies nobody. */
export const PROTOCOL_DOUBLE_BOUNCE = "DSN2";

/** Largest original returned in full when the sender did not ask for RET=HDRS. */
export const MAX_RETURNED = 1024 * 1024;

/** Whom a notification about `state` goes to, and as what; null = nobody. */
export function notifyTarget(
  cfg: Config,
  state: MessageState,
): { to: string; protocol: string } | null {
  const env = state.envelope;
  if (env.from !== "") return { to: env.from, protocol: PROTOCOL_BOUNCE };
  if (env.protocol === PROTOCOL_BOUNCE) {
    return {
      to: `postmaster@${cfg.local.domains[0] ?? cfg.hostname}`,
      protocol: PROTOCOL_DOUBLE_BOUNCE,
    };
  }
  return null;
}

/** Whether the recipient's NOTIFY parameter (RFC 3461 §4.1) asks for this kind of report. */
export function wantsNotice(
  state: MessageState,
  r: RecipientState,
  action: NoticeAction,
): boolean {
  const notify = state.envelope.recipients[r.index]?.notify?.map((n) => n.toUpperCase());
  const success = action === "delivered" || action === "relayed";
  // Without NOTIFY, failures are reported (RFC 3461 §4.1 leaves DELAY to the
  // MTA: delay warnings are on only when delivery.delay_warning is set);
  // success only when asked for.
  if (!notify || notify.length === 0) return !success;
  if (notify.includes("NEVER")) return false;
  return notify.includes(success ? "SUCCESS" : action === "failed" ? "FAILURE" : "DELAY");
}

/**
 * A duration for people, in the largest unit that fits (seconds, minutes,
 * hours, days), to one decimal: "45 seconds", "1 minute", "1.5 hours",
 * "5 days". A delay warning once said "for 0 hours ... until it is 0 days
 * old" with short settings.
 */
export function formatDuration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  const [n, unit] = s >= 86400
    ? [s / 86400, "day"]
    : s >= 3600
    ? [s / 3600, "hour"]
    : s >= 60
    ? [s / 60, "minute"]
    : [s, "second"];
  const v = Math.round(n * 10) / 10;
  return `${v} ${unit}${v === 1 ? "" : "s"}`;
}

/** Inputs of buildReport. */
export interface ReportInput {
  cfg: Config;
  state: MessageState;
  recipients: RecipientState[];
  action: NoticeAction;
  /** The original message bytes (CRLF), or only its header when that is all there is. */
  original: Uint8Array;
  /** The queue id of the report itself. */
  id: string;
  now: number;
  /** Recipient of the report (notifyTarget().to). */
  to: string;
}

const decoder = new TextDecoder();

/** Header block of a message: everything before the first empty line. */
export function headerOf(content: Uint8Array): Uint8Array {
  const text = decoder.decode(content.subarray(0, Math.min(content.length, 256 * 1024)));
  const end = text.search(/\r?\n\r?\n/);
  const head = end < 0 ? text : text.slice(0, end + 1);
  return new TextEncoder().encode(head.endsWith("\n") ? head : head + "\r\n");
}

/** A printable, header-safe version of a text (no CR/LF, bounded). */
function clean(text: string, max = 900): string {
  // deno-lint-ignore no-control-regex
  const t = text.replace(/[\x00-\x1f\x7f]+/g, " ");
  return t.length > max ? t.slice(0, max - 3) + "..." : t;
}

/** The last result record of a recipient (for Remote-MTA and the attempt date). */
function lastResult(r: RecipientState): { at: number; relay?: string } | null {
  for (let i = r.history.length - 1; i >= 0; i--) {
    const h = r.history[i];
    if (h.t === "delivered" || h.t === "deferred" || h.t === "failed") return h;
  }
  return null;
}

/** The relay's host part ("mx.example.org[192.0.2.1]:25" → "mx.example.org"). */
function relayHost(relay: string | undefined): string | null {
  if (!relay || relay === "local" || relay === "none") return null;
  return relay.replace(/\[.*$/, "").replace(/:\d+$/, "") || null;
}

/**
 * The complete report message (CRLF line endings). RET=HDRS (RFC 3461 §4.3)
 * or an original larger than MAX_RETURNED returns only the header.
 */
export function buildReport(input: ReportInput): Uint8Array {
  const { cfg, state, action, now } = input;
  const env = state.envelope;
  const boundary = `${input.id}/${cfg.hostname}`;
  const ret = env.params?.RET?.toUpperCase();
  const success = action === "delivered" || action === "relayed";
  // RFC 8689 §5: the report may travel without TLS, so a REQUIRETLS body is not returned.
  const protectedBody = env.params?.REQUIRETLS !== undefined;
  const full = !success && ret !== "HDRS" && !protectedBody &&
    input.original.length <= MAX_RETURNED;
  const original = full ? input.original : headerOf(input.original);
  const failed = action === "failed";
  const subject = failed
    ? "Undelivered Mail Returned to Sender"
    : success
    ? "Successful Mail Delivery Report"
    : "Delayed Mail (still being retried)";
  const human = [
    `This is the mail system at host ${cfg.hostname}.`,
    "",
    failed
      ? "I'm sorry to have to inform you that your message could not be delivered to one or more recipients. It's attached below."
      : action === "delivered"
      ? "Your message was successfully delivered to the destination(s) listed below."
      : action === "relayed"
      ? "Your message was relayed to the destination(s) listed below, to a system that does not send delivery notifications: you may get no further notice."
      : `Your message could not be delivered for ${
        formatDuration(now - env.received)
      }. It will be retried until it is ${
        formatDuration(cfg.queue.lifetime * 1000)
      } old. You do not need to resend it.`,
    "",
    ...input.recipients.map((r) => `<${clean(r.address, 300)}>: ${clean(r.text ?? "", 600)}`),
  ];
  const perMessage = [
    `Reporting-MTA: dns; ${cfg.hostname}`,
    `X-Skiff-Queue-ID: ${env.id}`,
    ...(env.params?.ENVID ? [`Original-Envelope-Id: ${clean(env.params.ENVID, 100)}`] : []),
    `Arrival-Date: ${rfc5322Date(env.received)}`,
  ];
  const perRecipient = input.recipients.map((r) => {
    const spec = env.recipients[r.index];
    const last = lastResult(r);
    const remote = relayHost(last?.relay);
    const dsn = r.dsn ?? (failed ? "5.0.0" : success ? "2.0.0" : "4.0.0");
    return [
      "",
      ...(spec?.orcpt ? [`Original-Recipient: ${clean(spec.orcpt, 300)}`] : []),
      `Final-Recipient: rfc822; ${clean(r.address, 300)}`,
      `Action: ${action}`,
      `Status: ${failed && dsn.startsWith("4") ? "5" + dsn.slice(1) : dsn}`,
      ...(remote ? [`Remote-MTA: dns; ${clean(remote, 255)}`] : []),
      `Diagnostic-Code: ${/^\d{3}[ -]/.test(r.text ?? "") ? "smtp" : "x-skiff"}; ${
        clean(r.text ?? "", 900)
      }`,
      ...(last ? [`Last-Attempt-Date: ${rfc5322Date(last.at)}`] : []),
      ...(action === "delayed" && r.nextAttempt
        ? [`Will-Retry-Until: ${rfc5322Date(env.received + cfg.queue.lifetime * 1000)}`]
        : []),
    ];
  }).flat();
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${cfg.hostname}>`,
    `To: <${clean(input.to, 300)}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${input.id}.dsn@${cfg.hostname}>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type=delivery-status;`,
    `\tboundary="${boundary}"`,
    "Content-Transfer-Encoding: 8bit",
    "",
    "This is a MIME-encapsulated message.",
    "",
    `--${boundary}`,
    "Content-Description: Notification",
    "Content-Type: text/plain; charset=utf-8",
    "",
    ...human,
    "",
    `--${boundary}`,
    "Content-Description: Delivery report",
    "Content-Type: message/delivery-status",
    "",
    ...perMessage,
    ...perRecipient,
    "",
    `--${boundary}`,
    `Content-Description: ${
      success ? "Message Headers" : full ? "Undelivered Message" : "Undelivered Message Headers"
    }`,
    `Content-Type: ${full ? "message/rfc822" : "text/rfc822-headers"}`,
    "Content-Transfer-Encoding: 8bit",
    "",
    "",
  ].join("\r\n");
  const tail = `\r\n--${boundary}--\r\n`;
  const enc = new TextEncoder();
  const origText = normaliseCrlf(original);
  return concatBytes([enc.encode(head), origText, enc.encode(tail)]);
}

/** Bytes with every line ending CRLF (the spool form). */
function normaliseCrlf(bytes: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x0a && (i === 0 || bytes[i - 1] !== 0x0d)) out.push(0x0d);
    out.push(b);
  }
  if (out.length > 0 && out[out.length - 1] !== 0x0a) out.push(0x0d, 0x0a);
  return Uint8Array.from(out);
}

/**
 * Counts Received headers in a message header block (RFC 5321 §6.3: a
 * count above a threshold is taken as a loop).
 */
export function countReceived(header: Uint8Array): number {
  const text = decoder.decode(header);
  const m = text.match(/^received:/gim);
  return m ? m.length : 0;
}
