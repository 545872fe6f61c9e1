/**
 * Reads the [delivery] table and the [[route]] entries of skiff.toml into
 * typed settings, and renders them back for `skiff check-config`. Kept out
 * of lib/config/load.ts to keep that file short, and under lib/config/ so
 * the loader never imports the router (config sits below route); load.ts calls these with its own error reporter, so mistakes still name
 * the file, the dotted key, what was expected and what was found.
 */
import { resolve } from "node:path";
import type { HostPort } from "./types.ts";
import { lookupUser } from "../sys/passwd.ts";
import type { DeliveryConfig, Destination, RouteConfig, RunAs, TlsMode } from "./route_types.ts";
import { describeTlsPolicy, readTlsPolicyConfig, TLS_POLICY_KEYS } from "./tls_policy.ts";

/** Reports a mistake and never returns (load.ts's Reader.fail). */
export type Fail = (key: string, expected: string, found: unknown) => never;

/** What the parsers need from load.ts. */
export interface RouteReaderContext {
  fail: Fail;
  cwd: string;
  parseHostPort: (s: string) => HostPort | null;
  formatHostPort: (hp: HostPort) => string;
  isHostname: (s: string) => boolean;
  /** Renders a TOML inline value. */
  inline: (v: unknown) => string;
}

type Table = Record<string, unknown>;

const DELIVERY_KEYS = [
  "delay_warning",
  "max_received",
  "nameserver",
  "dns_timeout",
  "aliases",
  "forward",
  "cache_size",
  "cache_idle",
  "concurrency",
  "rate",
  "tls",
  "tls_ca_file",
  "auth_user",
  "auth_password",
  "local_mailbox",
  "mbox_dir",
  "local_users",
  ...TLS_POLICY_KEYS,
  "default_privs",
];

const ROUTE_KEYS = [
  "domain",
  "type",
  "host",
  "socket",
  "command",
  "user",
  "path",
  "tls",
  "tls_ca_file",
  "auth_user",
  "auth_password",
  "concurrency",
  "rate",
  "dsn",
  "text",
];

const KINDS = ["mx", "smtp", "lmtp", "program", "pipe", "mbox", "maildir", "discard", "error"];
const TLS_MODES: TlsMode[] = ["none", "may", "require", "verify"];
const HOSTPORT = 'an address "host:port" (IPv6 as "[::1]:25")';

function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function checkKeys(ctx: RouteReaderContext, t: Table, key: string, known: string[]): void {
  for (const k of Object.keys(t)) {
    if (!known.includes(k)) ctx.fail(`${key}.${k}`, `one of ${known.join(", ")}`, "unknown key");
  }
}

function count(ctx: RouteReaderContext, t: Table, key: string, name: string, min = 0): number {
  const v = t[name];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > 2_147_483) {
    ctx.fail(`${key}.${name}`, `an integer from ${min} to 2147483`, v);
  }
  return v;
}

function str(ctx: RouteReaderContext, t: Table, key: string, name: string, dflt = ""): string {
  const v = t[name] ?? dflt;
  if (typeof v !== "string" || v.includes("\0")) ctx.fail(`${key}.${name}`, "a string", v);
  return v;
}

function tls(ctx: RouteReaderContext, t: Table, key: string, dflt: TlsMode): TlsMode {
  const v = t.tls ?? dflt;
  if (!TLS_MODES.includes(v as TlsMode)) {
    ctx.fail(`${key}.tls`, `one of ${TLS_MODES.map((m) => `"${m}"`).join(", ")}`, v);
  }
  return v as TlsMode;
}

/**
 * A PEM bundle of CA certificates (`tls_ca_file`), resolved against cwd; it
 * must be readable and hold a certificate now, so a typo is a config error
 * rather than a queue of deferred mail. "" = none.
 */
function caFile(ctx: RouteReaderContext, t: Table, key: string): string {
  const name = str(ctx, t, key, "tls_ca_file");
  if (name === "") return "";
  const path = resolve(ctx.cwd, name);
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    return ctx.fail(
      `${key}.tls_ca_file`,
      "a readable PEM file of CA certificates",
      `${path} (${err instanceof Error ? err.message : err})`,
    );
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    ctx.fail(`${key}.tls_ca_file`, "a PEM file with at least one CERTIFICATE", path);
  }
  return path;
}

function runAs(ctx: RouteReaderContext, t: Table, key: string): RunAs | null {
  const name = str(ctx, t, key, "user");
  if (name === "") return null;
  const user = lookupUser(name);
  if (!user) ctx.fail(`${key}.user`, 'a user in /etc/passwd or "uid:gid"', name);
  return { name, uid: user.uid, gid: user.gid };
}

