/**
 * Who may send where. Unauthenticated clients may only send to local domains;
 * relaying needs a client inside relay_networks (later: authentication or a
 * trusted local peer). Never an open relay by default.
 */
import { inNetworks } from "../config/cidr.ts";
import type { Config } from "../config/types.ts";
import { type Reply, reply } from "./reply.ts";

/** The domain part of an address, lower-cased; "" for a bare local part such as "postmaster". */
export function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : address.slice(at + 1).toLowerCase();
}

/** True when the address's domain is delivered here (a bare "postmaster" counts as local). */
export function isLocalAddress(cfg: Config, address: string): boolean {
  const domain = domainOf(address);
  return domain === "" || cfg.local.domains.includes(domain);
}

/** Checks one RCPT: null when accepted, else the reply refusing it. */
export function checkRecipient(
  cfg: Config,
  opts: { address: string; clientAddress: string },
): Reply | null {
  if (isLocalAddress(cfg, opts.address)) return null;
  if (inNetworks(opts.clientAddress, cfg.relayNetworks)) return null;
  // RFC 5321 §3.6.2 / RFC 3463 5.7.1: delivery not authorised.
  return reply(554, "5.7.1", `<${opts.address}>: Relay access denied`);
}
