/**
 * The one call the SMTP server makes at the end of DATA/BDAT, before the
 * spool commit: decides whether a message is signed (a local or
 * authenticated user's mail), verified (anyone else's, unless the client is
 * in relay_networks) or left alone, and returns the header fields to
 * prepend, the message to store (forged Authentication-Results removed) or
 * the reply refusing it. Signing and verifying here, once, at acceptance
 * means the stored message is final: deliveries and retries never redo the
 * work, the journal is untouched, and a DMARC reject is said to the client
 * while it is still connected (RFC 7489 §6.7) instead of as a bounce.
 */
import { inNetworks } from "../config/cidr.ts";
import type { Config, ListenerConfig } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import type { Identity } from "../auth/identity.ts";
import { domainOf } from "../mail/address.ts";
import { type Reply, reply } from "../wire/reply.ts";
import { boundedResolver } from "./resolver.ts";
import { signMessage } from "./sign.ts";
import type { Verdict } from "./verify.ts";

// verify.ts pulls in the mailauth library, which costs ~30 MB of RSS and ~15 MB
// of V8 heap once loaded (measured with Deno.memoryUsage() after an import:
// 43 MB against 73 MB). A site that never verifies (submission only, or
// every client in relay_networks) should not pay that: it is loaded on the
// first message that needs it, once, and kept.
let verifier: Promise<typeof import("./verify.ts")> | null = null;
const loadVerifier = () => verifier ??= import("./verify.ts");

/** What a message gets: a signature, the inbound checks, or nothing. */
export type AuthRole = "sign" | "verify" | null;

/** What the session knows about the message's origin. */
export interface AuthSubject {
  identity: Identity | null;
  /** Client IP; "" on a unix socket. */
  clientAddress: string;
  helo: string;
  /** MAIL FROM ("" for the null reverse-path). */
  from: string;
}

/** The role for a message from `s`: decided before DATA so content is held only when needed. */
export function authRole(cfg: Config, s: AuthSubject): AuthRole {
  if (s.identity) return cfg.dkim.length > 0 ? "sign" : null;
  // Unix-socket clients without credentials and relay_networks are this site's own systems.
  if (s.clientAddress === "" || inNetworks(s.clientAddress, cfg.relayNetworks)) return null;
  return "verify";
}

/** The outcome: fields to prepend and the message to store, or a refusal. */
export interface AuthOutcome {
  /** Header fields (CRLF-terminated) to put above the Received field. */
  prepend: string;
  /** The message to store (the input, or a copy without forged fields). */
  message: Uint8Array;
  /** Set when the message must be refused. */
  reject?: Reply;
}

/** Context for {@link authenticateMessage}. */
export interface AuthContext {
  cfg: Config;
  /** The listener's policy keys (the maildrop pickup passes its own: senders "own"). */
  listener: Pick<ListenerConfig, "senders" | "dmarc" | "spfFail">;
  subject: AuthSubject;
  role: Exclude<AuthRole, null>;
  /** Queue id and client, for the log. */
  id: string;
  client: string;
  now: number;
}

/** Signs or verifies `message` as `ctx.role` says. */
export function authenticateMessage(message: Uint8Array, ctx: AuthContext): Promise<AuthOutcome> {
  return ctx.role === "sign" ? sign(message, ctx) : verify(message, ctx);
}

/** Whether this identity may have mail for its From domain signed (see docs/authentication.md). */
function maySign(ctx: AuthContext, domain: string): boolean {
  const id = ctx.subject.identity!;
  if (id.trusted || ctx.listener.senders === "any") return true;
  // With senders = "own" the envelope sender was checked to be the user's own.
  const envelope = domainOf(ctx.subject.from);
  return envelope === domain || envelope.endsWith(`.${domain}`);
}

