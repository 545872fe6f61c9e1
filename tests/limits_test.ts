/**
 * The per-destination limiter (lib/queue/limits.ts) with an injected clock:
 * the rate limit spaces starts 1000/rate ms apart (checked on the fake
 * clock's scheduled times, never wall time), concurrency caps deliveries in
 * flight, and destinations do not hold each other up.
 */
import assert from "node:assert/strict";
import { DestinationLimiter } from "../lib/queue/limits.ts";

/**
 * A fake clock: sleep() parks the caller until advance() passes its wake-up
 * time. `sleeps` records each requested sleep as [start, wake] times.
 */
class FakeClock {
  t: number;
  sleeps: [number, number][] = [];
  #timers: { at: number; wake: () => void }[] = [];
  constructor(t0: number) {
    this.t = t0;
  }
  now = (): number => this.t;
  sleep = (ms: number): Promise<void> => {
    this.sleeps.push([this.t, this.t + ms]);
    return new Promise((wake) => this.#timers.push({ at: this.t + ms, wake }));
  };
  /** Moves time to the next timer and wakes it; false when none is left. */
  async step(): Promise<boolean> {
    await flush();
    this.#timers.sort((a, b) => a.at - b.at);
    const next = this.#timers.shift();
    if (!next) return false;
    this.t = Math.max(this.t, next.at);
    next.wake();
    await flush();
    return true;
  }
  get pending(): number {
    return this.#timers.length;
  }
}

/** Lets every ready promise continuation run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

const T0 = 1_000_000;

/** Runs the fake clock until `work` settles (bounded; a stuck limiter fails the test). */
async function drive<T>(clock: FakeClock, work: Promise<T>): Promise<T> {
  let done = false;
  const settled = work.finally(() => done = true);
  for (let steps = 0; !done; steps++) {
    if (!(await clock.step()) && !done) {
      throw new Error("limiter stuck with no timer pending");
    }
    if (steps > 10_000) throw new Error("too many steps");
  }
  return await settled;
}

/** n acquisitions at once (not yet driven); resolves to each delivery's start time. */
function acquireAll(
  clock: FakeClock,
  lim: DestinationLimiter,
  n: number,
  key: string,
  concurrency: number,
  rate: number,
): Promise<number[]> {
  return Promise.all(Array.from({ length: n }, async () => {
    const release = await lim.acquire(key, concurrency, rate);
    const t = clock.now();
    release();
    return t;
  }));
}

/** acquireAll, driven to the end. */
function burst(
  clock: FakeClock,
  lim: DestinationLimiter,
  n: number,
  key: string,
  concurrency: number,
  rate: number,
): Promise<number[]> {
  return drive(clock, acquireAll(clock, lim, n, key, concurrency, rate));
}

const TABLE: { name: string; n: number; concurrency: number; rate: number; want: number[] }[] = [
  { name: "rate 1/s", n: 4, concurrency: 10, rate: 1, want: [0, 1000, 2000, 3000] },
  { name: "rate 4/s", n: 5, concurrency: 10, rate: 4, want: [0, 250, 500, 750, 1000] },
  { name: "rate 10/s", n: 3, concurrency: 1, rate: 10, want: [0, 100, 200] },
  { name: "no rate", n: 4, concurrency: 10, rate: 0, want: [0, 0, 0, 0] },
];

for (const row of TABLE) {
  Deno.test(`limiter: ${row.name}, ${row.n} messages start at the configured spacing`, async () => {
    const clock = new FakeClock(T0);
    const lim = new DestinationLimiter({ now: clock.now, sleep: clock.sleep });
    const starts = await burst(clock, lim, row.n, "smtp:dest", row.concurrency, row.rate);
    assert.deepEqual(starts.map((t) => t - T0).sort((a, b) => a - b), row.want);
    // Every wait was asked of the injected sleep, and each ends at a scheduled start.
    const wakes = clock.sleeps.map(([, w]) => w - T0).sort((a, b) => a - b);
    assert.deepEqual(wakes, row.want.filter((t) => t > 0));
    assert.equal(lim.active("smtp:dest"), 0);
  });
}

Deno.test("limiter: concurrency caps deliveries in flight; rate spacing holds across them", async () => {
  const clock = new FakeClock(T0);
  const lim = new DestinationLimiter({ now: clock.now, sleep: clock.sleep });
  // 2 at once, each delivery takes 5 s, at most 2 starts/s: the third waits for a free slot.
  let peak = 0;
  const starts: number[] = [];
  const runs = Array.from({ length: 4 }, async () => {
    const release = await lim.acquire("d", 2, 2);
    starts.push(clock.now() - T0);
    peak = Math.max(peak, lim.active("d"));
    await clock.sleep(5000);
    release();
  });
  await drive(clock, Promise.all(runs));
  assert.equal(peak, 2);
  assert.deepEqual(starts, [0, 500, 5000, 5500]);
});

Deno.test("limiter: the spacing survives a quiet gap only as long as it must", async () => {
  const clock = new FakeClock(T0);
  const lim = new DestinationLimiter({ now: clock.now, sleep: clock.sleep });
  // Two starts at 1/s: the second is at +1000.
  assert.deepEqual(await burst(clock, lim, 2, "d", 5, 1), [T0, T0 + 1000]);
  // Released at +1000, next start allowed at +2000: one acquired at +1500 waits 500 ms.
  clock.t = T0 + 1500;
  assert.deepEqual(await burst(clock, lim, 1, "d", 5, 1), [T0 + 2000]);
  // Long after, a new one starts at once.
  clock.t = T0 + 60_000;
  assert.deepEqual(await burst(clock, lim, 1, "d", 5, 1), [T0 + 60_000]);
});

Deno.test("limiter: destinations are limited separately", async () => {
  const clock = new FakeClock(T0);
  const lim = new DestinationLimiter({ now: clock.now, sleep: clock.sleep });
  const [a, b] = await drive(
    clock,
    Promise.all([acquireAll(clock, lim, 3, "a", 10, 1), acquireAll(clock, lim, 3, "b", 10, 2)]),
  );
  assert.deepEqual(a.map((t) => t - T0), [0, 1000, 2000]);
  assert.deepEqual(b.map((t) => t - T0), [0, 500, 1000]);
});
