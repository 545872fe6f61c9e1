/**
 * The mail authentication settings of skiff.toml: `[[dkim]]` signing keys,
 * the `[mailauth]` table (authserv-id, quarantine action, DNS budget) and the
 * per-listener inbound policy keys `dmarc` and `spf_fail`. Under lib/config/
 * so the loader never imports lib/mailauth/ (config sits below it);
 * lib/config/load.ts calls
 * these with its own error reporter, so mistakes name the file and key.
 */
import { resolve } from "node:path";

/** One DKIM signing key: mail whose From domain is `domain` (or below it) is signed with it. */
export interface DkimKeyConfig {
  /** The signing domain (d=), lower case. */
  domain: string;
  /** The selector (s=): the key is published at `<selector>._domainkey.<domain>`. */
  selector: string;
  /** Path of the PEM private key (PKCS#8 or PKCS#1); re-read after a reload. */
  key: string;
  algorithm: "rsa-sha256" | "ed25519-sha256";
}

/** What happens to mail whose From domain publishes DMARC p=quarantine and fails. */
export type QuarantineAction = "header" | "reject" | "none";

/** [mailauth]: settings shared by all listeners. */
export interface MailauthConfig {
  /** RFC 8601 authserv-id written in (and stripped from incoming) Authentication-Results; "" = hostname. */
  authservId: string;
  /** DMARC p=quarantine failures under dmarc = "enforce": add X-Skiff-Quarantine, 550, or nothing more. */
  quarantine: QuarantineAction;
  /** Seconds all DNS lookups for one message's checks may take together. */
  dnsTimeout: number;
  /** DNS lookups for one message's checks (SPF, DKIM keys, DMARC, ARC) together. */
  maxLookups: number;
  /** Smallest RSA key (bits) a verified DKIM or ARC signature may use. */
  minKeyBits: number;
}

/** A listener's inbound DMARC policy: not evaluated, recorded only, or applied. */
export type DmarcPolicy = "off" | "report" | "enforce";
/** A listener's action on SPF "fail": A-R entry only, plus Received-SPF, or 550 5.7.23. */
export type SpfFailPolicy = "ignore" | "header" | "reject";

/** Keys of the [mailauth] table and of a [[dkim]] entry. */
export const MAILAUTH_KEYS = [
  "authserv_id",
  "quarantine",
  "dns_timeout",
  "max_lookups",
  "min_key_bits",
] as const;
export const DKIM_KEYS = ["domain", "selector", "key", "algorithm"] as const;

/** Defaults of the per-listener keys: a small site applies published DMARC policies. */
export const LISTENER_DEFAULTS = { dmarc: "enforce", spf_fail: "header" } as const;

/** What the readers need from load.ts's Reader. */
export interface MailauthReader {
  fail(key: string, expected: string, found: unknown): never;
  cwd: string;
  isHostname(s: string): boolean;
}

type Table = Record<string, unknown>;

const SELECTOR =
  /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function checkKeys(r: MailauthReader, t: unknown, key: string, known: readonly string[]): Table {
  if (typeof t !== "object" || t === null || Array.isArray(t)) r.fail(key, "a table", t);
  for (const k of Object.keys(t as Table)) {
    if (!known.includes(k)) r.fail(`${key}.${k}`, `one of ${known.join(", ")}`, "unknown key");
  }
  return t as Table;
}

function oneOf<T extends string>(
  r: MailauthReader,
  t: Table,
  key: string,
  name: string,
  options: readonly T[],
): T {
  const v = t[name];
  if (typeof v !== "string" || !(options as readonly string[]).includes(v)) {
    r.fail(`${key}.${name}`, `one of ${options.map((o) => `"${o}"`).join(", ")}`, v);
  }
  return v as T;
}

function int(r: MailauthReader, t: Table, key: string, min: number, max: number): number {
  const v = t[key.split(".").pop()!];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    r.fail(key, `an integer from ${min} to ${max}`, v);
  }
  return v;
}

