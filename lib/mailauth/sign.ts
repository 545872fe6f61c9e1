/**
 * DKIM signing (RFC 6376; ed25519-sha256 per RFC 8463) of mail that a local
 * or authenticated user submits: relaxed/relaxed, the usual header set, and
 * From (with the other fields a forger would most like to add) over-signed —
 * listed in h= once more than present, so a second copy added in transit
 * breaks the signature (RFC 6376 §8.15).
 *
 * The body hash comes from mailauth's RelaxedHash (the canonicalisation that
 * is easy to get subtly wrong). The header hash and the signature are made
 * here, because mailauth's signer puts only present fields in h= and so
 * cannot over-sign; what remains is RFC 6376 §3.4.2's relaxed header rule
 * and §3.7's hash input, a few lines each, checked in the tests against
 * dkimpy and opendkim.
 */
import { Buffer } from "node:buffer";
import { createHash, sign } from "node:crypto";
import { RelaxedHash } from "mailauth/lib/dkim/body/relaxed.js";
import type { DkimKeyConfig } from "../config/mailauth.ts";
import { asLatin1, fieldValue, type HeaderField, parseHeaderSection } from "./headers.ts";
import { type DkimKey, dkimKey } from "./keys.ts";

/** Fields signed when present (mailauth's default list, which follows RFC 6376 §5.4.1). */
const SIGNED = [
  "from",
  "sender",
  "reply-to",
  "subject",
  "date",
  "message-id",
  "to",
  "cc",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
  "content-id",
  "content-description",
  "resent-date",
  "resent-from",
  "resent-sender",
  "resent-to",
  "resent-cc",
  "resent-message-id",
  "in-reply-to",
  "references",
  "list-id",
  "list-help",
  "list-unsubscribe",
  "list-subscribe",
  "list-post",
  "list-owner",
  "list-archive",
];

/** Fields listed once more than present: adding one more copy breaks the signature. */
const OVERSIGNED = new Set([
  "from",
  "reply-to",
  "subject",
  "date",
  "to",
  "cc",
  "mime-version",
  "content-type",
]);

/** Display names for h= (any case is valid; these read well). */
const CASED: Record<string, string> = {
  "mime-version": "MIME-Version",
  "message-id": "Message-ID",
  "content-id": "Content-ID",
  "resent-message-id": "Resent-Message-ID",
  "list-id": "List-ID",
};

function casedName(n: string): string {
  return CASED[n] ?? n.replace(/(^|-)([a-z])/g, (_m, d, c) => d + c.toUpperCase());
}

/** RFC 6376 §3.4.2: lower-case name, unfold, runs of WSP to one SP, no WSP around the value. */
export function relaxedHeader(raw: string): string {
  const colon = raw.indexOf(":");
  const name = raw.slice(0, colon).replace(/[ \t]+$/, "").toLowerCase();
  const value = raw.slice(colon + 1).replace(/\r\n/g, "").replace(/[ \t]+/g, " ").trim();
  return `${name}:${value}`;
}

/** The domain of the (first) address in the From field; null when there is none or several From fields. */
export function fromDomain(fields: HeaderField[]): string | null {
  const from = fields.filter((f) => f.name === "from");
  if (from.length !== 1) return null;
  const v = fieldValue(from[0]);
  const m = /<[^<>@]*@([^<>@\s]+)>/.exec(v) ?? /@([A-Za-z0-9.-]+)/.exec(v);
  return m ? m[1].toLowerCase().replace(/\.$/, "") : null;
}

/** The configured keys for `domain`: the most specific [[dkim]] domain that is it or a parent of it. */
export function keysFor(keys: DkimKeyConfig[], domain: string): DkimKeyConfig[] {
  const matching = keys.filter((k) => domain === k.domain || domain.endsWith(`.${k.domain}`));
  const longest = Math.max(0, ...matching.map((k) => k.domain.length));
  return matching.filter((k) => k.domain.length === longest);
}

/** Picks fields for h=: each name's instances bottom-up (§5.4.2), plus one for an over-signed name. */
function pickFields(fields: HeaderField[]): { names: string[]; picked: HeaderField[] } {
  const names: string[] = [];
  const picked: HeaderField[] = [];
  for (const n of SIGNED) {
    const present = fields.filter((f) => f.name === n).reverse();
    for (const f of present) {
      names.push(casedName(n));
      picked.push(f);
    }
    if (OVERSIGNED.has(n) && (present.length > 0 || n === "from")) names.push(casedName(n));
  }
  return { names, picked };
}

