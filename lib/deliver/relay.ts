/**
 * Delivery to the configured smarthost (relayhost). A thin seam over the SMTP
 * client so the queue manager has one call for "send this over SMTP"; MX
 * routing (RFC 5321 §5.1) will come in behind it later.
 */
import type { HostPort } from "../config/types.ts";
import { type OutgoingMessage, sendMessage, type SendResult } from "../smtp/client.ts";

/** Where and how to relay; timeouts in seconds, as in the config file. */
export interface RelayOptions {
  relayhost: HostPort;
  /** Our name for EHLO/HELO. */
  helo: string;
  /** Seconds to wait for the TCP connection. */
  connectTimeout: number;
  /** Seconds to wait for each server reply. */
  replyTimeout: number;
}

/** Relays msg to the smarthost; like sendMessage, never throws for delivery trouble. */
export function relayMessage(opts: RelayOptions, msg: OutgoingMessage): Promise<SendResult> {
  return sendMessage({
    host: opts.relayhost.host,
    port: opts.relayhost.port,
    helo: opts.helo,
    connectTimeoutMs: opts.connectTimeout * 1000,
    replyTimeoutMs: opts.replyTimeout * 1000,
  }, msg);
}