function command(ctx: RouteReaderContext, t: Table, key: string): string[] {
  const v = t.command;
  const what = 'an argv list such as ["/usr/bin/procmail", "-d", "{user}"] (no shell)';
  if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === "string")) {
    ctx.fail(`${key}.command`, what, v);
  }
  if (!(v[0] as string).startsWith("/")) ctx.fail(`${key}.command[0]`, "an absolute path", v[0]);
  return v as string[];
}

/** Reads the [delivery] table (merged over the default). */
export function readDelivery(ctx: RouteReaderContext, raw: unknown): DeliveryConfig {
  if (!isTable(raw)) ctx.fail("delivery", "a table [delivery]", raw);
  checkKeys(ctx, raw, "delivery", DELIVERY_KEYS);
  const ns = str(ctx, raw, "delivery", "nameserver");
  const nameserver = ns === ""
    ? null
    : ctx.parseHostPort(ns) ?? ctx.fail("delivery.nameserver", `"" or ${HOSTPORT}`, ns);
  const aliases = str(ctx, raw, "delivery", "aliases");
  const mailbox = raw.local_mailbox;
  if (mailbox !== "maildir" && mailbox !== "mbox") {
    ctx.fail("delivery.local_mailbox", '"maildir" or "mbox"', mailbox);
  }
  for (const b of ["forward", "local_users"]) {
    if (typeof raw[b] !== "boolean") ctx.fail(`delivery.${b}`, "true or false", raw[b]);
  }
  return {
    delayWarning: count(ctx, raw, "delivery", "delay_warning"),
    maxReceived: count(ctx, raw, "delivery", "max_received", 1),
    nameserver,
    dnsTimeout: count(ctx, raw, "delivery", "dns_timeout", 1),
    aliases: aliases === "" ? "" : resolve(ctx.cwd, aliases),
    forward: raw.forward as boolean,
    cacheSize: count(ctx, raw, "delivery", "cache_size"),
    cacheIdle: count(ctx, raw, "delivery", "cache_idle", 1),
    concurrency: count(ctx, raw, "delivery", "concurrency", 1),
    rate: count(ctx, raw, "delivery", "rate"),
    tls: tls(ctx, raw, "delivery", "may"),
    tlsCaFile: caFile(ctx, raw, "delivery"),
    authUser: str(ctx, raw, "delivery", "auth_user"),
    authPassword: str(ctx, raw, "delivery", "auth_password"),
    localMailbox: mailbox,
    mboxDir: resolve(ctx.cwd, str(ctx, raw, "delivery", "mbox_dir") || "."),
    localUsers: raw.local_users as boolean,
    tlsPolicy: readTlsPolicyConfig(raw, { cwd: ctx.cwd, fail: ctx.fail }),
    defaultPrivs: defaultPrivs(ctx, raw),
  };
}

/** delivery.default_privs: a user name or "uid:gid", never root (Postfix refuses that too). */
function defaultPrivs(ctx: RouteReaderContext, raw: Table): string {
  const v = raw.default_privs ?? "nobody";
  const what = 'a user in /etc/passwd or "uid:gid", not root';
  if (typeof v !== "string" || !/^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$/.test(v)) {
    ctx.fail("delivery.default_privs", what, v);
  }
  const ids = lookupUser(v as string);
  if (v === "root" || (ids && ids.uid === 0)) ctx.fail("delivery.default_privs", what, v);
  return v as string;
}

function destination(ctx: RouteReaderContext, t: Table, key: string): Destination {
  const kind = t.type;
  if (typeof kind !== "string" || !KINDS.includes(kind)) {
    ctx.fail(`${key}.type`, `one of ${KINDS.map((k) => `"${k}"`).join(", ")}`, kind);
  }
  switch (kind) {
    case "mx":
      return { kind, tls: tls(ctx, t, key, "may") };
    case "smtp": {
      const text = str(ctx, t, key, "host");
      const hp = ctx.parseHostPort(text) ?? ctx.fail(`${key}.host`, HOSTPORT, t.host);
      const ca = caFile(ctx, t, key);
      return {
        kind,
        ...hp,
        tls: tls(ctx, t, key, "may"),
        authUser: str(ctx, t, key, "auth_user"),
        authPassword: str(ctx, t, key, "auth_password"),
        ...(ca ? { tlsCaFile: ca } : {}),
      };
    }
    case "lmtp": {
      const socket = str(ctx, t, key, "socket");
      const text = str(ctx, t, key, "host");
      if ((socket === "") === (text === "")) {
        ctx.fail(key, 'either host = "host:port" or socket = "/path" for an LMTP route', t);
      }
      const hp = text === ""
        ? { host: "", port: 0 }
        : ctx.parseHostPort(text) ?? ctx.fail(`${key}.host`, HOSTPORT, text);
      const tlsMode = tls(ctx, t, key, "none");
      const ca = caFile(ctx, t, key);
      return {
        kind,
        ...hp,
        socket: socket && resolve(ctx.cwd, socket),
        tls: tlsMode,
        ...(ca ? { tlsCaFile: ca } : {}),
      };
    }
    case "program":
    case "pipe":
      return { kind, command: command(ctx, t, key), user: runAs(ctx, t, key) };
    case "mbox":
    case "maildir": {
      const path = str(ctx, t, key, "path");
      if (path === "") ctx.fail(`${key}.path`, "a directory path", t.path);
      return { kind, path: resolve(ctx.cwd, path), user: runAs(ctx, t, key) };
    }
    case "discard":
      return { kind };
    default: {
      const dsn = str(ctx, t, key, "dsn", "5.1.1");
      if (!/^[45]\.\d{1,3}\.\d{1,3}$/.test(dsn)) {
        ctx.fail(`${key}.dsn`, 'a status like "5.1.1"', dsn);
      }
      return {
        kind: "error",
        dsn,
        text: str(ctx, t, key, "text", "Mail for this domain is refused"),
      };
    }
  }
}

