/**
 * One timer for every pending read and write deadline. A timer per read
 * (setTimeout and its closure on the JS side, a timer entry in the runtime)
 * was part of what each idle SMTP connection kept alive, and arming and
 * clearing one per read and per reply written allocated about 3 KB each
 * time in Deno 2.9 (issue 13, docs/benchmarks.md). Here a waiter is added to a set with its due time;
 * a single timer is armed for the earliest and, when it fires, expires
 * every waiter that is due and re-arms for the next. No timer runs while
 * nothing waits, so an idle process (and a test) is left with none.
 *
 * The timer fires on a 100 ms grid, so a deadline may pass up to 100 ms
 * late (never early) and the scan over the waiting set runs at most ten
 * times a second however many connections wait with distinct deadlines
 * (a sorted structure would need removals, which happen for nearly every
 * read, to pay for it).
 */

/** The granularity of the shared timer, ms. */
const GRID = 100;

/** Something with a deadline: `expire()` runs once it passes, unless it was removed first. */
export interface Waiter {
  /** When to expire, in Date.now() milliseconds; set by {@link Deadlines.add}. */
  due: number;
  expire(): void;
}

/** A set of deadlines served by one timer. */
export class Deadlines {
  #waiting = new Set<Waiter>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (Infinity when none is armed). */
  #armedFor = Infinity;

  /** Expires `w` in `ms` milliseconds unless {@link remove}d before. */
  add(w: Waiter, ms: number): void {
    w.due = Date.now() + ms;
    this.#waiting.add(w);
    if (Math.ceil(w.due / GRID) * GRID < this.#armedFor) this.#arm(w.due);
  }

  /** Forgets `w` (its wait ended); stops the timer when nothing waits any more. */
  remove(w: Waiter): void {
    if (!this.#waiting.delete(w) || this.#waiting.size > 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedFor = Infinity;
  }

  /** Waiters now pending (for tests). */
  get size(): number {
    return this.#waiting.size;
  }

  #arm(due: number): void {
    const at = Math.ceil(due / GRID) * GRID;
    if (at === this.#armedFor) return;
    clearTimeout(this.#timer);
    this.#armedFor = at;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, at - Date.now()));
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedFor = Infinity;
    const now = Date.now();
    let next = Infinity;
    const due: Waiter[] = [];
    for (const w of this.#waiting) {
      if (w.due <= now) due.push(w);
      else if (w.due < next) next = w.due;
    }
    for (const w of due) this.#waiting.delete(w);
    if (next < Infinity) this.#arm(next);
    due.sort((a, b) => a.due - b.due);
    for (const w of due) w.expire();
  }
}

/** The process's read and write deadlines (lib/net/conn.ts). */
export const ioDeadlines: Deadlines = new Deadlines();
