/**
 * The DNS resolver handed to mailauth for one message's checks (SPF, DKIM
 * keys, DMARC, ARC): Deno.resolveDns against skiff's configured name server
 * (`delivery.nameserver`), answers reshaped into what Node's dns.resolve gives
 * (mailauth's contract), errors given Node's codes so mailauth can tell a
 * void answer (ENOTFOUND/ENODATA: SPF "none", "no key") from a failure
 * (ETIMEOUT, ESERVFAIL: temperror). Every message gets a budget: at most
 * `maxQueries` lookups and `timeoutMs` in all, so a hostile record set cannot
 * hold a session; SPF's own limits (10 DNS-querying terms, 2 void lookups,
 * RFC 7208 §4.6.4) are enforced inside mailauth on top of this.
 */
import type { HostPort } from "../config/types.ts";

/** What mailauth calls: (name, rrtype) → records in Node's dns.resolve shape. */
export type MailauthResolver = (name: string, rrtype: string) => Promise<unknown>;

/** Options for {@link boundedResolver}. */
export interface BoundedResolverOptions {
  /** DNS server; null = the system's. */
  nameserver: HostPort | null;
  /** Time for all of this message's lookups together. */
  timeoutMs: number;
  /** Lookups for this message; past it every query fails (ESERVFAIL → temperror). */
  maxQueries: number;
}

/** Counters a caller may log after the checks. */
export interface ResolverStats {
  queries: number;
}

const KINDS = new Set(["A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS"]);

/** An error as Node's dns module makes them: mailauth switches on `code`. */
function dnsError(code: string, name: string, rrtype: string, why: string): Error {
  const err = new Error(`DNS ${rrtype} lookup of ${name} failed: ${why}`) as Error & {
    code: string;
    hostname: string;
  };
  err.code = code;
  err.hostname = name;
  return err;
}

/** Deno's answer → Node's: MX {preference} → {priority}; the rest already match. */
function reshape(rrtype: string, answer: unknown): unknown {
  if (rrtype === "MX") {
    return (answer as { preference: number; exchange: string }[]).map((r) => ({
      priority: r.preference,
      exchange: r.exchange.replace(/\.$/, ""),
    }));
  }
  if (rrtype === "PTR" || rrtype === "CNAME" || rrtype === "NS") {
    return (answer as string[]).map((s) => s.replace(/\.$/, ""));
  }
  return answer;
}

/**
 * A resolver bounded for one message. Deno.resolveDns gives up by itself
 * after about two seconds (TimedOut) however long the signal allows, so a
 * TimedOut is asked again while the budget lasts (as lib/dns/mx.ts does).
 */
export function boundedResolver(
  opts: BoundedResolverOptions,
): { resolve: MailauthResolver; stats: ResolverStats } {
  const deadline = Date.now() + opts.timeoutMs;
  const signal = AbortSignal.timeout(opts.timeoutMs);
  const stats: ResolverStats = { queries: 0 };
  const options: Deno.ResolveDnsOptions = { signal };
  if (opts.nameserver) {
    options.nameServer = { ipAddr: opts.nameserver.host, port: opts.nameserver.port };
  }
  const resolve = async (name: string, rrtype: string): Promise<unknown> => {
    const kind = rrtype.toUpperCase();
    if (!KINDS.has(kind)) throw dnsError("ENOTIMP", name, kind, "record type not supported");
    if (++stats.queries > opts.maxQueries) {
      throw dnsError("ESERVFAIL", name, kind, `more than ${opts.maxQueries} lookups`);
    }
    for (let tries = 0; tries < 10; tries++) {
      if (signal.aborted || Date.now() >= deadline) {
        throw dnsError("ETIMEOUT", name, kind, "time for this message's lookups is up");
      }
      try {
        // deno-lint-ignore no-explicit-any
        return reshape(kind, await Deno.resolveDns(name, kind as any, options));
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          // NXDOMAIN and NODATA look alike here; both are "void" to SPF and "no key" to DKIM.
          throw dnsError("ENOTFOUND", name, kind, "no such record");
        }
        if (err instanceof Deno.errors.TimedOut) continue;
        if (signal.aborted) {
          throw dnsError("ETIMEOUT", name, kind, "time for this message's lookups is up");
        }
        throw dnsError("ESERVFAIL", name, kind, err instanceof Error ? err.message : String(err));
      }
    }
    throw dnsError("ETIMEOUT", name, kind, "no answer");
  };
  return { resolve, stats };
}
