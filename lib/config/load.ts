/**
 * Loads skiff.toml into a checked Config. A config file is merged over the
 * embedded default (lib/config/default.ts), so a file holds only what it
 * changes; tables merge key by key, arrays (relay_networks, [[listener]],
 * domains) replace the default's whole. Every mistake becomes a ConfigError
 * naming the file, the dotted key, what was expected and what was found, and
 * unknown keys are mistakes too: a misspelt limit that silently keeps its
 * default is worse than refusing to start. The CLI exits with EX_CONFIG.
 */

import { parse, TomlError } from "smol-toml";
import { formatCidr, parseCidr } from "./cidr.ts";
import { DEFAULT_CONFIG_TOML } from "./default.ts";
import { describeListener, readListenerLimits, readListeners } from "./listeners.ts";
import type { Config, LimitsConfig, LogConfig } from "./types.ts";
import {
  ConfigError,
  formatHostPort,
  HOSTNAME,
  HOSTPORT,
  inline,
  isHostname,
  mergeOver,
  parseHostPort,
  Reader,
  type Table,
} from "./reader.ts";
import { describeRouting, readDelivery, readRoutes } from "./routing.ts";
import { describeHttp, readHttp } from "./http.ts";
import { lookupGroup, readPasswd } from "../sys/passwd.ts";
import { describeMailauth, readDkim, readMailauth } from "./mailauth.ts";

/** Where the configuration came from when no file was given. */
export const EMBEDDED_SOURCE = "(embedded default)";

// The reader's vocabulary, re-exported for the CLI and the tests that import it from here.
export {
  ConfigError,
  formatHostPort,
  inline,
  isHostname,
  isTable,
  parseHostPort,
  Reader,
  type Table,
} from "./reader.ts";

/** Keys each table may hold; anything else is an "unknown key" error. */
const KEYS: Record<string, readonly string[]> = {
  "": [
    "hostname",
    "spool_dir",
    "relay_networks",
    "listener",
    "auth",
    "limits",
    "queue",
    "relay",
    "local",
    "log",
    "delivery",
    "route",
    "sendmail",
    "milter",
    "http",
    "user",
    "group",
    "dkim",
    "mailauth",
  ],
  listener: [
    "address",
    "mode",
    "owner",
    "protocol",
    "tls",
    "tls_cert",
    "tls_key",
    "auth",
    "auth_plaintext",
    "require_auth",
    "senders",
    "destination",
    "limits",
    "milters",
    "dmarc",
    "spf_fail",
  ],
  auth: ["credentials", "trusted_users", "max_failures", "failure_window", "concurrent_checks"],
  limits: [
    "message_size",
    "command_line_length",
    "recipients",
    "command_timeout",
    "data_timeout",
    "errors",
    "connections",
    "connections_per_ip",
    "session_timeout",
    "unknown_commands",
    "unauthenticated_commands",
    "greet_pause",
    "output_buffer",
  ],
  queue: [
    "retry_min",
    "retry_max",
    "lifetime",
    "worker_timeout",
    "workers",
    "scan_interval",
    "relay_concurrency",
    "min_free_bytes",
    "spool_sync",
  ],
  relay: ["relayhost", "connect_timeout", "reply_timeout"],
  local: ["domains", "maildir_root", "verify_recipients", "existing_maildirs_only"],
  log: ["format", "level", "file"],
  sendmail: ["maildrop_dir", "untrusted_sender"],
  milter: ["default_action", "connect_timeout", "command_timeout", "content_timeout"],
};

function readAuth(r: Reader, t: Table): Config["auth"] {
  const credentials = r.string(t, "auth.credentials", "credentials", '"" or a file path');
  const users = r.stringArray(t, "auth.trusted_users", "trusted_users", "login names");
  return {
    credentials: credentials === "" ? "" : r.path(t, "auth.credentials", "credentials"),
    trustedUsers: users,
    maxFailures: r.int(t, "auth", "max_failures"),
    failureWindow: r.seconds(t, "auth", "failure_window"),
    concurrentChecks: r.int(t, "auth", "concurrent_checks", { max: 1000, what: "1 to 1000" }),
  };
}

/** [sendmail]: the local submission shim (lib/cli/sendmail.ts, lib/maildrop/). */
function readSendmail(r: Reader, t: Table): Config["sendmail"] {
  return {
    maildropDir: r.path(t, "sendmail.maildrop_dir", "maildrop_dir"),
    untrustedSender: r.oneOf(t, "sendmail.untrusted_sender", "untrusted_sender", [
      "refuse",
      "warn",
    ]),
  };
}