/** Reads the [[route]] array (absent = no routes). */
export function readRoutes(ctx: RouteReaderContext, raw: unknown): RouteConfig[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) ctx.fail("route", "an array of [[route]] tables", raw);
  const seen = new Set<string>();
  return raw.map((item, i) => {
    const key = `route[${i}]`;
    if (!isTable(item)) ctx.fail(key, "a [[route]] table", item);
    checkKeys(ctx, item, key, ROUTE_KEYS);
    const domain = str(ctx, item, key, "domain").toLowerCase();
    const bare = domain.startsWith("*.") ? domain.slice(2) : domain;
    if (domain !== "*" && !ctx.isHostname(bare)) {
      ctx.fail(`${key}.domain`, 'a domain, "*.domain" or "*"', item.domain);
    }
    if (seen.has(domain)) ctx.fail(`${key}.domain`, "a domain no other route names", domain);
    seen.add(domain);
    return {
      domain,
      destination: destination(ctx, item, key),
      concurrency: item.concurrency === undefined ? 0 : count(ctx, item, key, "concurrency"),
      rate: item.rate === undefined ? 0 : count(ctx, item, key, "rate"),
    };
  });
}

/** The [delivery] table and [[route]] entries as TOML lines (parse back to the same values). */
export function describeRouting(
  ctx: Pick<RouteReaderContext, "inline" | "formatHostPort">,
  d: DeliveryConfig,
  routes: RouteConfig[],
): string[] {
  const kv = (k: string, v: unknown) => `${k} = ${ctx.inline(v)}`;
  const lines = [
    "",
    "[delivery]",
    kv("delay_warning", d.delayWarning),
    kv("max_received", d.maxReceived),
    kv("nameserver", d.nameserver ? ctx.formatHostPort(d.nameserver) : ""),
    kv("dns_timeout", d.dnsTimeout),
    kv("aliases", d.aliases),
    kv("forward", d.forward),
    kv("cache_size", d.cacheSize),
    kv("cache_idle", d.cacheIdle),
    kv("concurrency", d.concurrency),
    kv("rate", d.rate),
    kv("tls", d.tls),
    kv("tls_ca_file", d.tlsCaFile),
    kv("auth_user", d.authUser),
    kv("auth_password", d.authPassword),
    kv("local_mailbox", d.localMailbox),
    kv("mbox_dir", d.mboxDir),
    kv("local_users", d.localUsers),
    ...describeTlsPolicy(d.tlsPolicy, { inline: ctx.inline, nameserver: d.nameserver !== null }),
    kv("default_privs", d.defaultPrivs),
  ];
  for (const r of routes) {
    lines.push("", "[[route]]", kv("domain", r.domain), kv("type", r.destination.kind));
    const dest = r.destination as Record<string, unknown>;
    if (dest.kind === "smtp" || (dest.kind === "lmtp" && dest.host !== "")) {
      lines.push(kv("host", ctx.formatHostPort(dest as unknown as HostPort)));
    }
    for (const k of ["socket", "command", "path", "tls", "dsn", "text"]) {
      if (dest[k] !== undefined && dest[k] !== "") lines.push(kv(k, dest[k]));
    }
    if (dest.tlsCaFile) lines.push(kv("tls_ca_file", dest.tlsCaFile));
    if (dest.authUser) lines.push(kv("auth_user", dest.authUser));
    if (dest.authPassword) lines.push(kv("auth_password", dest.authPassword));
    if (dest.user) lines.push(kv("user", (dest.user as RunAs).name));
    if (r.concurrency) lines.push(kv("concurrency", r.concurrency));
    if (r.rate) lines.push(kv("rate", r.rate));
  }
  return lines;
}
