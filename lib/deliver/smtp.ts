/**
 * Network delivery of one message to one destination: MX delivery (RFC 5321
 * §5.1: each MX address in turn), a fixed SMTP host (relayhost or a route),
 * or an LMTP server on TCP or a unix socket. A cached session for the same
 * destination, TLS policy and AUTH identity is reused when there is one;
 * otherwise addresses are tried in order, moving on after a connection
 * failure, a 4xx greeting or any trouble before a recipient was answered.
 * Never throws for delivery trouble: every recipient gets an outcome.
 */
import type { Destination } from "../config/route_types.ts";
import { resolveMx, type ResolverOptions } from "../dns/mx.ts";
import {
  endResults,
  openSession,
  type OutgoingMessage,
  relayName,
  type SendResult,
  type SmtpTarget,
} from "../smtp/client.ts";
import { SessionEnd } from "../smtp/client_session.ts";
import { ConnectionCache } from "./conn_cache.ts";
import { DeliveryError } from "../mail/delivery_error.ts";
import { requireTlsEnd, type TlsPolicy } from "../tlspolicy/policy.ts";
import type { TlsMode } from "../config/route_types.ts";

/**
 * A network destination after routing: a route's smtp or lmtp destination as
 * configured, or MX delivery with the recipient domain filled in.
 */
export type NetDestination =
  | (Extract<Destination, { kind: "mx" }> & { domain: string })
  | Extract<Destination, { kind: "smtp" | "lmtp" }>;

/** What network delivery needs from the manager. */
export interface NetContext {
  helo: string;
  connectTimeoutMs: number;
  replyTimeoutMs: number;
  cache: ConnectionCache;
  resolver: ResolverOptions;
  /** Port for MX delivery (25; tests use another). */
  mxPort: number;
  /** Extra CAs trusted for tls = "verify" (tests). */
  ca?: string[];
  /** [delivery] tls_ca_file: a PEM bundle trusted for "verify" when the route names none. */
  caFile?: string;
  /** MTA-STS, DANE, REQUIRETLS and TLS-RPT for MX delivery (lib/tlspolicy/policy.ts). */
  tlsPolicy?: TlsPolicy;
  /** HTTPS port of MTA-STS policy hosts (443; tests use another). */
  mtaStsPort?: number;
}

/** The CA bundle a destination's "verify" trusts ("" = none). */
function caFileOf(d: NetDestination, ctx: NetContext): string {
  return (d.kind !== "mx" && d.tlsCaFile) || ctx.caFile || "";
}

/**
 * The trusted CAs for a destination: the test seam's plus the tls_ca_file,
 * read when a session is opened (so a renewed bundle is picked up). An
 * unreadable file defers with 4.3.5 ("system incorrectly configured").
 */
async function trustedCas(
  d: NetDestination,
  ctx: NetContext,
  tls: TlsMode,
): Promise<string[] | undefined> {
  const file = tls === "verify" ? caFileOf(d, ctx) : "";
  if (file === "") return ctx.ca;
  try {
    return [...(ctx.ca ?? []), await Deno.readTextFile(file)];
  } catch (err) {
    throw new DeliveryError(`Cannot read tls_ca_file ${file}: ${(err as Error).message}`, {
      dsn: "4.3.5",
    });
  }
}

/** The cache key of a destination. */
export function destinationKey(d: NetDestination): string {
  const where = d.kind === "mx"
    ? `mx:${d.domain}`
    : d.kind === "lmtp"
    ? `lmtp:${d.socket || `${d.host}:${d.port}`}`
    : `smtp:${d.host}:${d.port}`;
  const auth = d.kind === "smtp" ? d.authUser : "";
  // A session verified against one CA bundle is not reused for another's.
  const ca = d.kind !== "mx" && d.tlsCaFile ? ` ca=${d.tlsCaFile}` : "";
  return ConnectionCache.key({ dest: where + ca, tls: d.tls, auth });
}

/** The ordered targets of a destination; throws DeliveryError (DNS trouble, null MX). */
async function targetsOf(
  d: NetDestination,
  ctx: NetContext,
  msg: OutgoingMessage,
): Promise<SmtpTarget[]> {
  // RFC 8689 §5: REQUIRETLS needs a verified certificate on every hop (MX: DANE may stand
  // in for it, see tlsPolicy, which gets the route's own mode).
  const tls = msg.requireTls ? "verify" : d.tls;
  const base = {
    helo: ctx.helo,
    connectTimeoutMs: ctx.connectTimeoutMs,
    replyTimeoutMs: ctx.replyTimeoutMs,
    tls,
    ca: await trustedCas(d, ctx, tls),
  };
  if (d.kind === "smtp") {
    return [{
      ...base,
      host: d.host,
      port: d.port,
      authUser: d.authUser,
      authPassword: d.authPassword,
    }];
  }
  if (d.kind === "lmtp") {
    return [{ ...base, host: d.host, port: d.port, socket: d.socket || undefined, lmtp: true }];
  }
  const mx = await resolveMx(d.domain, ctx.resolver);
  const targets = mx.map((m) => ({
    ...base,
    host: m.address,
    port: ctx.mxPort,
    servername: m.host,
  }));
  if (!ctx.tlsPolicy) return targets;
  return await ctx.tlsPolicy.apply(d.domain, d.tls, targets, msg);
}

/** Delivers msg to d; see the module comment. */
export async function deliverNet(
  d: NetDestination,
  msg: OutgoingMessage,
  ctx: NetContext,
): Promise<SendResult> {
  const key = destinationKey(d);
  // A REQUIRETLS message opens its own session: its policy is checked at the handshake.
  const cached = msg.requireTls ? null : await ctx.cache.take(key);
  if (cached) {
    const result = await cached.send(msg);
    if (!result.tryNext) {
      if (result.reusable) ctx.cache.park(key, cached);
      else await cached.quit();
      return {
        relay: cached.relay,
        recipients: result.recipients,
        dsn: cached.extensions.has("DSN"),
      };
    }
    cached.destroy(); // it went bad between probe and use: start afresh below
  }
  let targets: SmtpTarget[];
  try {
    targets = await targetsOf(d, ctx, msg);
  } catch (err) {
    const e = err instanceof DeliveryError ? err : new DeliveryError(String(err), { dsn: "4.4.3" });
    const end = new SessionEnd({
      outcome: e.permanent ? "failed" : "deferred",
      code: 0,
      dsn: e.dsn,
      text: e.message,
      usable: false,
    });
    const where = d.kind === "mx" ? d.domain : "destination";
    return { relay: `${where}[unknown]`, recipients: endResults(msg, end) };
  }
  let last: SendResult | null = null;
  for (const target of targets) {
    let session;
    try {
      session = await openSession(target);
    } catch (err) {
      if (!(err instanceof SessionEnd)) throw err;
      target.tlsReport?.({ tls: false, end: err });
      last = { relay: relayName(target), recipients: endResults(msg, requireTlsEnd(msg, err)) };
      // RFC 5321 §5.1: a permanent greeting refusal ends it; trouble moves on.
      if (err.outcome === "failed") return last;
      continue;
    }
    target.tlsReport?.({ tls: session.tls !== null });
    const result = await session.send(msg);
    last = {
      relay: session.relay,
      recipients: result.recipients,
      dsn: session.extensions.has("DSN"),
    };
    if (result.reusable && !result.tryNext) ctx.cache.park(key, session);
    else await session.quit();
    if (!result.tryNext) return last;
  }
  return last!;
}
