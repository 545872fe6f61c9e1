/**
 * Per-destination limits: how many deliveries to one destination may run at
 * once, and optionally how many may start per second. Both protect the
 * receiving server (and our reputation with it) when the queue holds many
 * messages for one place, as after an outage. The clock and the sleep are
 * injectable so tests can check the spacing without waiting for it.
 */

interface Gate {
  active: number;
  waiters: (() => void)[];
  /** Earliest time (ms) the next delivery may start, for the rate limit. */
  nextStart: number;
}

/** The limiter's view of time (tests pass a fake one). */
export interface LimiterClock {
  /** Milliseconds since the epoch. */
  now: () => number;
  /** Resolves after ms milliseconds. */
  sleep: (ms: number) => Promise<void>;
}

const REAL_CLOCK: LimiterClock = {
  now: Date.now,
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/** Concurrency and rate gates keyed by destination. */
export class DestinationLimiter {
  #gates = new Map<string, Gate>();
  #clock: LimiterClock;

  constructor(clock: Partial<LimiterClock> = {}) {
    this.#clock = { ...REAL_CLOCK, ...clock };
  }

  /**
   * Waits for a slot at `key` (at most `concurrency` at once, at most `rate`
   * starts per second when rate > 0); returns the function that frees it.
   * Starts are spaced 1000/rate ms apart, in the order the slots were taken.
   */
  async acquire(key: string, concurrency: number, rate: number): Promise<() => void> {
    let gate = this.#gates.get(key);
    if (!gate) {
      gate = { active: 0, waiters: [], nextStart: 0 };
      this.#gates.set(key, gate);
    }
    while (gate.active >= Math.max(1, concurrency)) {
      await new Promise<void>((r) => gate!.waiters.push(r));
    }
    gate.active++;
    if (rate > 0) {
      const now = this.#clock.now();
      const start = Math.max(now, gate.nextStart);
      gate.nextStart = start + 1000 / rate;
      if (start > now) await this.#clock.sleep(start - now);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      gate!.active--;
      gate!.waiters.shift()?.();
      // A gate still holding a future start time is kept, or the spacing would be lost.
      if (
        gate!.active === 0 && gate!.waiters.length === 0 &&
        gate!.nextStart <= this.#clock.now() && this.#gates.get(key) === gate
      ) {
        this.#gates.delete(key);
      }
    };
  }

  /** Deliveries running at key now (tests, status). */
  active(key: string): number {
    return this.#gates.get(key)?.active ?? 0;
  }
}
