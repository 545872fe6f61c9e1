/**
 * The validated, typed configuration every part of skiff reads. The TOML
 * file (conf/skiff.toml documents each key) is parsed and checked into this
 * shape by lib/config/load.ts; relative paths are resolved against the
 * directory skiff was started in.
 */

/** A host and port, e.g. a listener address or a relayhost. */
export interface HostPort {
  host: string;
  port: number;
}

/** One listening socket. (Issue 3 grows auth, TLS and policy here.) */
export interface ListenerConfig {
  /** "127.0.0.1:2525", "[::1]:25". */
  address: HostPort;
  protocol: "smtp";
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
  limits: LimitsConfig;
  queue: QueueConfig;
  relay: RelayConfig;
  local: LocalConfig;
  log: LogConfig;
}