/** Reads [mailauth]; the embedded default supplies every key. */
export function readMailauth(r: MailauthReader, raw: unknown): MailauthConfig {
  const t = checkKeys(r, raw, "mailauth", MAILAUTH_KEYS);
  const id = t.authserv_id;
  if (typeof id !== "string" || (id !== "" && !r.isHostname(id))) {
    r.fail("mailauth.authserv_id", '"" (the hostname) or a host name', id);
  }
  return {
    authservId: id.toLowerCase(),
    quarantine: oneOf(r, t, "mailauth", "quarantine", ["header", "reject", "none"] as const),
    dnsTimeout: int(r, t, "mailauth.dns_timeout", 1, 120),
    maxLookups: int(r, t, "mailauth.max_lookups", 10, 1000),
    minKeyBits: int(r, t, "mailauth.min_key_bits", 1024, 8192),
  };
}

/** Reads the [[dkim]] array (absent: no signing). One domain may have several keys (RSA and Ed25519). */
export function readDkim(r: MailauthReader, raw: unknown): DkimKeyConfig[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) r.fail("dkim", "an array of [[dkim]] tables", raw);
  const seen = new Set<string>();
  return raw.map((item, i) => {
    const key = `dkim[${i}]`;
    const t = checkKeys(r, item, key, DKIM_KEYS);
    const domain = t.domain;
    if (typeof domain !== "string" || !r.isHostname(domain) || !domain.includes(".")) {
      r.fail(`${key}.domain`, 'a domain name such as "example.org"', domain);
    }
    const selector = t.selector;
    if (typeof selector !== "string" || !SELECTOR.test(selector)) {
      r.fail(`${key}.selector`, 'a selector such as "s2026" (letters, digits, "-", ".")', selector);
    }
    const path = t.key;
    if (typeof path !== "string" || path === "" || path.includes("\0")) {
      r.fail(`${key}.key`, "the path of a PEM private key", path);
    }
    const algorithm = oneOf(
      r,
      { algorithm: "rsa-sha256", ...t },
      key,
      "algorithm",
      [
        "rsa-sha256",
        "ed25519-sha256",
      ] as const,
    );
    const id = `${selector.toLowerCase()}._domainkey.${domain.toLowerCase()}`;
    if (seen.has(id)) r.fail(`${key}.selector`, "a selector not used twice for one domain", id);
    seen.add(id);
    return { domain: domain.toLowerCase(), selector, key: resolve(r.cwd, path), algorithm };
  });
}

/** Reads a listener's `dmarc` and `spf_fail` from its table merged over the defaults. */
export function readListenerPolicy(
  r: MailauthReader,
  d: Table,
  key: string,
): { dmarc: DmarcPolicy; spfFail: SpfFailPolicy } {
  return {
    dmarc: oneOf(r, d, key, "dmarc", ["off", "report", "enforce"] as const),
    spfFail: oneOf(r, d, key, "spf_fail", ["ignore", "header", "reject"] as const),
  };
}

/** The lines for `skiff check-config`. */
export function describeMailauth(
  inline: (v: unknown) => string,
  m: MailauthConfig,
  dkim: DkimKeyConfig[],
): string[] {
  const kv = (k: string, v: unknown) => `${k} = ${inline(v)}`;
  const lines = [
    "",
    "[mailauth]",
    kv("authserv_id", m.authservId),
    kv("quarantine", m.quarantine),
    kv("dns_timeout", m.dnsTimeout),
    kv("max_lookups", m.maxLookups),
    kv("min_key_bits", m.minKeyBits),
  ];
  for (const k of dkim) {
    lines.push("", "[[dkim]]", kv("domain", k.domain), kv("selector", k.selector));
    lines.push(kv("key", k.key), kv("algorithm", k.algorithm));
  }
  return lines;
}
