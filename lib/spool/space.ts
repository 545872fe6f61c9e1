/**
 * Free space of the spool's file system, so a full disk is refused at MAIL
 * (452 4.3.1, as Postfix does) instead of after the client sent the whole
 * body. A message needs 1.5 × its declared SIZE (or the size limit without
 * one) on top of queue.min_free_bytes, the reserve kept for what must
 * still fit when the disk is tight: journal appends (delivered, deferred)
 * and bounces. statfs(2) comes from node:fs (no FFI needed); its answer is
 * cached for a second and refreshed in the background, so the check costs
 * nothing per command. Entering and leaving the low state is logged once
 * each, never per message.
 */
import { statfs } from "node:fs";
import { logEvent, logWarn } from "../log/log.ts";

/** How long one statfs answer is used. */
const CACHE_MS = 1000;

/** Bytes available to an unprivileged writer on the file system holding `dir`. */
export function availableBytes(dir: string): Promise<number> {
  return new Promise((resolve, reject) =>
    statfs(dir, (err, s) => err ? reject(err) : resolve(Number(s.bavail) * Number(s.bsize)))
  );
}

/** Options of a SpaceMonitor. */
export interface SpaceOptions {
  /** The spool directory. */
  dir: string;
  /** The reserve (queue.min_free_bytes). */
  minFree: number;
  /** The size limit (limits.message_size): the low state is "a message of this size would not fit". */
  messageSize: number;
  /** Injectable for tests. */
  available?: (dir: string) => Promise<number>;
  now?: () => number;
}

/** The spool's free space, cached; see the module comment. */
export class SpaceMonitor {
  #opts: SpaceOptions;
  #free = Number.POSITIVE_INFINITY;
  #at = -Infinity;
  #low = false;
  #refreshing: Promise<void> | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(opts: SpaceOptions) {
    this.#opts = opts;
  }

  /** The last free-space figure read, in bytes. */
  get free(): number {
    return this.#free;
  }

  /** True while a message of the size limit would be refused. */
  get low(): boolean {
    return this.#low;
  }

  /** Reads the free space now (at most one statfs at a time) and logs a change of state. */
  refresh(): Promise<void> {
    this.#refreshing ??= (async () => {
      try {
        this.#free = await (this.#opts.available ?? availableBytes)(this.#opts.dir);
        this.#at = this.#now();
        this.#update();
      } catch (err) {
        // Unknown free space refuses nothing: the write itself still fails cleanly (451).
        logWarn("spool space check failed", { dir: this.#opts.dir, error: String(err) });
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  /** Keeps the figure fresh (and the log timely) with a timer that never holds the process. */
  start(): void {
    if (this.#timer !== undefined) return;
    const timer = setInterval(() => void this.refresh(), CACHE_MS);
    Deno.unrefTimer(timer as unknown as number);
    this.#timer = timer;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * True when a message of `size` bytes fits: 1.5 × size plus the reserve is
   * free. Synchronous, from the cached figure; a stale one is refreshed for
   * the next caller.
   */
  fits(size: number): boolean {
    if (this.#now() - this.#at > CACHE_MS) void this.refresh();
    return this.#free - this.#opts.minFree >= 1.5 * size;
  }

  #update(): void {
    const low = !(this.#free - this.#opts.minFree >= 1.5 * this.#opts.messageSize);
    if (low === this.#low) return;
    this.#low = low;
    const fields = {
      dir: this.#opts.dir,
      free: this.#free,
      reserve: this.#opts.minFree,
      needed: this.#opts.minFree + 1.5 * this.#opts.messageSize,
    };
    if (low) logWarn("spool space low", { ...fields, action: "MAIL refused with 452 4.3.1" });
    else logEvent("spool space ok", fields);
  }

  #now(): number {
    return this.#opts.now?.() ?? Date.now();
  }
}
