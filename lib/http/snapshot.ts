/**
 * The queue as the monitoring endpoint sees it: the very entries `skiff
 * queue list --json` prints (lib/control/queue_ops.ts listQueue, with the
 * manager's "active" marks), and the figures derived from them. A read
 * opens every queue file: about 0.5 ms per message measured here under
 * load, so seconds for a big queue. So one read runs at a time, and once
 * there is a snapshot a request gets it at once while a newer one is read
 * in the background (at most one every MAX_AGE_MS): a scrape never waits
 * for the spool, and its queue figures are one read old.
 */
import { listQueue, NO_SCHEDULER, type QueueEntry } from "../control/queue_ops.ts";
import { AGE_BUCKETS } from "./collector.ts";

/** How long one read of the spool is reused. */
const MAX_AGE_MS = 2_000;

/** Queue figures for /metrics and the status page. */
export interface QueueSummary {
  byState: Record<QueueEntry["queue_name"], number>;
  byAge: Record<string, number>;
  total: number;
  oldestAgeSeconds: number;
}

/** A deferred message for "oldest deferred". */
export interface DeferredMessage {
  queue_id: string;
  arrival_time: number;
  sender: string;
  recipients: string[];
  attempts: number;
  last_error: string;
}

/** Cached reads of the queue. */
export class QueueView {
  #spoolDir: string;
  #activeIds: () => Set<string>;
  #now: () => number;
  #cached: { at: number; entries: QueueEntry[] } | null = null;
  #reading: Promise<QueueEntry[]> | null = null;

  constructor(opts: { spoolDir: string; activeIds?: () => Set<string>; now?: () => number }) {
    this.#spoolDir = opts.spoolDir;
    this.#activeIds = opts.activeIds ?? (() => new Set());
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Every queued and held message, oldest first (as `skiff queue list
   * --json`): the latest snapshot (refreshed behind it when older than
   * MAX_AGE_MS), or the first read.
   */
  entries(): Promise<QueueEntry[]> {
    const c = this.#cached;
    if (c && this.#now() - c.at < MAX_AGE_MS) return Promise.resolve(c.entries);
    const read = this.#read();
    if (c) {
      read.catch(() => {}); // a failed refresh keeps the old snapshot; the next request retries
      return Promise.resolve(c.entries);
    }
    return read;
  }

  #read(): Promise<QueueEntry[]> {
    // Stamped when the read starts: what it finds is at least that fresh.
    const started = this.#now();
    this.#reading ??= listQueue(this.#spoolDir, { ...NO_SCHEDULER, activeIds: this.#activeIds })
      .then((entries) => {
        this.#cached = { at: started, entries };
        return entries;
      })
      .finally(() => this.#reading = null);
    return this.#reading;
  }

  /** Counts by state and age, and the oldest message's age. */
  async summary(): Promise<QueueSummary> {
    return summarize(await this.entries(), this.#now());
  }
}

/** Counts entries by state and by age bucket. */
export function summarize(entries: QueueEntry[], nowMs: number): QueueSummary {
  const byState = { incoming: 0, active: 0, deferred: 0, hold: 0 };
  const byAge: Record<string, number> = Object.fromEntries(AGE_BUCKETS.map(([, l]) => [l, 0]));
  const now = Math.floor(nowMs / 1000);
  let oldest = 0;
  for (const e of entries) {
    byState[e.queue_name]++;
    const age = Math.max(0, now - e.arrival_time);
    oldest = Math.max(oldest, age);
    const bucket = AGE_BUCKETS.find(([max]) => age < max)!;
    byAge[bucket[1]]++;
  }
  return { byState, byAge, total: entries.length, oldestAgeSeconds: oldest };
}

/** The oldest messages with a deferred recipient, with the last error of one. */
export function oldestDeferred(entries: QueueEntry[], limit: number): DeferredMessage[] {
  const out: DeferredMessage[] = [];
  for (const e of entries) {
    const deferred = e.recipients.filter((r) => r.status === "deferred");
    if (deferred.length === 0) continue;
    out.push({
      queue_id: e.queue_id,
      arrival_time: e.arrival_time,
      sender: e.sender,
      recipients: deferred.map((r) => r.address),
      attempts: Math.max(...deferred.map((r) => r.attempts)),
      last_error: deferred.find((r) => r.delay_reason)?.delay_reason ?? "",
    });
    if (out.length >= limit) break;
  }
  return out;
}
