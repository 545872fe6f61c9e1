/**
 * The [[listener]] tables and the limit keys they share with [limits]: each
 * listener names its address (TCP or unix socket), protocol, TLS,
 * authentication, authorisation and destination. Checked here so that a
 * listener that could never work (TLS without a certificate, peercred on
 * TCP, an open relay by configuration) fails at start-up with its key named.
 */
import {
  formatHostPort,
  inline,
  isHostname,
  isTable,
  parseHostPort,
  type Reader,
  type Table,
} from "./reader.ts";
import { resolveOwner } from "./owner.ts";
import { parseMilterAddress } from "./milter_address.ts";
import type { LimitsConfig, ListenAddress, ListenerConfig } from "./types.ts";
import { LISTENER_DEFAULTS, readListenerPolicy } from "./mailauth.ts";

/**
 * A listener's destination spec: "router" or "transport:nexthop". The
 * config loader checks listeners with it, and stored envelopes
 * (params.destination) are checked with it by lib/spool/envelope_check.ts.
 */
export const DESTINATION = /^(router|(smtp|lmtp|maildir|discard):[\x21-\x7e]*)$/;

const ADDRESS =
  'an address "host:port" with a port 1-65535 (IPv6 as "[::1]:25") or "unix:/path/to.sock"';
/** sockaddr_un.sun_path holds 108 bytes including the final NUL. */
const MAX_UNIX_PATH = 107;

/** The limit keys, their Config names, and whether 0 is allowed. */
const LIMIT_KEYS: [string, keyof LimitsConfig, "int" | "seconds" | "seconds0"][] = [
  ["message_size", "messageSize", "int"],
  ["command_line_length", "commandLineLength", "int"],
  ["recipients", "recipients", "int"],
  ["command_timeout", "commandTimeout", "seconds"],
  ["data_timeout", "dataTimeout", "seconds"],
  ["errors", "errors", "int"],
  ["connections", "connections", "int"],
  ["connections_per_ip", "connectionsPerIp", "int"],
  ["session_timeout", "sessionTimeout", "seconds"],
  ["unknown_commands", "unknownCommands", "int"],
  ["unauthenticated_commands", "unauthenticatedCommands", "int"],
  ["greet_pause", "greetPause", "seconds0"],
  ["output_buffer", "outputBuffer", "int"],
];

/**
 * Reads limit keys from `t`. For [limits] every key must be there (the
 * default supplies them); for a listener's `limits` only the keys present
 * are read, as overrides.
 */
export function readListenerLimits(
  r: Reader,
  t: Table,
  section: string,
  partial = false,
): Partial<LimitsConfig> {
  const out: Partial<LimitsConfig> = {};
  for (const [key, name, kind] of LIMIT_KEYS) {
    if (partial && !(key in t)) continue;
    if (kind === "seconds0") {
      const v = t[key];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 60) {
        r.fail(`${section}.${key}`, "an integer number of seconds from 0 to 60", v);
      }
      out[name] = v;
    } else out[name] = kind === "int" ? r.int(t, section, key) : r.seconds(t, section, key);
  }
  if (out.commandLineLength !== undefined && out.commandLineLength < 512) {
    // RFC 5321 §4.5.3.1.4: a server must accept 512-octet command lines.
    r.fail(`${section}.command_line_length`, "at least 512", out.commandLineLength);
  }
  return out;
}

function readAddress(r: Reader, t: Table, key: string): ListenAddress {
  const text = r.string(t, `${key}.address`, "address", ADDRESS);
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (path === "" || path.includes("\0") || new TextEncoder().encode(path).length > 400) {
      r.fail(`${key}.address`, ADDRESS, text);
    }
    return { kind: "unix", path: r.path({ address: path }, `${key}.address`, "address") };
  }
  const hp = parseHostPort(text) ?? r.fail(`${key}.address`, ADDRESS, text);
  return { kind: "tcp", host: hp.host, port: hp.port };
}

/** The text form of a listen address, as in the config and the logs. */
export function formatListenAddress(a: ListenAddress): string {
  return a.kind === "unix" ? `unix:${a.path}` : formatHostPort(a);
}

