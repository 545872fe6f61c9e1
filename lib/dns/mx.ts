/**
 * Where mail for a domain goes (RFC 5321 §5.1): its MX hosts by preference,
 * equal preferences shuffled, each host's IPv6 and IPv4 addresses; the
 * domain itself as an implicit MX when it has no MX records; a null MX
 * (RFC 7505) is an immediate permanent failure.
 *
 * Deno.resolveDns throws NotFound both for NXDOMAIN (the name does not
 * exist) and for NODATA (it exists, without records of that type), and
 * offers no way to tell them apart. Neither difference matters here:
 *  - MX NotFound → look up A and AAAA of the domain (implicit MX, §5.1).
 *    For NODATA that is what the RFC asks; for NXDOMAIN those lookups are
 *    NotFound too.
 *  - MX, A and AAAA all NotFound → permanent 5.1.2 ("bad destination
 *    system address"): whether the name does not exist or has no address,
 *    no retry can help (Postfix bounces both, "Host or domain name not found").
 *  - Any other resolver error (timeout, SERVFAIL, refused) is temporary, 4.4.3.
 * An MX host whose own A/AAAA lookups give NotFound is skipped; if no host
 * has an address the delivery is deferred (4.4.3), since MX targets are
 * often fixed quickly by their operators.
 */
import type { HostPort } from "../config/types.ts";
import { DeliveryError } from "../mail/delivery_error.ts";

/** Resolver settings. */
export interface ResolverOptions {
  /** DNS server; null = the system's. */
  nameserver: HostPort | null;
  timeoutMs: number;
  /** Injectable for tests (shuffling of equal preferences). */
  random?: () => number;
}

/** One address to try, in order. */
export interface MxTarget {
  /** The MX host name (the domain itself for an implicit MX). */
  host: string;
  address: string;
  preference: number;
}

/** Most addresses tried per delivery (Postfix smtp_mx_address_limit). */
export const MAX_ADDRESSES = 10;

type RecordKind = "MX" | "A" | "AAAA";

/**
 * One query, bounded by opts.timeoutMs. Deno.resolveDns gives up on its own
 * after two tries of about a second each (TimedOut), however long the signal
 * allows: one slow answer would then defer the delivery well before the
 * configured dns_timeout. So a TimedOut is asked again while that time
 * lasts; the signal's own abort ends it.
 */
async function query(name: string, kind: RecordKind, opts: ResolverOptions) {
  const signal = AbortSignal.timeout(opts.timeoutMs);
  const options: Deno.ResolveDnsOptions = { signal };
  if (opts.nameserver) {
    options.nameServer = { ipAddr: opts.nameserver.host, port: opts.nameserver.port };
  }
  // Bounded as well, in case a TimedOut ever comes back at once.
  const tries = Math.max(1, Math.ceil(opts.timeoutMs / 1000));
  for (let i = 1;; i++) {
    try {
      // deno-lint-ignore no-explicit-any
      return await Deno.resolveDns(name, kind as any, options) as unknown;
    } catch (err) {
      if (!(err instanceof Deno.errors.TimedOut) || signal.aborted || i >= tries) throw err;
    }
  }
}

/** NotFound → null; other errors → a temporary DeliveryError. */
async function lookup<T>(name: string, kind: RecordKind, opts: ResolverOptions): Promise<T | null> {
  try {
    return await query(name, kind, opts) as T;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    const why = err instanceof Error ? err.message : String(err);
    throw new DeliveryError(`DNS lookup of ${kind} for ${name} failed: ${why}`, {
      dsn: "4.4.3",
      cause: err,
    });
  }
}

async function addressesOf(host: string, opts: ResolverOptions): Promise<string[] | null> {
  const [v6, v4] = await Promise.all([
    lookup<string[]>(host, "AAAA", opts),
    lookup<string[]>(host, "A", opts),
  ]);
  if (v6 === null && v4 === null) return null;
  return [...(v6 ?? []), ...(v4 ?? [])];
}

/** Shuffles in place (Fisher-Yates). */
function shuffle<T>(a: T[], random: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** The addresses to try for a domain, best first; throws DeliveryError. */
export async function resolveMx(domain: string, opts: ResolverOptions): Promise<MxTarget[]> {
  const random = opts.random ?? Math.random;
  const mx = await lookup<{ preference: number; exchange: string }[]>(domain, "MX", opts);
  if (mx === null || mx.length === 0) {
    // RFC 5321 §5.1: no MX records: the domain is its own (implicit) MX.
    const addrs = await addressesOf(domain, opts);
    if (addrs === null || addrs.length === 0) {
      throw new DeliveryError(`Host or domain name not found: ${domain} has no MX, A or AAAA`, {
        permanent: true,
        dsn: "5.1.2",
      });
    }
    return addrs.slice(0, MAX_ADDRESSES).map((address) => ({
      host: domain,
      address,
      preference: 0,
    }));
  }
  const exchanges = mx.map((r) => ({
    host: r.exchange.replace(/\.$/, "").toLowerCase(),
    preference: r.preference,
  }));
  // RFC 7505 §3: a single MX with an empty exchange (".") says "no mail here".
  if (exchanges.some((e) => e.host === "")) {
    throw new DeliveryError(`Domain ${domain} does not accept mail (null MX)`, {
      permanent: true,
      dsn: "5.1.10",
    });
  }
  const byPref = new Map<number, typeof exchanges>();
  for (const e of exchanges) byPref.set(e.preference, [...(byPref.get(e.preference) ?? []), e]);
  const hosts = [...byPref.keys()].sort((a, b) => a - b).flatMap((p) =>
    shuffle(byPref.get(p)!, random)
  );
  const out: MxTarget[] = [];
  let lastError: DeliveryError | null = null;
  for (const h of hosts) {
    if (out.length >= MAX_ADDRESSES) break;
    try {
      const addrs = await addressesOf(h.host, opts);
      for (const address of addrs ?? []) out.push({ ...h, address });
    } catch (err) {
      lastError = err as DeliveryError;
    }
  }
  if (out.length === 0) {
    throw lastError ??
      new DeliveryError(`No address found for any MX host of ${domain}`, { dsn: "4.4.3" });
  }
  return out.slice(0, MAX_ADDRESSES);
}