/** [milter]: the default action and the deadlines of the milter protocol. */
function readMilter(r: Reader, t: Table): Config["milter"] {
  return {
    defaultAction: r.oneOf(t, "milter.default_action", "default_action", [
      "tempfail",
      "accept",
      "reject",
    ]),
    connectTimeout: r.seconds(t, "milter", "connect_timeout"),
    commandTimeout: r.seconds(t, "milter", "command_timeout"),
    contentTimeout: r.seconds(t, "milter", "content_timeout"),
  };
}

function readNetworks(r: Reader, t: Table): string[] {
  const nets = r.stringArray(t, "relay_networks", "relay_networks", "CIDR networks");
  return nets.map((n, i) => {
    try {
      return formatCidr(parseCidr(n));
    } catch (e) {
      const why = (e as Error).message.toLowerCase();
      return r.fail(`relay_networks[${i}]`, `a network such as "10.0.0.0/8" (${why})`, n);
    }
  });
}

function readDomains(r: Reader, t: Table): string[] {
  const domains = r.stringArray(t, "local.domains", "domains", "domain names");
  const out: string[] = [];
  domains.forEach((d, i) => {
    if (!isHostname(d)) r.fail(`local.domains[${i}]`, HOSTNAME, d);
    const lower = d.toLowerCase();
    if (!out.includes(lower)) out.push(lower);
  });
  return out;
}

/** true or false. */
function readBool(r: Reader, t: Table, key: string): boolean {
  const v = t[key.slice(key.lastIndexOf(".") + 1)];
  if (typeof v !== "boolean") r.fail(key, "true or false", v);
  return v;
}

/** A byte count that may be 0 (e.g. queue.min_free_bytes). */
function readBytes0(r: Reader, t: Table, key: string): number {
  const v = t[key.slice(key.lastIndexOf(".") + 1)];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    r.fail(key, "a number of bytes (0 or more)", v);
  }
  return v;
}

/** `user` and `group`: who `skiff serve` runs as after start; never root. */
function readUser(r: Reader, raw: Table): Config["user"] {
  const name = r.string(raw, "user", "user", '"" or a user name');
  const group = r.string(raw, "group", "group", '"" or a group name or number');
  if (name === "") {
    if (group !== "") r.fail("group", '"" while user is unset', group);
    return null;
  }
  const pw = readPasswd().find((e) => e.name === name);
  if (!pw) r.fail("user", "a user name in /etc/passwd", name);
  if (pw.uid === 0) r.fail("user", "an unprivileged user (not uid 0)", name);
  let gid = pw.gid;
  if (group !== "") {
    const g = lookupGroup(group);
    if (g === null) r.fail("group", "a group name in /etc/group or a number", group);
    gid = g;
  }
  if (gid === 0) r.fail(group === "" ? "user" : "group", "a group other than gid 0", group || name);
  return { name, uid: pw.uid, gid, home: pw.home, group };
}

/** local.maildir_root: a directory of Maildirs, or "~/PATH" for one in each user's home. */
function readMaildirRoot(r: Reader, local: Table): string {
  const text = r.string(local, "local.maildir_root", "maildir_root");
  if (!text.startsWith("~")) return r.path(local, "local.maildir_root", "maildir_root");
  // "~/Maildir" is `<the recipient's home>/Maildir`: plain names below the home, nothing else.
  const parts = text.slice(2).split("/");
  if (
    !text.startsWith("~/") ||
    parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\0"))
  ) {
    r.fail("local.maildir_root", 'a directory, or "~/Maildir" for each user\'s home', text);
  }
  return text;
}