async function sign(message: Uint8Array, ctx: AuthContext): Promise<AuthOutcome> {
  try {
    const r = await signMessage(message, { keys: ctx.cfg.dkim, now: ctx.now });
    if (!r.headers) return { prepend: "", message };
    if (!maySign(ctx, r.domain!)) {
      logWarn("dkim not signed", {
        id: ctx.id,
        user: ctx.subject.identity!.name,
        domain: r.domain,
        reason: "sender not in the signing domain",
      });
      return { prepend: "", message };
    }
    logEvent("dkim signed", { id: ctx.id, domain: r.domain, selectors: r.selectors.join(",") });
    return { prepend: r.headers, message };
  } catch (err) {
    logWarn("dkim sign error", { id: ctx.id, client: ctx.client, error: String(err) });
    // Unsigned mail from a DMARC domain would be refused downstream: let the client retry.
    return {
      prepend: "",
      message,
      reject: reply(451, "4.7.0", "Error: DKIM signing failed; try again later"),
    };
  }
}

async function verify(input: Uint8Array, ctx: AuthContext): Promise<AuthOutcome> {
  const m = ctx.cfg.mailauth;
  const authservId = m.authservId || ctx.cfg.hostname;
  const { stripForged, verifyMessage } = await loadVerifier();
  const { message, removed } = stripForged(input, authservId);
  const { resolve, stats } = boundedResolver({
    nameserver: ctx.cfg.delivery.nameserver,
    timeoutMs: m.dnsTimeout * 1000,
    maxQueries: m.maxLookups,
  });
  const l = ctx.listener;
  let v: Verdict;
  try {
    v = await verifyMessage(message, {
      resolver: resolve,
      authservId,
      ip: ctx.subject.clientAddress.replace(/^::ffff:(?=\d+\.)/, ""),
      helo: ctx.subject.helo,
      sender: ctx.subject.from,
      dmarc: l.dmarc !== "off",
      minKeyBits: m.minKeyBits,
      timeoutMs: m.dnsTimeout * 1000,
    });
  } catch (err) {
    // A bug or a library failure must not lose mail: accept it unverified, say so.
    logWarn("mailauth error", { id: ctx.id, client: ctx.client, error: String(err) });
    const ar = `Authentication-Results: ${authservId}; none (verification failed)\r\n`;
    return { prepend: ar, message };
  }
  const { action, reject } = decide(v, ctx);
  let prepend = v.authResults;
  if (l.spfFail === "header" && v.receivedSpf) prepend += v.receivedSpf;
  if (action === "quarantine") {
    prepend += `X-Skiff-Quarantine: dmarc=fail policy=quarantine header.from=${v.fromDomain}\r\n`;
  }
  logEvent("mailauth", {
    id: ctx.id,
    client: ctx.client,
    spf: v.spf,
    ...(v.spfHelo ? { spf_helo: v.spfHelo } : {}),
    dkim: v.dkim.join(","),
    dmarc: v.dmarc || "off",
    ...(v.dmarcPolicy ? { policy: v.dmarcPolicy } : {}),
    arc: v.arc,
    from_domain: v.fromDomain || undefined,
    action,
    dns: stats.queries,
    ...(removed ? { forged_ar_removed: removed } : {}),
  });
  return { prepend, message, ...(reject ? { reject } : {}) };
}

/** The listener's policy applied to the verdict. */
function decide(v: Verdict, ctx: AuthContext): { action: string; reject?: Reply } {
  const l = ctx.listener;
  if (l.dmarc === "enforce" && v.dmarc === "fail") {
    const policy = v.dmarcPolicy;
    const q = ctx.cfg.mailauth.quarantine;
    if (policy === "reject" || (policy === "quarantine" && q === "reject")) {
      return {
        action: "reject",
        reject: reply(
          550,
          "5.7.1",
          `Error: message rejected by the DMARC policy of ${v.fromDomain || "the From domain"}`,
        ),
      };
    }
    if (policy === "quarantine" && q === "header") return { action: "quarantine" };
  }
  // RFC 7489 §10.1: an SPF fail is refused only when DMARC did not pass, so aligned DKIM still wins.
  if (l.spfFail === "reject" && v.spf === "fail" && v.dmarc !== "pass") {
    return {
      action: "reject",
      reject: reply(550, "5.7.23", "Error: SPF check failed for the MAIL FROM domain"),
    };
  }
  return { action: "accept" };
}
