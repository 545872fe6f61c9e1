/**
 * The TLS policy of one MX delivery, combined as Postfix's
 * smtp_tls_policy_maps does: the route's (or delivery.tls's) mode, DANE
 * (RFC 7672) and MTA-STS (RFC 8461), the stricter winning; DANE takes
 * precedence over MTA-STS (RFC 8461 §2). An explicit route tls = "none" is
 * an operator override (logged). REQUIRETLS (RFC 8689) raises every hop to
 * a verified certificate (or DANE); a `TLS-Required: No` header (§4.2.2)
 * relaxes DANE and MTA-STS to opportunistic TLS, unless REQUIRETLS is set.
 * Every session under a policy is counted for TLS-RPT (RFC 8460).
 */
import type { ResolverOptions } from "../dns/mx.ts";
import { DeliveryError } from "../mail/delivery_error.ts";
import type { OutgoingMessage, SmtpTarget } from "../smtp/client.ts";
import { SessionEnd } from "../smtp/client_session.ts";
import type { TlsMode } from "../config/route_types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import type { TlsPolicyConfig } from "../config/tls_policy.ts";
import { daneCheck, usableTlsa } from "./dane.ts";
import { parseTlsa, type QueryAnswer, queryUdp, type Tlsa, TYPE } from "./dns_wire.ts";
import { mxMatches } from "./mta_sts.ts";
import { type CachedPolicy, StsCache } from "./sts_cache.ts";
import { type RptPolicy, TlsRpt } from "./tls_rpt.ts";

const RANK: Record<TlsMode, number> = { none: 0, may: 1, require: 2, verify: 3 };

/** The stricter of two modes. */
export function stricter(a: TlsMode, b: TlsMode): TlsMode {
  return RANK[a] >= RANK[b] ? a : b;
}

/** What the engine needs from the manager. */
export interface TlsPolicyOptions {
  config: TlsPolicyConfig;
  resolver: ResolverOptions;
  spoolDir: string;
  hostname: string;
  /** HTTPS port of policy hosts (443; tests use another). */
  port?: number;
  now?: () => number;
  /** tls_rpt = "send": mails a report (lib/tlspolicy/rpt_send.ts). */
  send?: (domain: string, report: string, name: string) => Promise<void>;
}

/** DANE state of one MX host. */
type Dane = { kind: "none" } | { kind: "usable"; records: Tlsa[] } | {
  kind: "failed";
  why: string;
};

/** The policy decided for one MX host, for delivery and for `skiff route`. */
export interface HostPolicy {
  tls: TlsMode;
  /** dane, mta-sts enforce/testing, route, requiretls. */
  source: string;
  refused?: string;
}

/** The engine; see the module comment. */
export class TlsPolicy {
  #o: TlsPolicyOptions;
  #sts: StsCache;
  #answers = new Map<string, { until: number; answer: QueryAnswer }>();
  readonly rpt: TlsRpt | null;

