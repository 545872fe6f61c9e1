/**
 * DANE for SMTP (RFC 7672): which TLSA records are usable, and whether the
 * certificate chain an MX presented matches one of them. Only DANE-TA(2)
 * and DANE-EE(3) are usable for SMTP (§3.1.3: PKIX-TA(0)/PKIX-EE(1) are
 * unusable), with selector Cert(0) or SPKI(1) and matching type Full(0),
 * SHA2-256(1) or SHA2-512(2). DANE-EE ignores names and dates (§3.1.1);
 * DANE-TA needs a chain from the leaf up to the matching certificate and a
 * leaf valid for the MX host name or the TLSA base domain (§3.2.3).
 */
import { createHash, X509Certificate } from "node:crypto";
import type { Tlsa } from "./dns_wire.ts";

/** Whether a TLSA record can be used for SMTP (RFC 7672 §3.1, RFC 6698 §2.1). */
export function usableTlsa(t: Tlsa): boolean {
  if (t.usage !== 2 && t.usage !== 3) return false;
  if (t.selector !== 0 && t.selector !== 1) return false;
  const len = [-1, 32, 64][t.mtype];
  if (len === undefined) return false;
  return len === -1 ? t.data.length > 0 : t.data.length === len;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Whether cert matches a record's selector and matching type. */
function matches(t: Tlsa, cert: X509Certificate): boolean {
  const selected = t.selector === 0
    ? new Uint8Array(cert.raw)
    : new Uint8Array(cert.publicKey.export({ type: "spki", format: "der" }));
  const digest = t.mtype === 0
    ? selected
    : new Uint8Array(createHash(t.mtype === 1 ? "sha256" : "sha512").update(selected).digest());
  return equal(digest, t.data);
}

/** A short hex form of the leaf's SHA-256 for log lines. */
export function leafDigest(chain: Uint8Array[]): string {
  return chain[0] ? createHash("sha256").update(chain[0]).digest("hex").slice(0, 16) : "none";
}

/**
 * Checks the peer chain (DER, leaf first) against the usable records;
 * null when one matches, else the reason (for the deferral text).
 */
export function daneCheck(
  records: Tlsa[],
  chain: Uint8Array[],
  names: string[],
): string | null {
  const usable = records.filter(usableTlsa);
  if (chain.length === 0) return "the server presented no certificate";
  let certs: X509Certificate[];
  try {
    certs = chain.map((der) => new X509Certificate(der));
  } catch (err) {
    return `the server's certificate cannot be parsed: ${(err as Error).message}`;
  }
  const leaf = certs[0];
  if (usable.some((t) => t.usage === 3 && matches(t, leaf))) return null;
  for (const t of usable.filter((r) => r.usage === 2)) {
    // The trust anchor may be any certificate of the chain (or the leaf
    // itself when the server sends only its own certificate and a TA(2)
    // record names its issuer's key: not supported, a full chain is needed).
    for (let i = 1; i < certs.length; i++) {
      if (!matches(t, certs[i])) continue;
      if (!chainsUp(certs, i)) return `the chain up to the DANE-TA trust anchor does not verify`;
      if (!names.some((n) => leaf.checkHost(n) !== undefined)) {
        return `the certificate names none of ${names.join(", ")} (DANE-TA)`;
      }
      const now = Date.now();
      if (Date.parse(leaf.validTo) < now || Date.parse(leaf.validFrom) > now) {
        return "the certificate is not valid now (DANE-TA)";
      }
      return null;
    }
  }
  return `no TLSA record matches the certificate (sha256 ${leafDigest(chain)}...)`;
}

/** Every certificate below index top is issued and signed by the next one up. */
function chainsUp(certs: X509Certificate[], top: number): boolean {
  for (let j = 0; j < top; j++) {
    if (!certs[j].checkIssued(certs[j + 1]) || !certs[j].verify(certs[j + 1].publicKey)) {
      return false;
    }
  }
  return true;
}
