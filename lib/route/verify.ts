/**
 * Recipient verification at RCPT for local domains (issue 9, finding 6):
 * an unknown local user is refused with 550 5.1.1 during the SMTP dialogue,
 * as Postfix's local_recipient_maps does, instead of being accepted and
 * bounced later to a sender that is often forged (backscatter). skiff
 * checks only where it can know: the aliases table, /etc/passwd when
 * delivery.local_users makes it the list of mailboxes, and the Maildirs
 * under local.maildir_root when local.existing_maildirs_only says they are.
 * Without such an authority every local part is a mailbox (Maildirs are
 * made on first delivery), so nothing is refused. A [[route]] for the
 * domain to another server (LMTP, SMTP, a program) leaves the check to it.
 */
import type { Config } from "../config/types.ts";
import { domainOf, localPart, mailboxName } from "../mail/address.ts";
import { readPasswd } from "../sys/passwd.ts";
import type { AliasTable } from "./aliases.ts";
import { findRoute } from "./router.ts";

/** How long one read of /etc/passwd is used. */
const PASSWD_CACHE_MS = 1000;

/** Decides whether a local address names a known recipient. */
export type RecipientCheck = (address: string) => boolean;

/**
 * The check for `cfg`, or null when skiff cannot know its local users (or
 * local.verify_recipients is false): then every local recipient is taken.
 */
export function recipientCheck(cfg: Config, aliases: () => AliasTable): RecipientCheck | null {
  if (!cfg.local.verifyRecipients) return null;
  const d = cfg.delivery;
  if (!d.localUsers && !cfg.local.existingMaildirsOnly) return null;
  let users: Set<string> | null = null;
  let usersAt = -Infinity;
  const passwdHas = (name: string) => {
    if (users === null || Date.now() - usersAt > PASSWD_CACHE_MS) {
      users = new Set(readPasswd().map((e) => e.name.toLowerCase()));
      usersAt = Date.now();
    }
    return users.has(name);
  };
  return (address) => {
    const user = localPart(address).toLowerCase();
    // RFC 5321 §4.5.1: postmaster is always accepted.
    if (user === "postmaster") return true;
    if (aliases().has(user)) return true;
    // The router's order: with local_users, /etc/passwd decides before any route.
    if (d.localUsers) return passwdHas(user);
    const route = findRoute(cfg, domainOf(address));
    if (route && route.destination.kind !== "maildir") return true;
    if (!route && d.localMailbox !== "maildir") return true;
    const root = route?.destination.kind === "maildir"
      ? route.destination.path
      : cfg.local.maildirRoot;
    try {
      mailboxName(user);
      return Deno.statSync(`${root}/${user}`).isDirectory;
    } catch {
      return false;
    }
  };
}
