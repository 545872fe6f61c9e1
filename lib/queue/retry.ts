/**
 * The retry schedule: a pure function of the attempt count (STYLE item 8).
 * Exponential backoff from retryMin doubling to retryMax, with ±10% jitter so
 * that messages deferred together do not all come back in the same second.
 */

/** Retry bounds in seconds. */
export interface RetryPolicy {
  retryMin: number;
  retryMax: number;
}

/**
 * Delay in ms before attempt number `attempts + 1`, given `attempts` failed
 * attempts so far (>= 1). `random` is injectable for tests.
 */
export function retryDelayMs(
  attempts: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number {
  const n = Math.max(1, Math.floor(attempts));
  const base = Math.min(policy.retryMax, policy.retryMin * 2 ** Math.min(n - 1, 30));
  const jitter = 1 + (random() * 0.2 - 0.1);
  return Math.round(base * jitter * 1000);
}
