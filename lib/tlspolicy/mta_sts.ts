/**
 * MTA-STS (RFC 8461): the `_mta-sts.<domain>` TXT record, the policy
 * fetched over HTTPS from `https://mta-sts.<domain>/.well-known/mta-sts.txt`,
 * its parser and the MX pattern match of §4.1. The fetch is a small
 * HTTP/1.0 GET over node:tls written here rather than fetch() or
 * node:https, because the policy host's address must come from skiff's own
 * resolver (delivery.nameserver), the certificate must be checked strictly
 * against the policy host name with an optional private CA, redirects must
 * not be followed (§3.3) and body size and time must be bounded (64 KiB).
 * HTTP/1.0 keeps the response free of chunked encoding.
 */
import * as tls from "node:tls";
import { isIP } from "node:net";

/** A parsed policy (§3.2). */
export interface StsPolicy {
  mode: "enforce" | "testing" | "none";
  /** MX patterns, lower case ("mx.example.org", "*.example.org"). */
  mx: string[];
  /** Seconds the policy may be cached. */
  maxAge: number;
  /** The policy text as fetched (for TLS-RPT's policy-string). */
  text: string;
}

/** Largest policy body accepted (§3.3 suggests 64 KiB). */
export const MAX_POLICY_BYTES = 64 * 1024;
/** §3.2: max_age at most 31557600 (about a year). */
const MAX_AGE_LIMIT = 31_557_600;

/** Trouble fetching or reading a policy; `kind` is its TLS-RPT result type (RFC 8460 §4.3). */
export class StsError extends Error {
  readonly kind: "sts-policy-fetch-error" | "sts-policy-invalid" | "sts-webpki-invalid";
  constructor(kind: StsError["kind"], message: string) {
    super(message);
    this.name = "StsError";
    this.kind = kind;
  }
}

/**
 * The id of the one `v=STSv1` TXT record (§3.1), null when there is none.
 * More than one, or a malformed one, counts as none (§3.1: "If multiple
 * TXT records for _mta-sts are returned, the policy is undefined").
 */
export function stsRecordId(txt: string[]): string | null {
  const records = txt.filter((t) => /^v=STSv1\s*(;|$)/.test(t));
  if (records.length !== 1) return null;
  const fields = new Map<string, string>();
  for (const f of records[0].split(";")) {
    const m = /^\s*([A-Za-z0-9_.-]+)=([\x21-\x3a\x3c\x3e-\x7e]*)\s*$/.exec(f);
    if (m) fields.set(m[1], m[2]);
  }
  const id = fields.get("id");
  return id && /^[A-Za-z0-9]{1,32}$/.test(id) ? id : null;
}

/** Parses a policy body (§3.2); throws StsError("sts-policy-invalid"). */
export function parseStsPolicy(text: string): StsPolicy {
  const bad = (why: string) => new StsError("sts-policy-invalid", `Invalid MTA-STS policy: ${why}`);
  const fields: [string, string][] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "") continue;
    const m = /^([A-Za-z0-9_]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) throw bad(`line ${JSON.stringify(line.slice(0, 80))} is not "key: value"`);
    fields.push([m[1], m[2]]);
  }
  const one = (k: string) => fields.find(([key]) => key === k)?.[1];
  if (one("version") !== "STSv1") throw bad('"version: STSv1" is missing');
  const mode = one("mode");
  if (mode !== "enforce" && mode !== "testing" && mode !== "none") {
    throw bad(`mode ${JSON.stringify(mode ?? "")} is not enforce, testing or none`);
  }
  const age = one("max_age") ?? "";
  if (!/^\d{1,10}$/.test(age) || Number(age) > MAX_AGE_LIMIT) {
    throw bad(`max_age ${JSON.stringify(age)} is not a number of seconds up to ${MAX_AGE_LIMIT}`);
  }
  const mx = fields.filter(([k]) => k === "mx").map(([, v]) => v.toLowerCase().replace(/\.$/, ""));
  for (const p of mx) {
    if (!/^(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)+[a-z0-9-]+$/.test(p)) {
      throw bad(`mx pattern ${JSON.stringify(p)} is not a host name or *.domain`);
    }
  }
  if (mode !== "none" && mx.length === 0) throw bad(`mode ${mode} without any mx line`);
  return { mode, mx, maxAge: Number(age), text };
}

/** §4.1: "mx.example.org" matches itself; "*.example.org" matches exactly one more label. */
export function mxMatches(host: string, patterns: string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  return patterns.some((p) => {
    if (!p.startsWith("*.")) return p === h;
    const dot = h.indexOf(".");
    return dot > 0 && h.slice(dot + 1) === p.slice(2);
  });
}

