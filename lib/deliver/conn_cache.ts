/**
 * The outgoing connection cache (the seed's "outgoing sockets in an
 * already-authenticated state"): after a clean transaction a session may be
 * parked idle and reused for the next message to the same destination, so
 * that message skips connect, greeting, EHLO, STARTTLS and AUTH.
 *
 * Keys name the destination, the TLS policy and the AUTH identity, so a
 * session is never shared between destinations or identities. The cache is
 * bounded in count (the oldest idle session is closed to make room) and in
 * idle time (a timer sends QUIT), and every reuse starts with an RSET probe
 * (RFC 5321 §4.1.1.5): a session the server dropped or confused is closed
 * and a fresh one opened.
 */
import type { SmtpSession } from "../smtp/client_session.ts";
import { metrics } from "../metrics/metrics.ts";

interface Parked {
  key: string;
  session: SmtpSession;
  timer: ReturnType<typeof setTimeout>;
}

/** Counters for logs and measurements. */
export interface CacheStats {
  /** Sessions reused after a good RSET probe. */
  hits: number;
  /** Lookups that found no usable session. */
  misses: number;
  /** Parked sessions closed: idle timeout, eviction, failed probe. */
  closed: number;
}

/** Idle SMTP/LMTP sessions by destination key. */
export class ConnectionCache {
  #maxSize: number;
  #idleMs: number;
  /** Oldest first. */
  #parked: Parked[] = [];
  readonly stats: CacheStats = { hits: 0, misses: 0, closed: 0 };

  constructor(opts: { maxSize: number; idleMs: number }) {
    this.#maxSize = opts.maxSize;
    this.#idleMs = opts.idleMs;
  }

  /** The cache key: destination, TLS policy and AUTH identity. */
  static key(parts: { dest: string; tls: string; auth: string }): string {
    return `${parts.dest}|tls=${parts.tls}|auth=${parts.auth}`;
  }

  /** Idle sessions held now. */
  get size(): number {
    return this.#parked.length;
  }

  /** A probed, ready session for key (newest first), or null. */
  async take(key: string): Promise<SmtpSession | null> {
    while (true) {
      let at = -1;
      for (let i = this.#parked.length - 1; i >= 0; i--) {
        if (this.#parked[i].key === key) {
          at = i;
          break;
        }
      }
      if (at < 0) {
        this.stats.misses++;
        metrics.cacheLookup(false);
        return null;
      }
      const [p] = this.#parked.splice(at, 1);
      clearTimeout(p.timer);
      if (await p.session.probe()) {
        this.stats.hits++;
        metrics.cacheLookup(true);
        return p.session;
      }
      this.stats.closed++;
      p.session.destroy();
    }
  }

  /** Parks a session after a clean transaction; closes it when the cache is off or it is unhealthy. */
  park(key: string, session: SmtpSession): void {
    if (this.#maxSize === 0 || !session.healthy) {
      void session.quit();
      return;
    }
    while (this.#parked.length >= this.#maxSize) {
      const old = this.#parked.shift()!;
      clearTimeout(old.timer);
      this.stats.closed++;
      void old.session.quit();
    }
    const entry: Parked = {
      key,
      session,
      timer: setTimeout(() => {
        const i = this.#parked.indexOf(entry);
        if (i >= 0) this.#parked.splice(i, 1);
        this.stats.closed++;
        void session.quit();
      }, this.#idleMs),
    };
    // An idle session must not keep a one-shot queue run alive.
    Deno.unrefTimer(entry.timer as unknown as number);
    this.#parked.push(entry);
  }

  /** QUITs every idle session. */
  async close(): Promise<void> {
    const all = this.#parked.splice(0);
    for (const p of all) clearTimeout(p.timer);
    await Promise.allSettled(all.map((p) => p.session.quit()));
  }
}
