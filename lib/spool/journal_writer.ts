/**
 * A message's journal held open for the length of one delivery pass, so a
 * delivery result reaches the file in one write as soon as the peer's reply
 * is in: Spool.append costs open, two seeks, a read, the write, an
 * fdatasync and a close, each a thread hand-off and a wait for the event
 * loop, and every one of them before the write widened the window in which
 * a kill -9 loses the record of a delivery the peer already has (the
 * message is then delivered again: docs/reliability.md, "Crash torture and
 * faults"). Writes go out in order, one at a time; syncs are coalesced
 * (the spool's shared syncfs when it has one, else this file's fdatasync
 * with one in flight and every later write joining the next), and append()
 * resolves once a sync that began after its write has finished — except for
 * deferrals, which need no sync of their own (records.ts, mustSync).
 */
import { metrics } from "../metrics/metrics.ts";
import { writeAll } from "./durable.ts";
import { encodeRecords, type JournalRecord, mustSync } from "./records.ts";
import { openJournalEnd } from "./spool.ts";

/** An open journal for appending delivery results; one per message at a time. */
export class JournalWriter {
  #file: Deno.FsFile;
  #writes: Promise<void> = Promise.resolve();
  #syncing: Promise<void> | null = null;
  #nextSync: Promise<void> | null = null;
  #closed = false;

  #shared: (() => Promise<void>) | null;

  private constructor(file: Deno.FsFile, shared: (() => Promise<void>) | null) {
    this.#file = file;
    this.#shared = shared;
  }

  /**
   * Opens the spool file at `path` (message `id`) for appending, through
   * the same openJournalEnd as Spool.append: a line torn by a crash
   * mid-append is completed with TORN_MARK first, so the journal parses.
   */
  static async open(
    path: string,
    id: string,
    shared: (() => Promise<void>) | null = null,
  ): Promise<JournalWriter> {
    const { file, repair } = await openJournalEnd(path, id);
    try {
      if (repair.length > 0) await writeAll(file, repair);
      return new JournalWriter(file, shared);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /**
   * Writes the records at once (in call order), then waits for a covering
   * fdatasync unless they are deferrals only (mustSync: a lost deferral
   * only brings the next attempt forward), which are done once written.
   */
  async append(records: JournalRecord[]): Promise<void> {
    if (this.#closed) throw new Error("JournalWriter.append after close");
    if (records.length === 0) return;
    const lines = encodeRecords(records);
    // The file position is at the end (opened there, only ever appended to).
    const write = this.#writes.then(() => writeAll(this.#file, lines));
    this.#writes = write.catch(() => {});
    await write;
    if (mustSync(records)) await this.#sync();
  }

  /**
   * A sync that starts after now: a running one may have begun before the
   * caller's write, so callers join the single queued follow-up instead.
   */
  #sync(): Promise<void> {
    // The spool's shared syncfs (Spool.sharedDataSync) covers this file's data like every other
    // write before it, and is already coalesced across messages: one sync for a batch of passes.
    if (this.#shared) return this.#shared();
    if (this.#syncing === null) {
      this.#syncing = this.#file.syncData()
        .then(() => metrics.fsync("data")) // counted like every other spool fdatasync
        .finally(() => this.#syncing = null);
      return this.#syncing;
    }
    if (this.#nextSync === null) {
      this.#nextSync = this.#syncing.catch(() => {}).then(() => {
        this.#nextSync = null;
        return this.#sync();
      });
    }
    return this.#nextSync;
  }

  /** Waits for pending writes and syncs, then closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#writes;
    await this.#nextSync?.catch(() => {});
    await this.#syncing?.catch(() => {});
    this.#file.close();
  }
}
