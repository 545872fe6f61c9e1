/**
 * A content filter the server consults at each SMTP step (the milters of a
 * listener): an interface here, implemented above the SMTP layer
 * (lib/listen/ builds it from lib/milter/), so protocol code never imports
 * a filter. Each hook returns null to go on, or the reply that refuses the
 * step. A filter never throws: unavailability is its own default action.
 */

import type { Reply } from "../wire/reply.ts";

/** A refusal from a filter: the reply the session sends instead of its own. */
export type FilterReply = Reply;

/** What a filter decided about a whole message. */
export interface FilterContentOutcome {
  refuse?: FilterReply;
  /** Say 250 but do not queue. */
  discard?: boolean;
  /** The message as the filter changed it. */
  content?: Uint8Array;
  /** Hold the message (SMFIR_QUARANTINE) with this reason. */
  quarantine?: string;
}

/** The hooks of one session's filter. */
export interface SessionFilter {
  helo(name: string): Promise<FilterReply | null>;
  mail(
    from: string,
    params: string[],
    macro: { authUser?: string },
  ): Promise<FilterReply | null>;
  rcpt(to: string, params: string[]): Promise<FilterReply | null>;
  content(message: Uint8Array, queueId: string): Promise<FilterContentOutcome>;
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** The client a filter is opened for. */
export interface FilterClient {
  host: string;
  address: string;
  port: number;
  ourName: string;
}

/** ESMTP parameters of a MAIL or RCPT argument ("FROM:<a> SIZE=1 BODY=8BITMIME" → the two). */
export function paramWords(arg: string): string[] {
  const close = arg.indexOf(">");
  return (close < 0 ? "" : arg.slice(close + 1)).split(" ").filter((w) => w !== "");
}
