/**
 * Mail addresses as the rest of skiff uses them after the SMTP grammar
 * (lib/wire/command.ts) has accepted them: splitting at the last "@", the
 * lower-case rules, and the one check that a local part can name a mailbox
 * on disk. One module so the server's policy, the router, the worker, the
 * control commands and maildrop agree on what "the domain" of an address is
 * (chasquid's internal/envelope is the model).
 *
 * Case: domains are case-insensitive (RFC 5321 §2.4) and compared lower-cased;
 * local parts are case-sensitive on the wire but skiff's local mailboxes,
 * aliases and users are matched lower-cased, as Postfix and chasquid do.
 */
import { DeliveryError } from "./delivery_error.ts";

/** An address split at its last "@", case kept; `domain` is "" for a bare local part. */
export interface AddressParts {
  local: string;
  domain: string;
}

/** Splits an address at its last "@" (a quoted local part may hold "@"); case is kept. */
export function splitAddress(address: string): AddressParts {
  const at = address.lastIndexOf("@");
  return at < 0
    ? { local: address, domain: "" }
    : { local: address.slice(0, at), domain: address.slice(at + 1) };
}

/** The domain part of an address, lower-cased; "" for a bare local part such as "postmaster". */
export function domainOf(address: string): string {
  return splitAddress(address).domain.toLowerCase();
}

/** The local part of an address (the whole of a bare local part), case kept. */
export function localPart(address: string): string {
  return splitAddress(address).local;
}

/** Local part and domain, both lower-cased: the form local users, aliases and routes match. */
export function lowerParts(address: string): { user: string; domain: string } {
  const p = splitAddress(address);
  return { user: p.local.toLowerCase(), domain: p.domain.toLowerCase() };
}

/** NAME_MAX on Linux file systems: a longer mailbox name cannot exist. */
const NAME_MAX = 255;

/**
 * Checks a local part is usable as one directory name and lower-cases it.
 * Refused: empty, ".", "..", anything with "/" (it would leave the root),
 * NUL or other control characters, more than 255 bytes. Permanent, 5.1.1:
 * no such mailbox can ever exist.
 */
export function mailboxName(user: string): string {
  const bad = user === "" || user === "." || user === ".." || user.includes("/") ||
    /\p{Cc}/u.test(user) || new TextEncoder().encode(user).length > NAME_MAX;
  if (bad) {
    throw new DeliveryError(`Invalid mailbox name ${JSON.stringify(user)}`, {
      permanent: true,
      dsn: "5.1.1",
    });
  }
  return user.toLowerCase();
}
