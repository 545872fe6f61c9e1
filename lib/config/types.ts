/**
 * The validated, typed configuration every part of skiff reads. The TOML
 * file (conf/skiff.toml documents each key) is parsed and checked into this
 * shape by lib/config/load.ts; relative paths are resolved against the
 * directory skiff was started in.
 */
import type { DeliveryConfig, RouteConfig } from "../route/types.ts";
import type { SocketOwner } from "./owner.ts";

/** A host and port, e.g. a listener address or a relayhost. */
export interface HostPort {
  host: string;
  port: number;
}

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
}

/** Authentication settings shared by the listeners. */
export interface AuthConfig {
  /** Credentials file: "user:scrypt$..." lines (`skiff passwd` makes one); "" for none. */
  credentials: string;
  /** Login names whose peercred sessions may use any sender (root always may). */
  trustedUsers: string[];
  /** Failed AUTH attempts from one client IP within failure_window before AUTH is refused. */
  maxFailures: number;
  /** Seconds a client's failed attempts are remembered. */
  failureWindow: number;
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
}

/** Logging. */
export interface LogConfig {
  format: "text" | "json";
  level: "debug" | "info" | "warning" | "error";
}

/** The sendmail shim and local submission. */
export interface SendmailConfig {
  /** Where `sendmail` drops messages while no manager runs (mode 1733, like Postfix's maildrop). */
  maildropDir: string;
  /** What an untrusted user's `-f other@address` gets: refused, or an X-Authentication-Warning header. */
  untrustedSender: "refuse" | "warn";
}

/** The whole configuration. */
export interface Config {
  /** Where this came from: a file path, or "(embedded default)". */
  source: string;
  /** Name used in the greeting, EHLO, Received and Message-ID headers. */
  hostname: string;
  /** Spool directory (incoming/, queue/ beneath it). */
  spoolDir: string;
  /** Networks (CIDR) whose unauthenticated clients may relay. */
  relayNetworks: string[];
  listeners: ListenerConfig[];
  auth: AuthConfig;
  sendmail: SendmailConfig;
  limits: LimitsConfig;
  queue: QueueConfig;
  relay: RelayConfig;
  local: LocalConfig;
  log: LogConfig;
  /** Delivery settings ([delivery], lib/route/config.ts). */
  delivery: DeliveryConfig;
  /** Per-domain destinations ([[route]]), in file order. */
  routes: RouteConfig[];
}
