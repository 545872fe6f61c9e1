/**
 * tls_rpt = "send": a finished TLS-RPT report goes to the mailto: URIs of
 * the policy domain's `_smtp._tls` TXT record (RFC 8460 §3) as a
 * multipart/report message (§5.3), through skiff's own queue: it is
 * spooled like any message and delivered (and retried) by the manager.
 * https: rua URIs are not used (logged); a domain without the record gets
 * no mail, only the written file.
 */
import type { Spool } from "../spool/spool.ts";
import { logEvent } from "../log/log.ts";

/** Parses `v=TLSRPTv1; rua=mailto:a@b,mailto:c@d` into its mailto addresses (at most 5). */
export function ruaMailto(txt: string[]): string[] {
  const rec = txt.filter((t) => /^v=TLSRPTv1\s*;/.test(t));
  if (rec.length !== 1) return [];
  const rua = /(?:^|;)\s*rua=([^;]*)/.exec(rec[0])?.[1] ?? "";
  const out: string[] = [];
  for (const u of rua.split(",").map((x) => x.trim())) {
    if (!/^mailto:/i.test(u)) continue;
    let address: string;
    try {
      address = decodeURIComponent(u.slice(7).split("!")[0]); // "!size" suffix (RFC 7489 style)
    } catch {
      continue; // a bad %-escape
    }
    // Checked after decoding: nothing that could leave the envelope's <...> gets through.
    if (
      /^[\x21-\x7e]{1,64}@[A-Za-z0-9.-]{1,253}$/.test(address) && !/[<>,;@](?=.*@)/.test(address)
    ) {
      out.push(address);
    }
  }
  return out.slice(0, 5);
}

/** What sending needs. */
export interface SendDeps {
  spool: Spool;
  hostname: string;
  txt: (name: string) => Promise<string[]>;
  enqueue: (id: string) => void;
}

/** The report as a message (RFC 8460 §5.3). */
export function reportMessage(o: {
  domain: string;
  hostname: string;
  to: string[];
  report: string;
  name: string;
  now: Date;
}): string {
  const boundary = `tlsrpt-${crypto.randomUUID()}`;
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(o.report)))
    .replace(/.{76}/g, "$&\r\n");
  return [
    `From: TLS reporting <postmaster@${o.hostname}>`,
    `To: ${o.to.map((a) => `<${a}>`).join(", ")}`,
    `Subject: Report Domain: ${o.domain} Submitter: ${o.hostname} Report-ID: <${o.name}>`,
    `Date: ${o.now.toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: <${crypto.randomUUID()}@${o.hostname}>`,
    `TLS-Report-Domain: ${o.domain}`,
    `TLS-Report-Submitter: ${o.hostname}`,
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
    "",
    `--${boundary}`,
    "Content-Type: text/plain; charset=us-ascii",
    "",
    `This is an aggregate TLS report from ${o.hostname} for ${o.domain}.`,
    "",
    `--${boundary}`,
    `Content-Type: application/tlsrpt+json; name="${o.name}"`,
    "Content-Transfer-Encoding: base64",
    `Content-Disposition: attachment; filename="${o.name}"`,
    "",
    b64,
    "",
    `--${boundary}--`,
    "",
  ].join("\r\n");
}

/** Returns the `send` function for TlsRpt. */
export function reportSender(deps: SendDeps) {
  return async (domain: string, report: string, name: string): Promise<void> => {
    const to = ruaMailto(await deps.txt(`_smtp._tls.${domain}`));
    if (to.length === 0) return;
    const bytes = new TextEncoder().encode(
      reportMessage({ domain, hostname: deps.hostname, to, report, name, now: new Date() }),
    );
    const w = await deps.spool.begin();
    await w.write(bytes);
    await w.commit({
      id: w.id,
      from: "",
      recipients: to.map((address) => ({ address })),
      received: Date.now(),
      client: { address: "", helo: deps.hostname },
      protocol: "LOCAL",
      size: bytes.length,
    });
    logEvent("tls-rpt report queued", { id: w.id, domain, to: to.join(",") });
    deps.enqueue(w.id);
  };
}
