/**
 * A listener's fixed destination (`destination = "transport:nexthop"` on a
 * [[listener]]): everything accepted there goes to one place, whatever the
 * recipient's domain, as Postfix's per-service transport override does. The
 * spec is stored in the envelope (params.destination) when the message is
 * received and honoured here when it is delivered; "router" means the
 * routing table decides.
 */
import { lowerParts, mailboxName } from "../mail/address.ts";
import { parseHostPort } from "../config/reader.ts";
import type { Config } from "../config/types.ts";
import type { Routed } from "./router.ts";
import type { Destination } from "../config/route_types.ts";

/** The destination a spec names, or null for "router" (or a spec this version cannot read). */
export function fixedDestination(cfg: Config, spec: string): Destination | null {
  const colon = spec.indexOf(":");
  if (spec === "router" || colon < 0) return null;
  const transport = spec.slice(0, colon);
  const next = spec.slice(colon + 1);
  const hp = parseHostPort(next);
  switch (transport) {
    case "smtp":
      return hp
        ? { kind: "smtp", ...hp, tls: cfg.delivery.tls, authUser: "", authPassword: "" }
        : null;
    case "lmtp": {
      const socket = next.startsWith("unix:") ? next.slice("unix:".length) : next;
      if (socket.startsWith("/")) return { kind: "lmtp", host: "", port: 0, socket, tls: "none" };
      return hp ? { kind: "lmtp", ...hp, socket: "", tls: "none" } : null;
    }
    case "maildir":
      // "maildir:" alone means the local mailboxes; home Maildirs need the router's passwd lookup.
      if (!next && cfg.local.maildirRoot.startsWith("~/")) return null;
      return { kind: "maildir", path: next || cfg.local.maildirRoot, user: null };
    case "discard":
      return { kind: "discard" };
  }
  return null;
}

/** Routes one recipient to a listener's fixed destination; null when the router decides. */
export function fixedRoute(cfg: Config, spec: string | undefined, address: string): Routed | null {
  if (spec === undefined) return null;
  const destination = fixedDestination(cfg, spec);
  if (destination === null) return null;
  const { user, domain } = lowerParts(address);
  if (destination.kind === "maildir") {
    try {
      mailboxName(user);
    } catch {
      return {
        type: "fail",
        dsn: "5.1.1",
        text: `Bad mailbox name ${JSON.stringify(user)}`,
        why: spec,
      };
    }
  }
  return {
    type: "deliver",
    destination,
    domain,
    user,
    runAs: null,
    concurrency: cfg.delivery.concurrency,
    rate: cfg.delivery.rate,
    why: `the listener's fixed destination ${spec}`,
  };
}