function build(r: Reader, raw: Table, source: string): Config {
  r.table(raw, "", "");
  const hostname = r.string(raw, "hostname", "hostname", HOSTNAME);
  if (!isHostname(hostname)) r.fail("hostname", HOSTNAME, hostname);
  const limits = r.table(raw.limits, "limits", "limits");
  const queue = r.table(raw.queue, "queue", "queue");
  const relay = r.table(raw.relay, "relay", "relay");
  const local = r.table(raw.local, "local", "local");
  const log = r.table(raw.log, "log", "log");
  const relayhostText = r.string(relay, "relay.relayhost", "relayhost", `"" or ${HOSTPORT}`);
  const relayhost = relayhostText === ""
    ? null
    : parseHostPort(relayhostText) ?? r.fail("relay.relayhost", `"" or ${HOSTPORT}`, relayhostText);
  // [delivery] and [[route]] belong to the router (lib/config/routing.ts).
  const routeCtx = {
    fail: r.fail.bind(r),
    cwd: r.cwd,
    parseHostPort,
    formatHostPort,
    isHostname,
    inline,
  };
  const authCtx = { fail: r.fail.bind(r), cwd: r.cwd, isHostname };
  const config: Config = {
    delivery: readDelivery(routeCtx, raw.delivery),
    routes: readRoutes(routeCtx, raw.route),
    http: readHttp(routeCtx, raw.http),
    dkim: readDkim(authCtx, raw.dkim),
    mailauth: readMailauth(authCtx, raw.mailauth),
    source,
    hostname,
    user: readUser(r, raw),
    spoolDir: r.path(raw, "spool_dir", "spool_dir"),
    relayNetworks: readNetworks(r, raw),
    listeners: readListeners(r, raw.listener),
    auth: readAuth(r, r.table(raw.auth, "auth", "auth")),
    sendmail: readSendmail(r, r.table(raw.sendmail, "sendmail", "sendmail")),
    milter: readMilter(r, r.table(raw.milter, "milter", "milter")),
    limits: readListenerLimits(r, limits, "limits") as LimitsConfig,
    queue: {
      retryMin: r.seconds(queue, "queue", "retry_min"),
      retryMax: r.seconds(queue, "queue", "retry_max"),
      lifetime: r.int(queue, "queue", "lifetime"),
      workerTimeout: r.seconds(queue, "queue", "worker_timeout"),
      workers: r.int(queue, "queue", "workers"),
      scanInterval: r.seconds(queue, "queue", "scan_interval"),
      relayConcurrency: r.int(queue, "queue", "relay_concurrency"),
      minFreeBytes: readBytes0(r, queue, "queue.min_free_bytes"),
      spoolSync: r.oneOf<Config["queue"]["spoolSync"]>(queue, "queue.spool_sync", "spool_sync", [
        "syncfs",
        "fdatasync",
      ]),
    },
    relay: {
      relayhost,
      connectTimeout: r.seconds(relay, "relay", "connect_timeout"),
      replyTimeout: r.seconds(relay, "relay", "reply_timeout"),
    },
    local: {
      domains: readDomains(r, local),
      maildirRoot: readMaildirRoot(r, local),
      verifyRecipients: readBool(r, local, "local.verify_recipients"),
      existingMaildirsOnly: readBool(r, local, "local.existing_maildirs_only"),
    },
    log: {
      format: r.oneOf<LogConfig["format"]>(log, "log.format", "format", ["text", "json"]),
      level: r.oneOf<LogConfig["level"]>(log, "log.level", "level", [
        "debug",
        "info",
        "warning",
        "error",
      ]),
      file: r.string(log, "log.file", "file", '"" or a file path') === ""
        ? ""
        : r.path(log, "log.file", "file"),
    },
  };
  if (config.queue.retryMin > config.queue.retryMax) {
    r.fail(
      "queue.retry_min",
      `at most queue.retry_max (${config.queue.retryMax})`,
      config.queue.retryMin,
    );
  }
  if (config.local.maildirRoot.startsWith("~/") && !config.delivery.localUsers) {
    // Whose home? Only /etc/passwd can say, and only local_users looks there.
    r.fail(
      "local.maildir_root",
      'a directory ("~/..." needs delivery.local_users = true)',
      config.local.maildirRoot,
    );
  }
  return config;
}

function parseToml(text: string, file: string): Table {
  try {
    return parse(text) as Table;
  } catch (e) {
    if (!(e instanceof TomlError)) throw e;
    const what = e.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
    throw new ConfigError({
      file,
      key: "(syntax)",
      expected: "valid TOML",
      found: `${what} at line ${e.line}, column ${e.column}`,
      line: e.line,
      column: e.column,
    }, { cause: e });
  }
}

let defaultTable: Table | undefined;

/**
 * Parses and checks a config file's text, merged over the embedded default.
 * `file` names it in errors and becomes `source`; relative paths are resolved
 * against `opts.cwd` (default: the current directory). Throws ConfigError.
 */
export function parseConfig(text: string, file: string, opts: { cwd?: string } = {}): Config {
  defaultTable ??= parseToml(DEFAULT_CONFIG_TOML, EMBEDDED_SOURCE);
  const raw = mergeOver(defaultTable, parseToml(text, file));
  return build(new Reader(file, opts.cwd ?? Deno.cwd(), KEYS), raw, file);
}

