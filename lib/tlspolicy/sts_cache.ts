/**
 * The MTA-STS policy of a domain as delivery sees it (RFC 8461 §5): the
 * `_mta-sts` TXT record says whether there is a policy and its id; a cached
 * policy is used while its max_age lasts and its id is the published one
 * (or the TXT record is gone or unreachable: §5.1 keeps a cached policy
 * valid then); a new id, or no cached policy, fetches it. The cache is a
 * JSON file in the spool directory written durably, so policies survive a
 * restart (an attacker who strips the TXT record after a restart gains
 * nothing). Concurrent deliveries to one domain share one fetch.
 */
import { writeFileDurably } from "../spool/durable.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { fetchStsPolicy, StsError, type StsPolicy, stsRecordId } from "./mta_sts.ts";

/** One cached policy. */
export interface CachedPolicy {
  id: string;
  policy: StsPolicy;
  /** Epoch ms when fetched; it expires after policy.maxAge. */
  fetched: number;
}

/** What the lookup found, with any fetch trouble (for TLS-RPT). */
export interface StsLookup {
  policy: CachedPolicy | null;
  /** A fetch that failed (and was not covered by a cached policy, or was). */
  error?: StsError;
}

/** Most domains kept (the oldest are dropped first). */
const MAX_ENTRIES = 10_000;
/**
 * How long a `_mta-sts` TXT answer is reused: without it every MX delivery
 * costs a DNS round trip (about 5 ms measured against a loopback resolver);
 * a changed id is then seen within this time, as a DNS cache would.
 */
const TXT_REUSE_MS = 300_000;

/** How the cache reaches DNS and HTTPS. */
export interface StsSources {
  /** TXT strings of a name; [] when it does not exist; throws on resolver trouble. */
  txt(name: string): Promise<string[]>;
  /** Addresses of a host name ([] when none). */
  addresses(host: string): Promise<string[]>;
  port: number;
  timeoutMs: number;
  /** Extra CAs for the HTTPS fetch (read per fetch); undefined = the system's. */
  ca(): Promise<string[] | undefined>;
  now(): number;
}

/** The durable MTA-STS policy cache; see the module comment. */
export class StsCache {
  #path: string;
  #src: StsSources;
  #entries: Map<string, CachedPolicy> | null = null;
  #inflight = new Map<string, Promise<StsLookup>>();
  #txtSeen = new Map<string, { at: number; txt: string[] }>();
  #writing: Promise<void> = Promise.resolve();

  constructor(path: string, src: StsSources) {
    this.#path = path;
    this.#src = src;
  }

  async #load(): Promise<Map<string, CachedPolicy>> {
    if (this.#entries) return this.#entries;
    const entries = new Map<string, CachedPolicy>();
    try {
      const raw = JSON.parse(await Deno.readTextFile(this.#path));
      for (const [domain, e] of Object.entries(raw as Record<string, CachedPolicy>)) {
        if (typeof e?.id === "string" && typeof e.fetched === "number" && e.policy?.mode) {
          entries.set(domain, e);
        }
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        logWarn("mta-sts cache unreadable", { path: this.#path, reason: String(err) });
      }
    }
    return this.#entries ??= entries;
  }

  #save(): Promise<void> {
    const snapshot = JSON.stringify(Object.fromEntries(this.#entries ?? []));
    this.#writing = this.#writing.then(() =>
      writeFileDurably(this.#path, new TextEncoder().encode(snapshot)).catch((err) =>
        logWarn("mta-sts cache not saved", { path: this.#path, reason: String(err) })
      )
    );
    return this.#writing;
  }

  /** The cached, unexpired policy of domain (no DNS). */
  async cached(domain: string): Promise<CachedPolicy | null> {
    const e = (await this.#load()).get(domain);
    return e && e.fetched + e.policy.maxAge * 1000 > this.#src.now() ? e : null;
  }

  /** The TXT strings of _mta-sts.<domain>, reused for TXT_REUSE_MS (errors are not). */
  async #txt(domain: string): Promise<string[]> {
    const now = this.#src.now();
    const seen = this.#txtSeen.get(domain);
    if (seen && seen.at + TXT_REUSE_MS > now && seen.at <= now) return seen.txt;
    const txt = await this.#src.txt(`_mta-sts.${domain}`);
    this.#txtSeen.delete(domain);
    this.#txtSeen.set(domain, { at: now, txt });
    if (this.#txtSeen.size > MAX_ENTRIES) this.#txtSeen.delete(this.#txtSeen.keys().next().value!);
    return txt;
  }

  /** The policy to apply to domain now. */
  lookup(domain: string): Promise<StsLookup> {
    const running = this.#inflight.get(domain);
    if (running) return running;
    const p = this.#lookup(domain).finally(() => this.#inflight.delete(domain));
    this.#inflight.set(domain, p);
    return p;
  }

  async #lookup(domain: string): Promise<StsLookup> {
    const cached = await this.cached(domain);
    let txt: string[];
    try {
      txt = await this.#txt(domain);
    } catch (err) {
      // §5.1: resolver trouble: a cached policy still holds; without one, none.
      logWarn("mta-sts txt lookup failed", { domain, reason: String(err) });
      return { policy: cached };
    }
    const id = stsRecordId(txt);
    if (id === null || (cached && cached.id === id)) return { policy: cached };
    try {
      const policy = await fetchStsPolicy(domain, {
        addresses: await this.#src.addresses(`mta-sts.${domain}`),
        port: this.#src.port,
        timeoutMs: this.#src.timeoutMs,
        ca: await this.#src.ca(),
      });
      const entry = { id, policy, fetched: this.#src.now() };
      const entries = await this.#load();
      entries.delete(domain);
      entries.set(domain, entry);
      while (entries.size > MAX_ENTRIES) entries.delete(entries.keys().next().value!);
      await this.#save();
      logEvent("mta-sts policy", {
        domain,
        id,
        mode: policy.mode,
        max_age: policy.maxAge,
        mx: policy.mx.join(","),
      });
      return { policy: entry };
    } catch (err) {
      const e = err instanceof StsError
        ? err
        : new StsError("sts-policy-fetch-error", `MTA-STS policy of ${domain}: ${err}`);
      logWarn("mta-sts fetch failed", { domain, id, reason: e.message, cached: !!cached });
      return { policy: cached, error: e };
    }
  }
}
