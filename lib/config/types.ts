/**
 * The validated, typed configuration every part of skiff reads. The TOML
 * file (conf/skiff.toml documents each key) is parsed and checked into this
 * shape by lib/config/load.ts; relative paths are resolved against the
 * directory skiff was started in.
 */
import type { DeliveryConfig, RouteConfig } from "./route_types.ts";
import type { SocketOwner } from "./owner.ts";
import type { HttpConfig } from "./http.ts";
import type { DkimKeyConfig, DmarcPolicy, MailauthConfig, SpfFailPolicy } from "./mailauth.ts";

import type { HostPort } from "./reader.ts";
export type { HostPort };

/** Where a listener listens: a TCP host:port or a unix socket path. */
export type ListenAddress =
  | { kind: "tcp"; host: string; port: number }
  | { kind: "unix"; path: string };

/**
 * One listening socket: address, protocol, TLS, authentication,
 * authorisation and destination (conf/skiff.toml documents each key).
 */
export interface ListenerConfig {
  /** `address = "127.0.0.1:2525"`, `"[::1]:25"` or `"unix:/path/to.sock"`. */
  address: ListenAddress;
  /** Unix sockets: permission bits of the socket file (default 0o666). */
  mode: number;
  /** Unix sockets: owner (and group) given to the socket file after bind; absent keeps skiff's. */
  owner?: SocketOwner;
  protocol: "smtp" | "lmtp";
  /** "starttls" offers STARTTLS (RFC 3207); "implicit" is TLS from the first byte (RFC 8314). */
  tls: "none" | "starttls" | "implicit";
  /** PEM certificate chain and key files; "" when tls is "none". Re-read on SIGHUP. */
  tlsCert: string;
  tlsKey: string;
  /** "sasl": AUTH PLAIN/LOGIN against auth.credentials; "peercred": the kernel's SO_PEERCRED (unix only). */
  auth: "none" | "sasl" | "peercred";
  /** Allow AUTH without TLS, but only from a loopback client. */
  authPlaintext: boolean;
  /** MAIL needs an authenticated identity (530 5.7.0 otherwise); a submission port. */
  requireAuth: boolean;
  /** "own": an authenticated identity may use only its own sender addresses; "any": no check. */
  senders: "own" | "any";
  /** "router" (route by recipient) or one fixed "transport:nexthop" for all mail accepted here; stored in the envelope's params.destination. */
  destination: string;
  /** Overrides of [limits] for this listener. */
  limits: Partial<LimitsConfig>;
  /** Milters consulted for mail accepted here, in order: "inet:host:port" or "unix:/path". */
  milters: string[];
  /** Inbound DMARC policy for unauthenticated mail (docs/authentication.md). */
  dmarc: DmarcPolicy;
  /** What SPF "fail" does to unauthenticated mail. */
  spfFail: SpfFailPolicy;
}

/** Authentication settings shared by the listeners. */
export interface AuthConfig {
  /** Credentials file: "user:scrypt$..." lines (`skiff passwd` makes one); "" for none. */
  credentials: string;
  /** Login names whose peercred sessions may use any sender (root always may). */
  trustedUsers: string[];
  /** Failed (or running) AUTH attempts from one client network (IPv4 /24, IPv6 /64) within failure_window before AUTH is refused. */
  maxFailures: number;
  /** Seconds a client's failed attempts are remembered. */
  failureWindow: number;
  /** Password checks (scrypt, ~32 MiB each) running at once, for all clients; more get 454. */
  concurrentChecks: number;
}

/** Size, count and time limits of an SMTP server session. */
export interface LimitsConfig {
  /** Largest message accepted, in bytes (counted after dot-unstuffing, before the Received header). */
  messageSize: number;
  /** Longest command line accepted, in bytes including CRLF (RFC 5321 §4.5.3.1.4: at least 512). */
  commandLineLength: number;
  /** Recipients per message (RFC 5321 §4.5.3.1.8: at least 100). */
  recipients: number;
  /** Seconds to wait for the next command (RFC 5321 §4.5.3.2.7: 5 minutes). */
  commandTimeout: number;
  /** Seconds to wait for the next chunk of message data (RFC 5321 §4.5.3.2.6 asks 3 minutes per block; we allow the whole DATA this long between chunks). */
  dataTimeout: number;
  /** Errors in one session before it is closed with 421. */
  errors: number;
  /** Concurrent inbound connections. */
  connections: number;
  /** Concurrent inbound connections from one client IP. */
  connectionsPerIp: number;
  /** Seconds one whole session may last, whatever the client does. */
  sessionTimeout: number;
  /** Unknown commands in one session before it is closed with 421. */
  unknownCommands: number;
  /** Commands before authentication on a listener with require_auth, before 421. */
  unauthenticatedCommands: number;
  /** Seconds to wait before the greeting; a client that talks first is refused with 554 (0: no wait, still checked). */
  greetPause: number;
  /** Bytes of replies that may wait for a client that does not read; past it, or past command_timeout, the client is dropped. */
  outputBuffer: number;
}