/** How to reach the policy host. */
export interface FetchOptions {
  /** The policy host's addresses, from skiff's resolver. */
  addresses: string[];
  /** 443; tests use another port. */
  port: number;
  timeoutMs: number;
  /** Extra trusted CAs (PEM); undefined = the system's. */
  ca?: string[];
}

/** Fetches and parses the policy of domain; throws StsError. */
export async function fetchStsPolicy(domain: string, opts: FetchOptions): Promise<StsPolicy> {
  const host = `mta-sts.${domain}`;
  if (opts.addresses.length === 0) {
    throw new StsError("sts-policy-fetch-error", `Policy host ${host} has no address`);
  }
  let last: Error | null = null;
  for (const address of opts.addresses.slice(0, 4)) {
    try {
      return parseResponse(host, await httpsGet(host, address, opts));
    } catch (err) {
      if (err instanceof StsError && err.kind !== "sts-policy-fetch-error") throw err;
      last = err as Error;
    }
  }
  throw last instanceof StsError ? last : new StsError(
    "sts-policy-fetch-error",
    `Cannot fetch the MTA-STS policy from ${host}: ${last?.message}`,
  );
}

/** One GET; resolves with the raw response bytes (headers and body), bounded. */
function httpsGet(host: string, address: string, opts: FetchOptions): Promise<Uint8Array> {
  const limit = MAX_POLICY_BYTES + 16 * 1024; // body plus room for the headers
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    const sock = tls.connect({
      host: address,
      port: opts.port,
      servername: isIP(host) ? undefined : host,
      ca: opts.ca,
      rejectUnauthorized: true,
      checkServerIdentity: (_h, cert) => tls.checkServerIdentity(host, cert),
    });
    const fail = (kind: StsError["kind"], why: string) => {
      clearTimeout(timer);
      sock.destroy();
      reject(
        new StsError(kind, `Cannot fetch the MTA-STS policy from ${host}[${address}]: ${why}`),
      );
    };
    const timer = setTimeout(
      () => fail("sts-policy-fetch-error", `timed out after ${opts.timeoutMs} ms`),
      opts.timeoutMs,
    );
    sock.once("secureConnect", () => {
      sock.write(
        `GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: ${host}\r\nUser-Agent: skiff\r\n` +
          `Accept: text/plain\r\nConnection: close\r\n\r\n`,
      );
    });
    sock.on("data", (d: Uint8Array) => {
      size += d.length;
      if (size > limit) return fail("sts-policy-invalid", `response larger than ${limit} bytes`);
      chunks.push(new Uint8Array(d));
    });
    sock.once("end", () => {
      clearTimeout(timer);
      sock.destroy();
      const out = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) out.set(c, (off += c.length) - c.length);
      resolve(out);
    });
    sock.once("error", (err: Error & { code?: string }) => {
      const cert = /CERT|certificate|issuer|altname|self.signed|UnknownIssuer|NotValidFor/i;
      fail(
        cert.test(`${err.code} ${err.message}`) ? "sts-webpki-invalid" : "sts-policy-fetch-error",
        err.message,
      );
    });
  });
}

/** Status 200, text/plain, body within bounds (§3.3); no redirects are followed. */
function parseResponse(host: string, raw: Uint8Array): StsPolicy {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(raw);
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) {
    throw new StsError("sts-policy-fetch-error", `Incomplete HTTP response from ${host}`);
  }
  const [status, ...headers] = text.slice(0, end).split("\r\n");
  const code = /^HTTP\/1\.[01] (\d{3})/.exec(status)?.[1];
  if (code !== "200") {
    throw new StsError(
      "sts-policy-fetch-error",
      `MTA-STS policy host ${host} answered ${JSON.stringify(status.slice(0, 80))}`,
    );
  }
  const type = headers.find((h) => /^content-type:/i.test(h))?.slice(13).trim() ?? "";
  if (!/^text\/plain\s*(;|$)/i.test(type)) {
    throw new StsError(
      "sts-policy-invalid",
      `MTA-STS policy of ${host} is not text/plain: ${type}`,
    );
  }
  const body = text.slice(end + 4);
  if (new TextEncoder().encode(body).length > MAX_POLICY_BYTES) {
    throw new StsError("sts-policy-invalid", `MTA-STS policy of ${host} is over 64 KiB`);
  }
  return parseStsPolicy(body);
}
