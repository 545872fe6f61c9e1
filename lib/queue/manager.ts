/**
 * The queue manager: one in-memory schedule keyed by next-attempt time,
 * rebuilt from the spool at start and on a periodic scan. For each due
 * message it relays non-local recipients in the event loop and hands local
 * ones to a worker child; each result is appended to the message's journal
 * before anything else, and a message is removed once every recipient is
 * final (delivered or failed). Deferred recipients come back after a backoff
 * computed from their attempt count.
 */
import type { Config } from "../config/types.ts";
import type { SendResult } from "../smtp/client.ts";
import { relayMessage } from "../deliver/relay.ts";
import { delaySeconds, logError, logEvent } from "../log/log.ts";
import { isLocalAddress } from "../smtp/policy.ts";
import type { JournalRecord, MessageState, RecipientState } from "../spool/records.ts";
import type { Spool } from "../spool/spool.ts";
import type { DeliveryJob, WorkerReport } from "../worker/protocol.ts";
import { runWorkerJob } from "../worker/run_job.ts";
import { retryDelayMs } from "./retry.ts";

/** Seams for tests: clock, worker runner, relay client. */
export interface ManagerOptions {
  config: Config;
  spool: Spool;
  now?: () => number;
  runJob?: (job: DeliveryJob) => Promise<WorkerReport>;
  relay?: (state: MessageState, rcpts: RecipientState[]) => Promise<SendResult>;
}

/** The queue manager of one `skiff serve` process. */
export class QueueManager {
  #cfg: Config;
  #spool: Spool;
  #now: () => number;
  #runJob: (job: DeliveryJob) => Promise<WorkerReport>;
  #relay: (state: MessageState, rcpts: RecipientState[]) => Promise<SendResult>;
  /** id → next attempt (epoch ms). */
  #due = new Map<string, number>();
  #active = new Map<string, Promise<void>>();
  /** Messages a flush made due: their deferred recipients are tried regardless of backoff. */
  #forced = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #scanTimer: ReturnType<typeof setInterval> | undefined;
  #stopping = false;

