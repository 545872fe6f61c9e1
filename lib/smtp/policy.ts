/**
 * Who may send where (the listener's authorisation). Unauthenticated
 * clients may only send to local domains unless inside relay_networks;
 * an authenticated client (SASL or unix peer credentials) may relay. With
 * `senders = "own"` an identity may use only its own sender addresses:
 * a peercred uid its <login>@<hostname or a local domain> (root and
 * [auth] trusted_users any), a SASL user its own name. Never an open relay
 * by default.
 */
import { domainOf, lowerParts } from "../mail/address.ts";
import type { Identity } from "../auth/identity.ts";
import { inNetworks } from "../config/cidr.ts";
import type { Config, ListenerConfig } from "../config/types.ts";
import { type Reply, reply } from "../wire/reply.ts";

/** Who a session is (lib/auth/identity.ts), re-exported for the server's modules. */
export type { Identity };

// The address vocabulary lives in lib/mail/address.ts; re-exported for the server's callers.
export { domainOf };

/** True when the address's domain is delivered here (a bare "postmaster" counts as local). */
export function isLocalAddress(cfg: Config, address: string): boolean {
  const domain = domainOf(address);
  return domain === "" || cfg.local.domains.includes(domain);
}

/** Checks one RCPT: null when accepted, else the reply refusing it. */
export function checkRecipient(
  cfg: Config,
  opts: { address: string; clientAddress: string; identity?: Identity | null },
): Reply | null {
  if (isLocalAddress(cfg, opts.address)) return null;
  // RFC 4954 §6 / RFC 6409: an authenticated client may relay.
  if (opts.identity) return null;
  if (opts.clientAddress !== "" && inNetworks(opts.clientAddress, cfg.relayNetworks)) return null;
  // RFC 5321 §3.6.2 / RFC 3463 5.7.1: delivery not authorised.
  return reply(554, "5.7.1", `<${opts.address}>: Relay access denied`);
}

/** True when `address` belongs to the identity under `senders = "own"`. */
export function ownsSender(cfg: Config, id: Identity, address: string): boolean {
  if (id.trusted || address === "") return true;
  const lower = address.toLowerCase();
  if (id.kind === "sasl" && id.name.includes("@")) return lower === id.name.toLowerCase();
  if (!lower.includes("@")) return false;
  const { user, domain } = lowerParts(address);
  const ownDomain = domain === cfg.hostname.toLowerCase() || cfg.local.domains.includes(domain);
  return ownDomain && user === id.name.toLowerCase();
}

/** Checks MAIL FROM against the listener's authorisation: null when allowed. */
export function checkSender(
  cfg: Config,
  listener: ListenerConfig,
  opts: { address: string; identity: Identity | null },
): Reply | null {
  const id = opts.identity;
  if (!id) {
    // RFC 4954 §6: 530 when the listener requires authentication.
    if (listener.requireAuth) return reply(530, "5.7.0", "Authentication required");
    return null;
  }
  if (listener.senders === "own" && !ownsSender(cfg, id, opts.address)) {
    // RFC 3463 5.7.1: the sender is not authorised for this identity.
    return reply(553, "5.7.1", `<${opts.address}>: Sender address not owned by user ${id.name}`);
  }
  return null;
}