/**
 * Loads the config file at `path`, or the embedded default when no path is
 * given. Throws ConfigError (key "(file)") when the file cannot be read.
 */
export async function loadConfig(path?: string): Promise<Config> {
  if (path === undefined) return parseConfig(DEFAULT_CONFIG_TOML, EMBEDDED_SOURCE);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(await Deno.readFile(path));
  } catch (e) {
    const found = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "permission denied"
      : e instanceof Deno.errors.IsADirectory
      ? "a directory"
      : e instanceof TypeError
      ? "bytes that are not UTF-8"
      : (e as Error).message;
    throw new ConfigError(
      { file: path, key: "(file)", expected: "a readable UTF-8 TOML file", found },
      { cause: e },
    );
  }
  return parseConfig(text, path);
}

/**
 * Renders the effective configuration back as TOML, every key present with
 * its value after merging and path resolution (for `skiff check-config`).
 * parseConfig accepts the result and yields the same Config.
 */
export function describeConfig(c: Config): string {
  const kv = (k: string, v: unknown) => `${k} = ${inline(v)}`;
  const lines = [
    `# skiff effective configuration, from ${c.source.replace(/[\r\n]/g, " ")}`,
    kv("hostname", c.hostname),
    kv("user", c.user?.name ?? ""),
    kv("group", c.user?.group ?? ""),
    kv("spool_dir", c.spoolDir),
    kv("relay_networks", c.relayNetworks),
  ];
  for (const l of c.listeners) lines.push("", "[[listener]]", ...describeListener(l));
  const section = (name: string, entries: [string, unknown][]) => {
    lines.push("", `[${name}]`, ...entries.map(([k, v]) => kv(k, v)));
  };
  const { limits: L, queue: Q, relay: R } = c;
  section("limits", [
    ["message_size", L.messageSize],
    ["command_line_length", L.commandLineLength],
    ["recipients", L.recipients],
    ["command_timeout", L.commandTimeout],
    ["data_timeout", L.dataTimeout],
    ["errors", L.errors],
    ["connections", L.connections],
    ["connections_per_ip", L.connectionsPerIp],
    ["session_timeout", L.sessionTimeout],
    ["unknown_commands", L.unknownCommands],
    ["unauthenticated_commands", L.unauthenticatedCommands],
    ["greet_pause", L.greetPause],
    ["output_buffer", L.outputBuffer],
  ]);
  section("milter", [
    ["default_action", c.milter.defaultAction],
    ["connect_timeout", c.milter.connectTimeout],
    ["command_timeout", c.milter.commandTimeout],
    ["content_timeout", c.milter.contentTimeout],
  ]);
  section("auth", [
    ["credentials", c.auth.credentials],
    ["trusted_users", c.auth.trustedUsers],
    ["max_failures", c.auth.maxFailures],
    ["failure_window", c.auth.failureWindow],
    ["concurrent_checks", c.auth.concurrentChecks],
  ]);
  section("queue", [
    ["retry_min", Q.retryMin],
    ["retry_max", Q.retryMax],
    ["lifetime", Q.lifetime],
    ["worker_timeout", Q.workerTimeout],
    ["workers", Q.workers],
    ["scan_interval", Q.scanInterval],
    ["relay_concurrency", Q.relayConcurrency],
    ["min_free_bytes", Q.minFreeBytes],
    ["spool_sync", Q.spoolSync],
  ]);
  section("relay", [
    ["relayhost", R.relayhost ? formatHostPort(R.relayhost) : ""],
    ["connect_timeout", R.connectTimeout],
    ["reply_timeout", R.replyTimeout],
  ]);
  section("local", [
    ["domains", c.local.domains],
    ["maildir_root", c.local.maildirRoot],
    ["verify_recipients", c.local.verifyRecipients],
    ["existing_maildirs_only", c.local.existingMaildirsOnly],
  ]);
  section("log", [["format", c.log.format], ["level", c.log.level], ["file", c.log.file]]);
  section("sendmail", [
    ["maildrop_dir", c.sendmail.maildropDir],
    ["untrusted_sender", c.sendmail.untrustedSender],
  ]);
  lines.push(...describeRouting({ inline, formatHostPort }, c.delivery, c.routes));
  lines.push(...describeHttp({ inline, formatHostPort }, c.http));
  lines.push(...describeMailauth(inline, c.mailauth, c.dkim));
  return lines.join("\n") + "\n";
}
