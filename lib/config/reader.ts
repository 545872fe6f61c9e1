/**
 * The strict reader under every config section: ConfigError (file, dotted
 * key, expected, found), the Reader that pulls typed values out of a TOML
 * table, and the small value helpers (host:port, host names, TOML inline
 * values) that the section readers share. Kept apart from load.ts so the
 * section readers (listeners, routing, http) import it without importing
 * the loader that imports them.
 */

import { resolve } from "node:path";
import { parseIPv4, parseIPv6 } from "./cidr.ts";

/** A host and port, e.g. a listener address or a relayhost. */
export interface HostPort {
  host: string;
  port: number;
}

/** A configuration mistake: which file, which key, what was expected and what was found. */
export class ConfigError extends Error {
  /** The file as it was named to skiff, or "(embedded default)". */
  readonly file: string;
  /** Dotted key ("limits.recipients", "listener[0].address"), or "(syntax)" / "(file)". */
  readonly key: string;
  /** What a valid value looks like. */
  readonly expected: string;
  /** What was there instead. */
  readonly found: string;
  /** For syntax errors: 1-based line and column from the TOML parser. */
  readonly line?: number;
  readonly column?: number;

  constructor(
    where: {
      file: string;
      key: string;
      expected: string;
      found: string;
      line?: number;
      column?: number;
    },
    options?: ErrorOptions,
  ) {
    super(
      `${where.file}: key "${where.key}": expected ${where.expected}, found ${where.found}`,
      options,
    );
    this.name = "ConfigError";
    this.file = where.file;
    this.key = where.key;
    this.expected = where.expected;
    this.found = where.found;
    this.line = where.line;
    this.column = where.column;
  }
}

/**
 * Durations become timers, and a timer longer than 2^31-1 ms fires at once
 * (a 30-day command_timeout would disconnect every client immediately), so
 * seconds are capped just below that.
 */
export const MAX_SECONDS = 2_147_483;

export const POSITIVE = "a positive integer";
export const SECONDS = `a positive integer number of seconds (at most ${MAX_SECONDS})`;
export const HOSTPORT = 'an address "host:port" with a port 1-65535 (IPv6 as "[::1]:25")';
export const HOSTNAME = "a host name such as \"mail.example.org\" (letters, digits, '-' and '.')";

/** A parsed TOML table. */
export type Table = Record<string, unknown>;

/** True for a TOML table (not an array or a date). */
export function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Renders a TOML value briefly for "found …" (strings quoted, long values cut). */
function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (isTable(v)) return "a table";
  const text = inline(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

const ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\t": "\\t",
  "\r": "\\r",
};
// deno-lint-ignore no-control-regex
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f]/g;

/** A TOML basic string: quote, backslash and control characters escaped as TOML requires. */
function tomlString(s: string): string {
  const esc = (c: string) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
  return `"${s.replace(NEEDS_ESCAPE, esc)}"`;
}