  constructor(opts: ManagerOptions) {
    this.#cfg = opts.config;
    this.#spool = opts.spool;
    this.#now = opts.now ?? Date.now;
    this.#runJob = opts.runJob ??
      ((job) => runWorkerJob(job, { timeoutMs: this.#cfg.queue.workerTimeout * 1000 }));
    this.#relay = opts.relay ?? ((state, rcpts) => this.#relayDefault(state, rcpts));
  }

  /** Rebuilds the schedule from the spool and starts the periodic scan. */
  async start(): Promise<{ messages: number }> {
    const n = await this.scan();
    this.#scanTimer = setInterval(() => {
      this.scan().catch((err) => logError("scan failed", { error: String(err) }));
    }, this.#cfg.queue.scanInterval * 1000);
    return { messages: n };
  }

  /** Adds every spooled message not yet scheduled; returns how many are queued. */
  async scan(): Promise<number> {
    for (const id of await this.#spool.list()) {
      if (this.#due.has(id) || this.#active.has(id)) continue;
      try {
        const state = await this.#spool.load(id);
        this.#due.set(id, state.nextAttempt);
      } catch (err) {
        logError("unreadable queue file", { id, error: String(err) });
      }
    }
    this.#pump();
    return this.#due.size + this.#active.size;
  }

  /** Schedules a message (a new one is due at once). */
  enqueue(id: string, at = 0): void {
    if (this.#stopping) return;
    this.#due.set(id, at);
    this.#pump();
  }

  /** Makes every queued message due now (`skiff flush`). */
  flush(): void {
    for (const id of this.#due.keys()) {
      this.#due.set(id, 0);
      this.#forced.add(id);
    }
    this.#pump();
  }

  /** How many messages are scheduled or in progress. */
  get size(): number {
    return this.#due.size + this.#active.size;
  }

  /** Stops scheduling and waits for deliveries in progress. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    clearInterval(this.#scanTimer);
    await Promise.allSettled([...this.#active.values()]);
  }

  /** Waits until nothing is in progress (tests, one-shot queue runs). */
  async idle(): Promise<void> {
    while (this.#active.size > 0) await Promise.allSettled([...this.#active.values()]);
  }

  get #maxActive(): number {
    return this.#cfg.queue.workers + this.#cfg.queue.relayConcurrency;
  }

  /** Starts every due message up to the concurrency limit, then sleeps until the next one. */
  #pump(): void {
    if (this.#stopping) return;
    clearTimeout(this.#timer);
    const now = this.#now();
    let next = Infinity;
    for (const [id, at] of this.#due) {
      if (at > now) {
        next = Math.min(next, at);
        continue;
      }
      if (this.#active.size >= this.#maxActive) break;
      if (this.#active.has(id)) continue;
      this.#due.delete(id);
      const run = this.#process(id)
        .catch((err) => {
          logError("processing failed", { id, error: String(err) });
          this.#due.set(id, this.#now() + this.#cfg.queue.retryMin * 1000);
        })
        .finally(() => {
          this.#active.delete(id);
          this.#pump();
        });
      this.#active.set(id, run);
    }
    if (next !== Infinity) {
      // Timers are capped so that a clock jump cannot stall the queue for long.
      const wait = Math.min(Math.max(next - now, 10), 60_000);
      this.#timer = setTimeout(() => this.#pump(), wait);
    }
  }

  async #process(id: string): Promise<void> {
    let state = await this.#spool.load(id);
    if (!state.done) state = await this.#expire(state);
    const now = this.#now();
    const forced = this.#forced.delete(id);
    const due = state.recipients.filter((r) =>
      (r.status === "pending" || r.status === "deferred") && (forced || r.nextAttempt <= now)
    );
    const local = due.filter((r) => isLocalAddress(this.#cfg, r.address));
    const remote = due.filter((r) => !isLocalAddress(this.#cfg, r.address));
    if (remote.length > 0) await this.#deliverRemote(state, remote);
    let report: WorkerReport | null = null;
    if (local.length > 0) report = await this.#deliverLocal(state, local);
    if (report === null) {
      state = await this.#spool.load(id);
      report = state.done ? { file: id, delete: true } : { file: id, next: state.nextAttempt };
    }
    if ("delete" in report) {
      await this.#spool.remove(id);
      logEvent("removed", { id });
    } else {
      this.#due.set(id, report.next);
    }
  }

  /** Fails every open recipient of a message older than the queue lifetime (RFC 3463 4.4.7). */
  async #expire(state: MessageState): Promise<MessageState> {
    const now = this.#now();
    if (now - state.envelope.received <= this.#cfg.queue.lifetime * 1000) return state;
    const records: JournalRecord[] = state.recipients
      .filter((r) => r.status === "pending" || r.status === "deferred")
      .map((r) => ({
        t: "failed",
        rcpt: r.index,
        at: now,
        dsn: "4.4.7",
        text: `Message expired after ${this.#cfg.queue.lifetime} s in the queue; last error: ${
          r.text ?? "none"
        }`,
      }));
    if (records.length === 0) return state;
    await this.#spool.append(state.envelope.id, records);
    for (const r of records) this.#logResult(state, r);
    return await this.#spool.load(state.envelope.id);
  }

  async #deliverRemote(state: MessageState, rcpts: RecipientState[]): Promise<void> {
    const now = this.#now();
    let records: JournalRecord[];
    if (this.#cfg.relay.relayhost === null) {
      records = rcpts.map((r) =>
        this.#deferred(
          r,
          now,
          "4.4.3",
          "No relayhost configured (MX delivery is not implemented yet)",
        )
      );
    } else {
      const result = await this.#relay(state, rcpts);
      records = result.recipients.map((res, i) => {
        const r = rcpts[i];
        if (res.outcome === "delivered") {
          return {
            t: "delivered",
            rcpt: r.index,
            at: now,
            dsn: res.dsn,
            text: res.text,
            relay: result.relay,
          };
        }
        if (res.outcome === "failed") {
          return {
            t: "failed",
            rcpt: r.index,
            at: now,
            dsn: res.dsn,
            text: res.text,
            relay: result.relay,
          };
        }
        return { ...this.#deferred(r, now, res.dsn, res.text), relay: result.relay };
      });
    }
    await this.#spool.append(state.envelope.id, records);
    for (const rec of records) this.#logResult(state, rec);
  }

  #deferred(r: RecipientState, now: number, dsn: string, text: string): JournalRecord {
    const until = now + retryDelayMs(r.attempts + 1, this.#cfg.queue);
    return { t: "deferred", rcpt: r.index, at: now, until, dsn, text };
  }

  #relayDefault(state: MessageState, rcpts: RecipientState[]): Promise<SendResult> {
    const relay = this.#cfg.relay;
    return relayMessage({
      relayhost: relay.relayhost!,
      helo: this.#cfg.hostname,
      connectTimeout: relay.connectTimeout,
      replyTimeout: relay.replyTimeout,
    }, {
      from: state.envelope.from,
      recipients: rcpts.map((r) => r.address),
      size: state.envelope.size,
      content: async () => (await this.#spool.content(state.envelope.id)).stream,
    });
  }

  /** Runs the local recipients in a worker child; a failed child defers them. */
  async #deliverLocal(state: MessageState, rcpts: RecipientState[]): Promise<WorkerReport | null> {
    const job: DeliveryJob = {
      v: 1,
      file: state.envelope.id,
      spoolDir: this.#cfg.spoolDir,
      maildirRoot: this.#cfg.local.maildirRoot,
      hostname: this.#cfg.hostname,
      recipients: rcpts.map((r) => r.index),
      retryMin: this.#cfg.queue.retryMin,
      retryMax: this.#cfg.queue.retryMax,
      log: this.#cfg.log,
    };
    const started = this.#now();
    try {
      return await this.#runJob(job);
    } catch (err) {
      // The child may have recorded some results before failing: defer only the
      // recipients with nothing recorded since the job started (never lost).
      const fresh = await this.#spool.load(state.envelope.id);
      const now = this.#now();
      const records = fresh.recipients
        .filter((r) => job.recipients.includes(r.index))
        .filter((r) => r.status === "pending" || r.status === "deferred")
        .filter((r) => lastRecordAt(r) < started)
        .map((r) => this.#deferred(r, now, "4.3.0", `Local delivery failed: ${err}`));
      if (records.length > 0) await this.#spool.append(state.envelope.id, records);
      for (const rec of records) this.#logResult(state, rec);
      return null;
    }
  }

  #logResult(state: MessageState, rec: JournalRecord): void {
    if (rec.t === "envelope") return;
    const rcpt = state.recipients[rec.rcpt];
    logEvent(rec.t, {
      id: state.envelope.id,
      to: `<${rcpt?.address ?? "?"}>`,
      relay: "relay" in rec ? rec.relay ?? "none" : "none",
      delay: delaySeconds(state.envelope.received, rec.at),
      dsn: rec.dsn,
      status: rec.t === "delivered" ? "sent" : rec.t === "deferred" ? "deferred" : "bounced",
      text: rec.text,
    });
  }
}

/** When a recipient's newest journal record was written (0 when it has none). */
function lastRecordAt(r: RecipientState): number {
  const last = r.history.at(-1);
  return last && last.t !== "envelope" ? last.at : 0;
}