function readOne(r: Reader, item: unknown, i: number): ListenerConfig {
  const key = `listener[${i}]`;
  const t = r.table(item, key, "listener");
  const address = readAddress(r, t, key);
  // Everything but address has a default, as in the default listener.
  const d: Table = {
    mode: "0666",
    owner: "",
    protocol: "smtp",
    tls: "none",
    tls_cert: "",
    tls_key: "",
    auth: "none",
    auth_plaintext: false,
    require_auth: false,
    senders: "own",
    destination: "router",
    milters: [],
    ...LISTENER_DEFAULTS,
    ...t,
  };
  const modeText = r.string(d, `${key}.mode`, "mode", 'an octal mode such as "0660"');
  if (!/^0?[0-7]{3}$/.test(modeText)) {
    r.fail(`${key}.mode`, 'an octal mode such as "0660"', modeText);
  }
  const ownerText = r.string(d, `${key}.owner`, "owner", '"user" or "user:group"');
  let owner: ListenerConfig["owner"];
  if (ownerText !== "") {
    if (address.kind !== "unix") {
      r.fail(`${key}.owner`, '"" (owner needs a unix socket address)', ownerText);
    }
    const o = resolveOwner(ownerText);
    if (typeof o === "string") {
      r.fail(
        `${key}.owner`,
        `"user" or "user:group" of known names or numeric ids (${o})`,
        ownerText,
      );
    }
    owner = o;
  }
  const tls = r.oneOf(d, `${key}.tls`, "tls", ["none", "starttls", "implicit"] as const);
  const auth = r.oneOf(d, `${key}.auth`, "auth", ["none", "sasl", "peercred"] as const);
  const bool = (name: string) => {
    if (typeof d[name] !== "boolean") r.fail(`${key}.${name}`, "true or false", d[name]);
    return d[name] as boolean;
  };
  const file = (name: string) => {
    if (tls === "none") return "";
    if (d[name] === "") r.fail(`${key}.${name}`, `a PEM file (tls = "${tls}" needs one)`, "");
    return r.path(d, `${key}.${name}`, name);
  };
  if (auth === "peercred" && address.kind !== "unix") {
    r.fail(`${key}.auth`, '"none" or "sasl" (peercred needs a unix socket address)', auth);
  }
  const destination = r.string(d, `${key}.destination`, "destination");
  if (!DESTINATION.test(destination)) {
    r.fail(
      `${key}.destination`,
      '"router" or "transport:nexthop" (smtp, lmtp, maildir, discard)',
      destination,
    );
  }
  const limits = d.limits === undefined ? {} : readListenerLimits(
    r,
    isTable(d.limits) ? r.table(d.limits, `${key}.limits`, "limits") : r.fail(
      `${key}.limits`,
      "a table of [limits] keys",
      d.limits,
    ),
    `${key}.limits`,
    true,
  );
  const milters = r.stringArray(d, `${key}.milters`, "milters", '"inet:host:port" or "unix:/path"');
  milters.forEach((m, i) => {
    try {
      parseMilterAddress(m);
    } catch (err) {
      r.fail(
        `${key}.milters[${i}]`,
        (err as Error).message.replace(/^Milter address .* is /, ""),
        m,
      );
    }
  });
  return {
    address,
    mode: parseInt(modeText, 8),
    ...(owner ? { owner } : {}),
    protocol: r.oneOf(d, `${key}.protocol`, "protocol", ["smtp", "lmtp"] as const),
    tls,
    tlsCert: file("tls_cert"),
    tlsKey: file("tls_key"),
    auth,
    authPlaintext: bool("auth_plaintext"),
    requireAuth: bool("require_auth"),
    senders: r.oneOf(d, `${key}.senders`, "senders", ["own", "any"] as const),
    destination,
    limits,
    milters,
    ...readListenerPolicy({ fail: r.fail.bind(r), cwd: r.cwd, isHostname }, d, key),
  };
}

/** Reads the [[listener]] array: at least one, no address used twice. */
export function readListeners(r: Reader, v: unknown): ListenerConfig[] {
  if (!Array.isArray(v)) r.fail("listener", "an array of [[listener]] tables", v);
  if (v.length === 0) r.fail("listener", "at least one [[listener]]", v);
  const seen = new Set<string>();
  return v.map((item, i) => {
    const l = readOne(r, item, i);
    const canon = formatListenAddress(l.address).toLowerCase();
    if (seen.has(canon)) {
      r.fail(`listener[${i}].address`, "an address no other listener uses", canon);
    }
    if (
      l.address.kind === "unix" && new TextEncoder().encode(l.address.path).length > MAX_UNIX_PATH
    ) {
      r.fail(
        `listener[${i}].address`,
        `a socket path of at most ${MAX_UNIX_PATH} bytes`,
        l.address.path,
      );
    }
    seen.add(canon);
    return l;
  });
}

/** The lines of one [[listener]] table, for describeConfig. */
export function describeListener(l: ListenerConfig): string[] {
  const kv = (k: string, v: unknown) => `${k} = ${inline(v)}`;
  const lines = [
    kv("address", formatListenAddress(l.address)),
    kv("mode", `0${l.mode.toString(8)}`),
    kv("owner", l.owner?.text ?? ""),
    kv("protocol", l.protocol),
    kv("tls", l.tls),
    kv("tls_cert", l.tlsCert),
    kv("tls_key", l.tlsKey),
    kv("auth", l.auth),
    kv("auth_plaintext", l.authPlaintext),
    kv("require_auth", l.requireAuth),
    kv("senders", l.senders),
    kv("destination", l.destination),
    kv("milters", l.milters),
    kv("dmarc", l.dmarc),
    kv("spf_fail", l.spfFail),
  ];
  const limits = Object.fromEntries(
    LIMIT_KEYS.filter(([, name]) => l.limits[name] !== undefined).map((
      [key, name],
    ) => [key, l.limits[name]]),
  );
  if (Object.keys(limits).length > 0) lines.push(kv("limits", limits));
  return lines;
}