/**
 * Folds the tag list so lines stay under ~78 characters: between tags, at
 * the colons of h= and inside b= (RFC 6376 §3.2 and §3.5 allow FWS there).
 */
function fold(tags: [string, string][]): string {
  const lines: string[] = [];
  let line = "DKIM-Signature:";
  const put = (piece: string, sep: string) => {
    if (line.length + sep.length + piece.length > 76 && line.trim() !== "") {
      lines.push(line);
      line = "\t";
      sep = "";
    }
    line += sep + piece;
  };
  tags.forEach(([k, v], i) => {
    const end = i === tags.length - 1 ? "" : ";";
    if (k === "h") {
      const names = v.split(":");
      names.forEach((n, j) => {
        const piece = (j === 0 ? "h=" : "") + n + (j === names.length - 1 ? end : ":");
        put(piece, j === 0 ? " " : "");
      });
    } else if (k === "b") {
      put("b=", " ");
      for (const chunk of v.match(/.{1,60}/g) ?? []) put(chunk + "", "");
      line += end;
    } else put(`${k}=${v}${end}`, " ");
  });
  lines.push(line);
  return lines.join("\r\n");
}

/** Options for {@link dkimSignature}. */
export interface SignOptions {
  /** The key's [[dkim]] entry and the key itself. */
  entry: DkimKeyConfig;
  key: DkimKey;
  /** Seconds since the epoch for t=. */
  time: number;
}

/** Body hash (relaxed, sha256) of the body bytes. */
export function bodyHash(body: Uint8Array): string {
  const h = new RelaxedHash("sha256");
  h.update(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
  return h.digest("base64");
}

/** One DKIM-Signature field (CRLF-terminated) for a message whose header is `fields`. */
export async function dkimSignature(
  fields: HeaderField[],
  bh: string,
  o: SignOptions,
): Promise<string> {
  const { names, picked } = pickFields(fields);
  const ed = o.entry.algorithm === "ed25519-sha256";
  const tags: [string, string][] = [
    ["v", "1"],
    ["a", o.entry.algorithm],
    ["c", "relaxed/relaxed"],
    ["d", o.entry.domain],
    ["s", o.entry.selector],
    ["t", String(o.time)],
    ["h", names.join(":")],
    ["bh", bh],
    ["b", ""],
  ];
  const unsigned = fold(tags);
  // §3.7: the signed fields in h= order, then this field with b= empty and no final CRLF.
  const input = picked.map((f) => relaxedHeader(f.raw) + "\r\n").join("") +
    relaxedHeader(unsigned);
  const data = Buffer.from(input, "latin1");
  // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the input (PureEdDSA over the digest).
  const b = ed || !o.key.subtle
    ? sign(ed ? null : "sha256", ed ? createHash("sha256").update(data).digest() : data, o.key.key)
    : Buffer.from(await crypto.subtle.sign("RSASSA-PKCS1-v1_5", o.key.subtle, data));
  tags[tags.length - 1] = ["b", b.toString("base64")];
  return fold(tags) + "\r\n";
}

/** What signing a message gave. */
export interface SignResult {
  /** The DKIM-Signature fields to prepend ("" when no key applies). */
  headers: string;
  /** The d= domain and selectors used, for the log. */
  domain?: string;
  selectors: string[];
}

/**
 * Signs `message` with every key configured for its From domain (RSA and
 * Ed25519 may both be there). No From, several From fields or no key for the
 * domain: nothing is signed. A key that cannot be used throws (the caller
 * answers 451 rather than sending mail its domain's DMARC would refuse).
 */
export async function signMessage(
  message: Uint8Array,
  opts: { keys: DkimKeyConfig[]; now: number },
): Promise<SignResult> {
  const text = asLatin1(message);
  const { fields, bodyStart } = parseHeaderSection(text);
  const domain = fromDomain(fields);
  if (!domain) return { headers: "", selectors: [] };
  const entries = keysFor(opts.keys, domain);
  if (entries.length === 0) return { headers: "", selectors: [] };
  const bh = bodyHash(message.subarray(bodyStart));
  const time = Math.floor(opts.now / 1000);
  let headers = "";
  for (const entry of entries) {
    const key = await dkimKey(entry);
    headers += await dkimSignature(fields, bh, { entry, key, time });
  }
  return { headers, domain: entries[0].domain, selectors: entries.map((e) => e.selector) };
}
