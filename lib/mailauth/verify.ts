/**
 * Inbound checks of a message received from an unauthenticated client: SPF
 * (RFC 7208) of MAIL FROM and of HELO, every DKIM signature (RFC 6376, RFC
 * 8463), DMARC (RFC 7489) alignment and policy, and the ARC chain (RFC
 * 8617), all by mailauth through skiff's bounded resolver. The results go
 * into one Authentication-Results field (RFC 8601) under skiff's
 * authserv-id; fields claiming that id already on the message are forgeries
 * (§5: "MUST ... delete") and are cut out before anything else.
 */
import { authenticate, spf as checkSpf } from "mailauth";
import type { MailauthResolver } from "./resolver.ts";
import { asLatin1, fromLatin1, parseHeaderSection } from "./headers.ts";

/** What the checks found, in the words of RFC 8601 result values. */
export interface Verdict {
  /** SPF of MAIL FROM (or of HELO for a null reverse-path). */
  spf: string;
  /** SPF of the HELO name; "" when not checked (address literal, null sender). */
  spfHelo: string;
  /** Each DKIM signature's result, in message order ("none" when unsigned). */
  dkim: string[];
  /** DMARC result ("none" without a record, "" when not evaluated). */
  dmarc: string;
  /** The published policy that applies to this From domain ("" without one). */
  dmarcPolicy: string;
  /** The RFC 5322.From domain, when there is exactly one. */
  fromDomain: string;
  arc: string;
  /** The Authentication-Results field, CRLF-terminated. */
  authResults: string;
  /** The Received-SPF field (RFC 7208 §9.1), CRLF-terminated. */
  receivedSpf: string;
}

/** Options for {@link verifyMessage}. */
export interface VerifyOptions {
  resolver: MailauthResolver;
  authservId: string;
  /** The client's IP address. */
  ip: string;
  helo: string;
  /** The MAIL FROM address ("" for the null reverse-path). */
  sender: string;
  /** Evaluate DMARC (listener dmarc not "off"). */
  dmarc: boolean;
  minKeyBits: number;
  /** Milliseconds SPF evaluation may take (temperror after). */
  timeoutMs: number;
}

/** A hostname that SPF can check as a HELO identity (not an address literal). */
function heloIsName(helo: string): boolean {
  return /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\.?$/.test(helo) && !/^[0-9.]+$/.test(helo);
}

/** RFC 8601 §2.2: the authserv-id is the first token, after optional CFWS. */
function authservIdOf(value: string): string {
  const v = value.replace(/\([^()]*\)/g, " ").trim();
  const m = /^"?([^\s;"]+)"?/.exec(v);
  return m ? m[1].toLowerCase() : "";
}

/**
 * Cuts out every Authentication-Results field whose authserv-id is ours, and
 * every X-Skiff-Quarantine field (only skiff may say that). Returns the
 * message unchanged (same object) when there is nothing to remove.
 */
export function stripForged(
  message: Uint8Array,
  authservId: string,
): { message: Uint8Array; removed: number } {
  const text = asLatin1(message);
  const { fields } = parseHeaderSection(text);
  const id = authservId.toLowerCase();
  const drop = fields.filter((f) =>
    (f.name === "authentication-results" &&
      authservIdOf(f.raw.slice(f.raw.indexOf(":") + 1)) === id) ||
    f.name === "x-skiff-quarantine"
  );
  if (drop.length === 0) return { message, removed: 0 };
  let out = "";
  let pos = 0;
  for (const f of drop) {
    out += text.slice(pos, f.start);
    pos = f.end;
  }
  out += text.slice(pos);
  return { message: fromLatin1(out), removed: drop.length };
}

// deno-lint-ignore no-explicit-any
type Any = any;

/** Runs every check on `message` (already stripped of forgeries). */
export async function verifyMessage(message: Uint8Array, o: VerifyOptions): Promise<Verdict> {
  const common = {
    resolver: o.resolver,
    mta: o.authservId,
    ip: o.ip,
    helo: o.helo,
    minBitLength: o.minKeyBits,
    maxElapsedTime: o.timeoutMs,
  };
  const res: Any = await authenticate(message as Any, {
    ...common,
    sender: o.sender || undefined,
    disableDmarc: !o.dmarc,
    disableBimi: true,
  } as Any);
  let heloInfo = "";
  let spfHelo = "";
  if (o.sender !== "" && heloIsName(o.helo)) {
    // RFC 7208 §2.3: the HELO identity is checked on its own as well.
    const h: Any = await checkSpf({ ...common, sender: undefined } as Any);
    spfHelo = h?.status?.result ?? "";
    if (spfHelo) heloInfo = `spf=${spfHelo} smtp.helo=${o.helo.replace(/[^\x21-\x7e]/g, "")}`;
  }
  const infos: string[] = [];
  for (const row of res.dkim?.results ?? []) if (row.info) infos.push(row.info);
  if (res.spf?.info) infos.push(res.spf.info);
  if (heloInfo) infos.push(heloInfo);
  if (res.arc?.info) infos.push(res.arc.info);
  if (res.dmarc?.info) infos.push(res.dmarc.info);
  // Results quote parts of the message; none may break out of its line.
  const lines = infos.map((i) =>
    String(i).replace(/[\r\n]+[ \t]*/g, " ").replace(/[^\x20-\x7e\t]/g, "?")
  );
  const authResults = `Authentication-Results: ${o.authservId};\r\n\t${
    lines.length ? lines.join(";\r\n\t") : "none"
  }\r\n`;
  const dkim = (res.dkim?.results ?? []).map((r: Any) => String(r.status?.result ?? "none"));
  return {
    spf: String(res.spf?.status?.result ?? "none"),
    spfHelo,
    dkim: dkim.length ? dkim : ["none"],
    dmarc: res.dmarc ? String(res.dmarc.status?.result ?? "none") : "",
    dmarcPolicy: res.dmarc?.policy ? String(res.dmarc.policy) : "",
    // From the message itself: only domain characters may reach a header or a reply.
    fromDomain: String(res.dmarc?.status?.header?.from ?? res.dkim?.headerFrom?.[0] ?? "")
      .replace(/^.*@/, "").replace(/[^A-Za-z0-9.-]/g, "").slice(0, 253),
    arc: String(res.arc?.status?.result ?? "none"),
    authResults,
    receivedSpf: res.spf?.header ? String(res.spf.header).replace(/\r?\n?$/, "\r\n") : "",
  };
}