  constructor(o: TlsPolicyOptions) {
    this.#o = o;
    const now = o.now ?? Date.now;
    this.#sts = new StsCache(`${o.spoolDir}/mta-sts-cache.json`, {
      txt: (name) => this.txt(name),
      addresses: (host) => this.#addresses(host),
      port: o.port ?? 443,
      timeoutMs: o.resolver.timeoutMs,
      ca: () => this.#stsCa(),
      now,
    });
    const c = o.config;
    this.rpt = c.tlsRpt === "off" ? null : new TlsRpt({
      statePath: `${o.spoolDir}/tls-rpt-state.json`,
      reportDir: c.tlsRptDir || `${o.spoolDir}/tls-rpt`,
      hostname: o.hostname,
      now,
      send: c.tlsRpt === "send" ? o.send : undefined,
    });
  }

  /** DANE is on and can work (a configured, hopefully validating, resolver). */
  get daneActive(): boolean {
    return this.#o.config.dane === "on" && this.#o.resolver.nameserver !== null;
  }

  /**
   * One DANE query, its answer reused for the records' TTL (5 s to 300 s; 60 s
   * for an answer without records): a UDP round trip per MX delivery costs
   * about 3 ms. Failures are not kept.
   */
  async #dnsQuery(name: string, type: number): Promise<QueryAnswer> {
    const key = `${type} ${name}`;
    const now = Date.now();
    const hit = this.#answers.get(key);
    if (hit && hit.until > now) return hit.answer;
    const answer = await queryUdp(
      name,
      type,
      this.#o.resolver.nameserver!,
      this.#o.resolver.timeoutMs,
    );
    const ttl = answer.records.length ? Math.min(...answer.records.map((r) => r.ttl)) : 60;
    this.#answers.delete(key);
    this.#answers.set(key, { until: now + Math.min(300, Math.max(5, ttl)) * 1000, answer });
    if (this.#answers.size > 10_000) this.#answers.delete(this.#answers.keys().next().value!);
    return answer;
  }

  /** TXT strings of name through skiff's resolver ([] when none). */
  async txt(name: string): Promise<string[]> {
    const o = this.#o.resolver;
    try {
      const r = await Deno.resolveDns(name, "TXT", {
        signal: AbortSignal.timeout(o.timeoutMs),
        ...(o.nameserver
          ? { nameServer: { ipAddr: o.nameserver.host, port: o.nameserver.port } }
          : {}),
      });
      return r.map((chunks) => chunks.join(""));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
  }

  async #addresses(host: string): Promise<string[]> {
    const o = this.#o.resolver;
    const opts = {
      signal: AbortSignal.timeout(o.timeoutMs),
      ...(o.nameserver
        ? { nameServer: { ipAddr: o.nameserver.host, port: o.nameserver.port } }
        : {}),
    };
    const [v4, v6] = await Promise.all(
      (["A", "AAAA"] as const).map((t) =>
        Deno.resolveDns(host, t, opts).catch(() => [] as string[])
      ),
    );
    return [...v4, ...v6];
  }

  async #stsCa(): Promise<string[] | undefined> {
    const file = this.#o.config.mtaStsCaFile;
    return file ? [await Deno.readTextFile(file)] : undefined;
  }

  /** DANE state per MX host (RFC 7672 §2.2): only a DNSSEC-secure MX RRset counts. */
  async #dane(domain: string, hosts: string[]): Promise<Map<string, Dane>> {
    const out = new Map<string, Dane>(hosts.map((h) => [h, { kind: "none" }]));
    if (!this.daneActive) return out;
    try {
      if (!(await this.#dnsQuery(domain, TYPE.MX)).secure) return out;
    } catch (err) {
      logWarn("dane mx lookup failed", { domain, reason: String(err) });
      return out;
    }
    await Promise.all(hosts.map(async (host) => {
      try {
        const a = await this.#dnsQuery(`_25._tcp.${host}`, TYPE.TLSA);
        if (!a.secure) return;
        const records = a.records.map((r) => parseTlsa(r.rdata)).filter((t) => t !== null);
        // §2.2: no usable record: as if there were none (opportunistic TLS).
        if (records.some(usableTlsa)) out.set(host, { kind: "usable", records });
      } catch (err) {
        // §2.2.1: a secure MX whose TLSA lookup fails must not be used in clear.
        out.set(host, { kind: "failed", why: `TLSA lookup for ${host} failed: ${err}` });
      }
    }));
    return out;
  }

  /** The MTA-STS policy to apply (null: none), counting a fetch failure for TLS-RPT. */
  async #stsPolicy(domain: string): Promise<CachedPolicy | null> {
    if (this.#o.config.mtaSts !== "on") return null;
    const found = await this.#sts.lookup(domain);
    if (found.error && !found.policy) {
      await this.rpt?.record({
        domain,
        policy: { type: "no-policy-found", strings: [], mxHost: [] },
        result: found.error.kind,
        detail: found.error.message,
      });
    }
    return found.policy && found.policy.policy.mode !== "none" ? found.policy : null;
  }

  /**
   * The policy of each MX host of domain, for a message with the given
   * REQUIRETLS / TLS-Required: No flags; no TLS session is opened.
   */
  async decide(
    domain: string,
    routeTls: TlsMode,
    hosts: string[],
    flags: { requireTls?: boolean; tlsOptional?: boolean } = {},
  ): Promise<{ hosts: Map<string, HostPolicy & { dane: Dane }>; sts: CachedPolicy | null }> {
    const out = new Map<string, HostPolicy & { dane: Dane }>();
    const req = flags.requireTls === true;
    const none: Dane = { kind: "none" };
    if (routeTls === "none" && !req) {
      for (const h of hosts) {
        out.set(h, { tls: "none", source: "route tls = none (operator override)", dane: none });
      }
      return { hosts: out, sts: null };
    }
    const [dane, sts] = await Promise.all([this.#dane(domain, hosts), this.#stsPolicy(domain)]);
    const relax = flags.tlsOptional === true && !req;
    for (const h of hosts) {
      const d = dane.get(h) ?? none;
      const p = sts?.policy;
      let pol: HostPolicy;
      if (d.kind === "usable") {
        pol = { tls: relax ? stricter(routeTls, "may") : "require", source: "dane" };
      } else if (d.kind === "failed") {
        pol = { tls: routeTls, source: "dane", refused: relax ? undefined : d.why };
      } else if (p?.mode === "enforce") {
        const listed = mxMatches(h, p.mx);
        pol = {
          tls: relax ? stricter(routeTls, "may") : stricter(routeTls, "verify"),
          source: `mta-sts enforce (id ${sts!.id})`,
          refused: listed || relax ? undefined : `MX host ${h} is not listed in the MTA-STS ` +
            `policy of ${domain} (mode enforce, mx ${p.mx.join(" ")})`,
        };
      } else if (p?.mode === "testing") {
        pol = { tls: stricter(routeTls, "may"), source: `mta-sts testing (id ${sts!.id})` };
      } else pol = { tls: routeTls, source: "delivery.tls or route tls" };
      if (req && d.kind !== "usable") {
        pol = { ...pol, tls: "verify", source: `${pol.source}, requiretls` };
      }
      if (relax && pol.source !== "delivery.tls or route tls") pol.source += ", TLS-Required: No";
      out.set(h, { ...pol, dane: d });
    }
    return { hosts: out, sts };
  }

  /**
   * Applies the policy to the MX targets of domain: drops targets whose MX
   * the policy refuses (throws DeliveryError 4.7.5 when none is left), sets
   * each target's mode, CAs, DANE check and TLS-RPT reporter.
   */
  async apply(
    domain: string,
    routeTls: TlsMode,
    targets: SmtpTarget[],
    msg: OutgoingMessage,
  ): Promise<SmtpTarget[]> {
    const hosts = [...new Set(targets.map((t) => t.servername ?? t.host))];
    if (routeTls === "none" && !msg.requireTls) {
      if (this.#o.config.mtaSts === "on" || this.daneActive) {
        logWarn("tls policy override", { domain, tls: "none", why: "route tls = none" });
      }
      return targets;
    }
    const tlsOptional = !msg.requireTls && await tlsRequiredNo(msg);
    const { hosts: decided, sts } = await this.decide(domain, routeTls, hosts, {
      requireTls: msg.requireTls,
      tlsOptional,
    });
    const stsCa = sts ? await this.#stsCa() : undefined;
    const out: SmtpTarget[] = [];
    const refusals: string[] = [];
    for (const t of targets) {
      const host = t.servername ?? t.host;
      const pol = decided.get(host)!;
      if (pol.refused) {
        if (!refusals.includes(pol.refused)) {
          refusals.push(pol.refused);
          logWarn("tls policy refused mx", {
            domain,
            mx: host,
            policy: pol.source,
            reason: pol.refused,
          });
          await this.#count(domain, sts, pol.dane, host, t.host, "validation-failure");
        }
        continue;
      }
      const rptPolicy = policyOf(sts, pol.dane);
      const report = rptPolicy && this.rpt
        ? new SessionReport(this, domain, rptPolicy, host, t.host)
        : null;
      const next: SmtpTarget = { ...t, tls: pol.tls };
      if (stsCa && pol.source.startsWith("mta-sts")) next.ca = [...(t.ca ?? []), ...stsCa];
      if (pol.dane.kind === "usable") {
        const records = pol.dane.records;
        next.tlsCheck = (info) => {
          const why = daneCheck(records, info.peerChain ?? [], [host, domain]);
          report?.fail(why ? "validation-failure" : null);
          if (why && !tlsOptional) {
            logWarn("dane mismatch", { domain, mx: host, reason: why });
            return `DANE: ${why}`;
          }
          return null;
        };
      } else if (sts && report) {
        // MTA-STS testing (or relaxed enforce): count what verification would have said.
        next.tlsCheck = (info) => {
          report.fail(info.authorized ? null : certResult(info.authorizationError ?? ""));
          return null;
        };
      }
      if (report) next.tlsReport = (r) => report.settle(r);
      out.push(next);
    }
    if (out.length === 0) {
      throw new DeliveryError(`TLS policy: ${refusals.join("; ")}: not delivering`, {
        dsn: "4.7.5",
      });
    }
    return out;
  }

  async #count(
    domain: string,
    sts: CachedPolicy | null,
    dane: Dane,
    mx: string,
    ip: string,
    result: string,
  ): Promise<void> {
    const policy = policyOf(sts, dane);
    if (policy) await this.rpt?.record({ domain, policy, result, mx, ip });
  }

  /** `skiff route`: one line per MX host. */
  async explain(domain: string, routeTls: TlsMode, hosts: string[]): Promise<string[]> {
    const { hosts: decided } = await this.decide(domain, routeTls, hosts);
    return hosts.map((h) => {
      const p = decided.get(h)!;
      return `  tls ${h}: ${p.refused ? "refused" : p.tls} (${p.source})${
        p.refused ? `: ${p.refused}` : ""
      }`;
    });
  }
}

/** The TLS-RPT policy of a session: DANE's if usable, else MTA-STS's, else none. */
function policyOf(sts: CachedPolicy | null, dane: Dane): RptPolicy | null {
  if (dane.kind === "usable") {
    return {
      type: "tlsa",
      strings: dane.records.map((r) =>
        `${r.usage} ${r.selector} ${r.mtype} ${
          Array.from(r.data, (b) => b.toString(16).padStart(2, "0")).join("")
        }`
      ),
      mxHost: [],
    };
  }
  if (!sts) return null;
  return {
    type: "sts",
    strings: sts.policy.text.split(/\r?\n/).filter((l) => l.trim() !== ""),
    mxHost: sts.policy.mx,
  };
}

/** RFC 8460 §4.3 result type for a node:tls verification error. */
function certResult(err: string): string {
  if (/expired|not yet valid|NotValidYet|Expired/i.test(err)) return "certificate-expired";
  if (/altname|host|name|NotValidForName/i.test(err)) return "certificate-host-mismatch";
  return "certificate-not-trusted";
}

/** Collects the outcome of one session and counts it once. */
class SessionReport {
  #failure: string | null = null;
  #done = false;
  constructor(
    readonly engine: TlsPolicy,
    readonly domain: string,
    readonly policy: RptPolicy,
    readonly mx: string,
    readonly ip: string,
  ) {}

  fail(result: string | null): void {
    this.#failure = result;
  }

  settle(r: { tls: boolean; end?: SessionEnd }): void {
    if (this.#done) return;
    this.#done = true;
    let result = this.#failure ?? (r.tls ? "success" : null);
    if (!result && r.end) {
      const text = r.end.message;
      if (r.end.dsn === "4.7.4") result = "starttls-not-supported";
      else if (r.end.dsn === "4.7.5") result = certResult(text);
    } else if (!result) result = "starttls-not-supported";
    if (!result) return; // no TLS was tried (connection trouble): not a TLS session
    this.engine.rpt?.record({
      domain: this.domain,
      policy: this.policy,
      result,
      mx: this.mx,
      ip: this.ip,
    })
      .catch((err) =>
        logWarn("tls-rpt not recorded", { domain: this.domain, reason: String(err) })
      );
  }
}

/**
 * RFC 8689 §5: a message with REQUIRETLS that cannot be sent with verified
 * TLS is returned (5.7.30), never sent otherwise; other ends pass through.
 */
export function requireTlsEnd(msg: OutgoingMessage, end: SessionEnd): SessionEnd {
  if (!msg.requireTls || !/^4\.7\./.test(end.dsn)) return end;
  return new SessionEnd({
    outcome: "failed",
    code: 0,
    dsn: "5.7.30",
    text: `REQUIRETLS: ${end.message}`,
    usable: end.usable,
    early: end.early,
  });
}

/** Longest header block searched for TLS-Required. */
const MAX_HEADER = 64 * 1024;

/** Whether the message's header has `TLS-Required: No` (RFC 8689 §4.2.2). */
export async function tlsRequiredNo(msg: OutgoingMessage): Promise<boolean> {
  let stream: ReadableStream<Uint8Array>;
  try {
    stream = await msg.content();
  } catch {
    return false; // the session will report the unreadable content
  }
  const reader = stream.getReader();
  let text = "";
  try {
    while (text.length < MAX_HEADER && !text.includes("\r\n\r\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value, { stream: true });
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  const header = text.split("\r\n\r\n")[0].replace(/\r\n[ \t]+/g, " ");
  const found = /^TLS-Required:[ \t]*No[ \t]*$/im.test(header);
  if (found) logEvent("tls-required no", { from: msg.from });
  return found;
}