/** A TOML inline value. */
export function inline(v: unknown): string {
  if (typeof v === "string") return tomlString(v);
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "nan";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map(inline).join(", ")}]`;
  if (v instanceof Date) return v.toISOString();
  if (isTable(v)) {
    return `{ ${Object.entries(v).map(([k, x]) => `${k} = ${inline(x)}`).join(", ")} }`;
  }
  return String(v);
}

/** Edit distance, for "did you mean" on unknown keys. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** Deep-merges a config file's table over the default's: tables merge, everything else replaces. */
export function mergeOver(base: Table, over: Table): Table {
  const out: Table = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isTable(v) && isTable(base[k]) ? mergeOver(base[k] as Table, v) : v;
  }
  return out;
}

/** Parses "host:port" or "[ipv6]:port" (brackets around a name are accepted, as Postfix writes them). */
export function parseHostPort(s: string): HostPort | null {
  let host: string, portText: string;
  if (s.startsWith("[")) {
    const close = s.indexOf("]");
    if (close < 0 || s[close + 1] !== ":") return null;
    host = s.slice(1, close);
    portText = s.slice(close + 2);
    if (!parseIPv6(host) && !isHostname(host) && !parseIPv4(host)) return null;
  } else {
    const colon = s.lastIndexOf(":");
    if (colon < 0) return null;
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (!parseIPv4(host) && !isHostname(host)) return null;
  }
  if (!/^[1-9][0-9]{0,4}$/.test(portText) || Number(portText) > 65535) return null;
  return { host, port: Number(portText) };
}

/** Formats a HostPort back as text, bracketing IPv6. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/**
 * RFC 1123 §2.1 host name: LDH labels of 1-63 octets, at most 253 in all; the
 * last label is not all digits (RFC 3696 §2), so "1.2.3.256" is no name.
 */
export function isHostname(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  const labels = s.split(".");
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return false;
  return labels.every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l));
}

/** Reads typed values out of the merged tables, failing with the file and dotted key. */
export class Reader {
  readonly #file: string;
  readonly #cwd: string;
  readonly #keys: Record<string, readonly string[]>;

  /** `keys`: the keys each kind of table may hold (load.ts's key lists). */
  constructor(file: string, cwd: string, keys: Record<string, readonly string[]>) {
    this.#file = file;
    this.#cwd = cwd;
    this.#keys = keys;
  }

  /** The directory relative paths are resolved against. */
  get cwd(): string {
    return this.#cwd;
  }

  fail(key: string, expected: string, found: unknown): never {
    throw new ConfigError({ file: this.#file, key, expected, found: describeValue(found) });
  }

  /** Checks `v` is a table holding only the keys of `kind`; `key` names it in errors. */
  table(v: unknown, key: string, kind: string): Table {
    if (!isTable(v)) {
      this.fail(key, kind === "listener" ? "a [[listener]] table" : `a table [${key}]`, v);
    }
    const known = this.#keys[kind];
    for (const k of Object.keys(v)) {
      if (known.includes(k)) continue;
      const near = known.find((n) => distance(n, k) <= 2);
      const full = key ? `${key}.${k}` : k;
      const expected = near
        ? `a known key (did you mean "${key ? `${key}.${near}` : near}"?)`
        : `one of ${known.join(", ")}`;
      throw new ConfigError({ file: this.#file, key: full, expected, found: "unknown key" });
    }
    return v;
  }

  int(
    t: Table,
    section: string,
    name: string,
    opts = { max: Number.MAX_SAFE_INTEGER, what: POSITIVE },
  ): number {
    const v = t[name];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > opts.max) {
      this.fail(`${section}.${name}`, opts.what, v);
    }
    return v;
  }

  seconds(t: Table, section: string, name: string): number {
    return this.int(t, section, name, { max: MAX_SECONDS, what: SECONDS });
  }

  string(t: Table, key: string, name: string, expected = "a string"): string {
    const v = t[name];
    if (typeof v !== "string") this.fail(key, expected, v);
    return v;
  }

  path(t: Table, key: string, name: string): string {
    const v = t[name];
    if (typeof v !== "string" || v === "" || v.includes("\0")) {
      this.fail(key, "a non-empty path", v);
    }
    return resolve(this.#cwd, v);
  }

  oneOf<T extends string>(t: Table, key: string, name: string, options: readonly T[]): T {
    const v = t[name];
    if (typeof v !== "string" || !(options as readonly string[]).includes(v)) {
      this.fail(key, `one of ${options.map((o) => `"${o}"`).join(", ")}`, v);
    }
    return v as T;
  }

  stringArray(t: Table, key: string, name: string, what: string): string[] {
    const v = t[name];
    if (!Array.isArray(v)) this.fail(key, `an array of ${what}`, v);
    v.forEach((x, i) => {
      if (typeof x !== "string") this.fail(`${key}[${i}]`, what, x);
    });
    return v as string[];
  }
}