/** Queue manager tuning. */
export interface QueueConfig {
  /** First retry delay in seconds; doubles per attempt. */
  retryMin: number;
  /** Largest retry delay in seconds. */
  retryMax: number;
  /** Seconds a message may stay queued before its remaining recipients fail (4.4.7). */
  lifetime: number;
  /** Seconds a worker child may take for one job before it is killed. */
  workerTimeout: number;
  /** Worker children running at once. */
  workers: number;
  /** Seconds between spool scans that pick up anything the schedule missed. */
  scanInterval: number;
  /** Outgoing SMTP deliveries running at once. */
  relayConcurrency: number;
  /** Bytes of the spool's file system kept free for journal records and bounces; MAIL needs this plus 1.5 × the message size. */
  minFreeBytes: number;
  /**
   * How spool writes are made durable: "syncfs" (one shared syncfs of the
   * spool's file system per batch of concurrent commits) or "fdatasync"
   * (each file on its own, directory fsyncs shared).
   */
  spoolSync: "syncfs" | "fdatasync";
}

/** Where non-local mail goes, and the client's timeouts. */
export interface RelayConfig {
  /** The smarthost; null defers non-local mail (MX delivery comes later). */
  relayhost: HostPort | null;
  /** Seconds to connect. */
  connectTimeout: number;
  /** Seconds to wait for each reply. */
  replyTimeout: number;
}

/** Local delivery. */
export interface LocalConfig {
  /** Domains whose mail is delivered here (lower case). */
  domains: string[];
  /** Maildirs live at `${maildirRoot}/${user}/`. */
  maildirRoot: string;
  /** Refuse unknown local users at RCPT (550 5.1.1) where skiff can know them (lib/route/verify.ts). */
  verifyRecipients: boolean;
  /** The Maildirs under maildir_root are the list of local users (none is made on delivery for others). */
  existingMaildirsOnly: boolean;
}

/** Logging. */
export interface LogConfig {
  format: "text" | "json";
  level: "debug" | "info" | "warning" | "error";
  /** The manager's mail log file (appended; reopened on reload); "" = stderr (journald). */
  file: string;
}

/** The sendmail shim and local submission. */
export interface SendmailConfig {
  /** Where `sendmail` drops messages while no manager runs (mode 1733, like Postfix's maildrop). */
  maildropDir: string;
  /** What an untrusted user's `-f other@address` gets: refused, or an X-Authentication-Warning header. */
  untrustedSender: "refuse" | "warn";
}

/** [milter]: how the listeners' milters are talked to (lib/milter/). */
export interface MilterConfig {
  /** What a message gets when a milter is down, slow or broken (Postfix's milter_default_action). */
  defaultAction: "tempfail" | "accept" | "reject";
  /** Seconds: connecting, each protocol step, and the end of message (content scan). */
  connectTimeout: number;
  commandTimeout: number;
  contentTimeout: number;
}

/** The unprivileged user `skiff serve` switches to (`user`, `group`). */
export interface ManagerUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** The `group` key as written ("" = the user's primary group). */
  group: string;
}

/** The whole configuration. */
export interface Config {
  /** Where this came from: a file path, or "(embedded default)". */
  source: string;
  /** Name used in the greeting, EHLO, Received and Message-ID headers. */
  hostname: string;
  /** Run as this user after start (docs/security.md); null when `user` is unset. */
  user: ManagerUser | null;
  /** Spool directory (incoming/, queue/ beneath it). */
  spoolDir: string;
  /** Networks (CIDR) whose unauthenticated clients may relay. */
  relayNetworks: string[];
  listeners: ListenerConfig[];
  auth: AuthConfig;
  sendmail: SendmailConfig;
  milter: MilterConfig;
  limits: LimitsConfig;
  queue: QueueConfig;
  relay: RelayConfig;
  local: LocalConfig;
  log: LogConfig;
  /** Delivery settings ([delivery], lib/config/routing.ts). */
  delivery: DeliveryConfig;
  /** Per-domain destinations ([[route]]), in file order. */
  routes: RouteConfig[];
  /** The monitoring endpoint ([http], lib/config/http.ts). */
  http: HttpConfig;
  /** DKIM signing keys ([[dkim]]), in file order. */
  dkim: DkimKeyConfig[];
  /** Inbound verification settings ([mailauth]). */
  mailauth: MailauthConfig;
}
