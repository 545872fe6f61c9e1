/**
 * The routing vocabulary shared by the config loader, the router, the queue
 * manager and the delivery agents: where one recipient's mail goes
 * (a Destination) and the delivery settings of the [delivery] table.
 */
import type { HostPort } from "./reader.ts";
import type { RunAs } from "../sys/passwd.ts";
import type { TlsPolicyConfig } from "./tls_policy.ts";

/**
 * STARTTLS policy of an SMTP/LMTP destination. "may": use it when offered,
 * without verifying the certificate (opportunistic, RFC 3207 §4.1 / RFC 7435);
 * "require": fail (temporarily) without TLS; "verify": TLS with a certificate
 * valid for the host name; "none": never.
 */
export type TlsMode = "none" | "may" | "require" | "verify";

/** A user to run as (lib/sys/passwd.ts), re-exported with the rest of the routing vocabulary. */
export type { RunAs };

/** Where mail for a recipient goes. */
export type Destination =
  | { kind: "mx"; tls: TlsMode }
  | {
    kind: "smtp";
    host: string;
    port: number;
    tls: TlsMode;
    authUser: string;
    authPassword: string;
    /** PEM bundle of CAs trusted for tls = "verify"; absent = [delivery] tls_ca_file. */
    tlsCaFile?: string;
  }
  | {
    kind: "lmtp";
    host: string;
    port: number;
    socket: string;
    tls: TlsMode;
    tlsCaFile?: string;
  }
  | { kind: "program"; command: string[]; user: RunAs | null }
  | { kind: "pipe"; command: string[]; user: RunAs | null }
  | {
    kind: "mbox";
    path: string;
    user: RunAs | null;
    /** A /file target of an alias or .forward (not a mailbox under mbox_dir or a route). */
    file?: boolean;
  }
  /** `exact`: path is the Maildir itself (a home Maildir), not the directory of users' Maildirs. */
  | { kind: "maildir"; path: string; user: RunAs | null; exact?: boolean }
  | { kind: "discard" }
  | { kind: "error"; dsn: string; text: string };

/** One [[route]] entry. */
export interface RouteConfig {
  /** "example.org" (exact), "*.example.org" (subdomains) or "*" (everything non-local). */
  domain: string;
  destination: Destination;
  /** Deliveries at once to this destination; 0 = delivery.concurrency. */
  concurrency: number;
  /** Messages per second to this destination; 0 = delivery.rate. */
  rate: number;
}

/** The [delivery] table. */
export interface DeliveryConfig {
  /** Seconds after which the sender gets a delay warning (RFC 3464 action=delayed); 0 = never. */
  delayWarning: number;
  /** More Received headers than this fails the message with 5.4.6 (a mail loop). */
  maxReceived: number;
  /** DNS server for MX/A/AAAA lookups; null = the system's resolver. */
  nameserver: HostPort | null;
  /** Seconds for one DNS query. */
  dnsTimeout: number;
  /** The aliases file (/etc/aliases format); "" = none. `skiff newaliases` compiles it. */
  aliases: string;
  /** Honour ~/.forward of local users found in /etc/passwd. */
  forward: boolean;
  /** Idle outgoing SMTP/LMTP sessions kept for reuse, in all. */
  cacheSize: number;
  /** Seconds an idle session is kept. */
  cacheIdle: number;
  /** Deliveries at once per destination. */
  concurrency: number;
  /** Messages per second per destination; 0 = unlimited. */
  rate: number;
  /** STARTTLS policy for MX delivery and the relayhost. */
  tls: TlsMode;
  /** PEM bundle of CAs trusted for tls = "verify" (MX, relayhost, routes without their own); "" = none. */
  tlsCaFile: string;
  /** Relayhost AUTH identity ("" = no AUTH). */
  authUser: string;
  authPassword: string;
  /** Local domains' mailboxes: "maildir" (local.maildir_root) or "mbox" (mbox_dir/<user>). */
  localMailbox: "maildir" | "mbox";
  mboxDir: string;
  /** Run local deliveries as the recipient's uid/gid (from /etc/passwd) when skiff is root. */
  localUsers: boolean;
  /** MTA-STS, DANE and TLS-RPT switches (lib/config/tls_policy.ts). */
  tlsPolicy: TlsPolicyConfig;
  /**
   * The user that pipe routes, alias commands and files without `user =`
   * run as when skiff is root (Postfix's default_privs); never root.
   */
  defaultPrivs: string;
}
