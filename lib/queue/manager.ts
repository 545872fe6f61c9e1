/**
 * The queue manager: one in-memory schedule keyed by next-attempt time,
 * rebuilt from the spool at start (in the background, so listeners answer
 * at once and delivery starts as messages are found) and on a periodic
 * scan. Per queued message it keeps only the id and its next attempt time
 * (a map entry and a heap entry, ~150 bytes); the journal stays on disk. For each due
 * message it relays non-local recipients in the event loop and hands local
 * ones to a worker child; each result is appended to the message's journal
 * before anything else, and a message is removed once every recipient is
 * final (delivered or failed). Deferred recipients come back after a backoff
 * computed from their attempt count.
 */
import type { Config } from "../config/types.ts";
import type { SendResult } from "../smtp/client.ts";
import { logError, logEvent, logWarn } from "../log/log.ts";
import { type AliasTable, compiledPath, loadAliases } from "../route/aliases.ts";
import type { MessageState, RecipientState } from "../spool/records.ts";
import { type Spool, SpoolCorruptError } from "../spool/spool.ts";
import type { DeliveryJob, WorkerReport } from "../worker/protocol.ts";
import type { RunOptions } from "../worker/run_job.ts";
import { WorkerPool } from "../worker/pool.ts";
import { ConnectionCache } from "../deliver/conn_cache.ts";
import type { NetContext } from "../deliver/smtp.ts";
import { ProgramPool } from "../deliver/program.ts";
import { TlsPolicy } from "../tlspolicy/policy.ts";
import { reportSender } from "../tlspolicy/rpt_send.ts";
import type { Spawner } from "../sys/spawn.ts";
import { dispatch, type DispatchDeps } from "./dispatch.ts";
import { DestinationLimiter, type LimiterClock } from "./limits.ts";

/** Seams for tests: clock, worker runner, relay client, network settings. */
export interface ManagerOptions {
  config: Config;
  spool: Spool;
  now?: () => number;
  runJob?: (job: DeliveryJob, opts: Omit<RunOptions, "timeoutMs">) => Promise<WorkerReport>;
  /** Replaces all network delivery (tests). */
  relay?: (state: MessageState, rcpts: RecipientState[]) => Promise<SendResult>;
  /** Overrides of the network context (tests: MX port, CAs). */
  net?: Partial<NetContext>;
  /** Who starts workers and programs (default: directly, lib/sys/spawn.ts). */
  spawner?: Spawner;
  /** The per-destination rate limit's clock and sleep (tests; default the real ones). */
  limiterClock?: Partial<LimiterClock>;
}

/** The queue manager of one `skiff serve` process. */
export class QueueManager {
  #cfg: Config;
  #spool: Spool;
  #now: () => number;
  #deps: DispatchDeps;
  #cache: ConnectionCache;
  #programs: ProgramPool;
  #workers: WorkerPool;
  #aliases: AliasTable = new Map();
  #aliasesLoaded: Promise<void>;
  #aliasesSig: string | null = null;
  #aliasesChecked = -Infinity;
  /** id → next attempt (epoch ms): the truth; #heap orders it. */
  #due = new Map<string, number>();
  #heap = new DueHeap();
  #active = new Map<string, Promise<void>>();
  /** Messages a flush made due: their deferred recipients are tried regardless of backoff. */
  #forced = new Set<string>();
  /** Messages an operator command is moving or deleting: the scan must not pick them up. */
  #withdrawn = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #scanTimer: ReturnType<typeof setInterval> | undefined;
  #stopping = false;

  constructor(opts: ManagerOptions) {
    this.#cfg = opts.config;
    this.#spool = opts.spool;
    this.#now = opts.now ?? Date.now;
    const cfg = this.#cfg;
    const d = cfg.delivery;
    this.#cache = new ConnectionCache({ maxSize: d.cacheSize, idleMs: d.cacheIdle * 1000 });
    const replyTimeoutMs = cfg.relay.replyTimeout * 1000;
    this.#programs = new ProgramPool({
      helo: cfg.hostname,
      replyTimeoutMs,
      idleMs: d.cacheIdle * 1000,
      spawner: opts.spawner,
    });
    this.#workers = new WorkerPool({
      spawner: opts.spawner,
      timeoutMs: () => cfg.queue.workerTimeout * 1000,
      // `queue.workers` processes per uid/gid (docs/delivery.md), twice that in all.
      perKey: () => cfg.queue.workers,
      total: () => 2 * cfg.queue.workers,
    });
    const resolver = { nameserver: d.nameserver, timeoutMs: d.dnsTimeout * 1000 };
    const tlsPolicy: TlsPolicy = new TlsPolicy({
      config: d.tlsPolicy,
      resolver,
      spoolDir: cfg.spoolDir,
      hostname: cfg.hostname,
      port: opts.net?.mtaStsPort,
      now: this.#now,
      send: (...a): Promise<void> =>
        reportSender({
          spool: this.#spool,
          hostname: cfg.hostname,
          txt: (n): Promise<string[]> => tlsPolicy.txt(n),
          enqueue: (id) => this.enqueue(id),
        })(...a),
    });
    // Reports of days that ended while skiff was down are written now.
    tlsPolicy.rpt?.rollover().catch((err) =>
      logWarn("tls-rpt rollover failed", { reason: String(err) })
    );
    this.#deps = {
      cfg,
      spool: this.#spool,
      now: this.#now,
      net: {
        helo: cfg.hostname,
        connectTimeoutMs: cfg.relay.connectTimeout * 1000,
        replyTimeoutMs,
        cache: this.#cache,
        resolver,
        mxPort: 25,
        caFile: d.tlsCaFile,
        tlsPolicy,
        ...opts.net,
      },
      limiter: new DestinationLimiter(opts.limiterClock),
      programs: this.#programs,
      aliases: () => this.#aliases,
      runJob: opts.runJob ?? ((job, o) => this.#workers.run(job, o)),
      switchesUsers: () => opts.spawner?.kind === "privhelper" || Deno.uid() === 0,
      relay: opts.relay,
      enqueue: (id) => this.enqueue(id),
    };
    this.#aliasesLoaded = this.#refreshAliases();
  }

  /**
   * The aliases table the router uses now (RCPT checks consult the same one);
   * a change of the file is noticed within a second even while no mail flows.
   */
  get aliasTable(): AliasTable {
    this.#refreshAliases().catch(() => {});
    return this.#aliases;
  }

  /** The outgoing connection cache (its counters are in `stats`). */
  get connectionCache(): ConnectionCache {
    return this.#cache;
  }

  /** The long-running LMTP programs (`type = "program"` routes). */
  get programPool(): ProgramPool {
    return this.#programs;
  }

  /** The long-lived local-delivery workers. */
  get workerPool(): WorkerPool {
    return this.#workers;
  }

  /**
   * Re-reads the aliases when the file, its compiled form or the configured
   * path changed (`skiff newaliases` or a reload while running), checking at
   * most once a second.
   */
  async #refreshAliases(): Promise<void> {
    const now = Date.now();
    if (now - this.#aliasesChecked < 1000) return;
    this.#aliasesChecked = now;
    const src = this.#cfg.delivery.aliases;
    const mtime = async (p: string) => (await Deno.stat(p).catch(() => null))?.mtime?.getTime();
    const sig = src === ""
      ? ""
      : JSON.stringify([src, await mtime(src), await mtime(compiledPath(src))]);
    if (sig === this.#aliasesSig) return;
    this.#aliasesSig = sig;
    await this.loadAliases();
  }

  /** (Re)reads the aliases (compiled by `skiff newaliases`). */
  async loadAliases(): Promise<void> {
    try {
      const { table, stale } = await loadAliases(this.#cfg.delivery.aliases);
      if (stale) {
        logWarn("aliases not compiled", {
          file: this.#cfg.delivery.aliases,
          hint: "run skiff newaliases",
        });
      }
      this.#aliases = table;
    } catch (err) {
      logError("aliases unreadable", { file: this.#cfg.delivery.aliases, error: String(err) });
    }
  }

  /** Resolves once the aliases are loaded: RCPT checks must not run before (backscatter). */
  aliasesLoaded(): Promise<void> {
    return this.#aliasesLoaded;
  }

  /**
   * Starts the periodic scan and the first one, in the background: the
   * caller can open its listeners at once. `scanned` resolves with the
   * number of messages queued once the first scan has read the spool.
   */
  start(): { scanned: Promise<number> } {
    const t0 = performance.now();
    const scanned = this.#scan().then(({ listed }) => {
      logEvent("queue scanned", { messages: listed, ms: Math.round(performance.now() - t0) });
      return listed;
    });
    this.#scanTimer = setInterval(() => {
      this.scan().catch((err) => logError("scan failed", { error: String(err) }));
    }, this.#cfg.queue.scanInterval * 1000);
    return { scanned };
  }

  /**
   * Adds every spooled message not yet scheduled; returns how many are
   * queued. Journals are read a few at a time and delivery is started after
   * each batch, so a large backlog starts moving before the scan ends.
   */
  async scan(): Promise<number> {
    return (await this.#scan()).queued;
  }

  async #scan(): Promise<{ listed: number; queued: number }> {
    const listed = await this.#spool.list();
    const ids = listed.filter((id) =>
      !this.#due.has(id) && !this.#active.has(id) && !this.#withdrawn.has(id)
    );
    for (let i = 0; i < ids.length && !this.#stopping; i += SCAN_BATCH) {
      await Promise.all(
        ids.slice(i, i + SCAN_BATCH).map(async (id) => {
          try {
            const state = await this.#spool.load(id);
            // Delivered or withdrawn meanwhile (enqueue() may have run): keep that.
            if (this.#due.has(id) || this.#active.has(id) || this.#withdrawn.has(id)) return;
            this.#setDue(id, state.nextAttempt);
          } catch (err) {
            if (err instanceof Deno.errors.NotFound) return; // finished meanwhile
            if (err instanceof SpoolCorruptError) await this.#quarantine(id, err);
            else logError("unreadable queue file", { id, error: String(err) });
          }
        }),
      );
      this.#pump();
    }
    this.#pump();
    return { listed: listed.length, queued: this.#due.size + this.#active.size };
  }

  /** Schedules a message (a new one is due at once). */
  enqueue(id: string, at = 0): void {
    if (this.#stopping) return;
    this.#setDue(id, at);
    this.#pump();
  }

  #setDue(id: string, at: number): void {
    this.#due.set(id, at);
    this.#heap.push(at, id);
  }

  /** Makes every queued message (or those in `ids`) due now (`skiff flush`, `queue retry`). */
  flush(ids?: Iterable<string>): void {
    const only = ids === undefined ? null : new Set(ids);
    for (const id of this.#due.keys()) {
      if (only !== null && !only.has(id)) continue;
      this.#setDue(id, 0);
      this.#forced.add(id);
    }
    this.#pump();
  }

  /**
   * Runs `fn` (an operator's hold or delete) while the scheduler keeps its
   * hands off the message: it is unscheduled, a delivery in progress is
   * waited for, and scans skip it until `fn` is done.
   */
  async withdraw<T>(id: string, fn: () => Promise<T>): Promise<T> {
    this.#withdrawn.add(id);
    try {
      this.#due.delete(id);
      this.#forced.delete(id);
      while (this.#active.has(id)) await this.#active.get(id);
      this.#due.delete(id);
      return await fn();
    } finally {
      this.#withdrawn.delete(id);
    }
  }

  /** Ids being delivered right now (`skiff queue list`, `status`). */
  activeIds(): Set<string> {
    return new Set(this.#active.keys());
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
    await this.#cache.close();
    await this.#programs.close();
    await this.#workers.close();
  }

  /** Waits until nothing is in progress (tests, one-shot queue runs). */
  async idle(): Promise<void> {
    while (this.#active.size > 0) await Promise.allSettled([...this.#active.values()]);
  }

  get #maxActive(): number {
    return this.#cfg.queue.workers + this.#cfg.queue.relayConcurrency;
  }

  /**
   * Starts every due message up to the concurrency limit, then sleeps until
   * the next one. The heap makes this O(started · log n) rather than a walk
   * over the whole queue on every delivery.
   */
  #pump(): void {
    if (this.#stopping) return;
    clearTimeout(this.#timer);
    const now = this.#now();
    const heap = this.#heap;
    if (heap.size > 2 * this.#due.size + 1024) heap.rebuild(this.#due);
    const held: [number, string][] = [];
    while (heap.size > 0) {
      const at = heap.topAt();
      const id = heap.topId();
      // A stale entry: the message was rescheduled, started or withdrawn since.
      if (this.#due.get(id) !== at) {
        heap.pop();
        continue;
      }
      if (at > now || this.#active.size >= this.#maxActive) break;
      heap.pop();
      // Due again while still being delivered: it waits (due) until that ends.
      if (this.#active.has(id)) {
        held.push([at, id]);
        continue;
      }
      this.#due.delete(id);
      const run = this.#process(id)
        .catch(async (err) => {
          if (err instanceof SpoolCorruptError && err.id === id) {
            return await this.#quarantine(id, err);
          }
          logError("processing failed", { id, error: String(err) });
          this.#setDue(id, this.#now() + this.#cfg.queue.retryMin * 1000);
        })
        .finally(() => {
          this.#active.delete(id);
          this.#pump();
        });
      this.#active.set(id, run);
    }
    // When saturated, the next finished delivery pumps again; otherwise sleep
    // until the earliest entry (a stale one only causes an early wake-up).
    if (heap.size > 0 && this.#active.size < this.#maxActive) {
      // Timers are capped so that a clock jump cannot stall the queue for long.
      const wait = Math.min(Math.max(heap.topAt() - now, 10), 60_000);
      this.#timer = setTimeout(() => this.#pump(), wait);
    }
    // Picked up by the pump that runs when their delivery in progress ends.
    for (const [at, id] of held) heap.push(at, id);
  }

  /**
   * A queue file that can never be delivered (a bad envelope, a corrupt
   * journal) leaves queue/ for quarantine/: never delivered, never deleted,
   * logged once. If even the move fails it stays unscheduled until the next scan.
   */
  async #quarantine(id: string, err: SpoolCorruptError): Promise<void> {
    try {
      const path = await this.#spool.quarantine(id);
      logError("queue file quarantined", { id, path, error: err.message });
    } catch (e) {
      logError("unreadable queue file", { id, error: err.message, quarantine: String(e) });
    }
  }

  async #process(id: string): Promise<void> {
    const forced = this.#forced.delete(id);
    await this.#aliasesLoaded;
    await this.#refreshAliases();
    let state;
    try {
      state = await dispatch(this.#deps, id, forced);
    } catch (err) {
      // Gone (removed after its delivery, or by an operator): nothing left to retry.
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    if (state.done) {
      await this.#spool.remove(id);
      logEvent("removed", { id });
    } else {
      this.#setDue(id, state.nextAttempt);
    }
  }
}

/** Messages whose journals are read at once during a scan. */
const SCAN_BATCH = 64;

/**
 * A binary min-heap of (next attempt, id), in two parallel arrays so an
 * entry costs two slots rather than an object. Entries go stale when a
 * message is rescheduled; the manager skips those against its map.
 */
class DueHeap {
  #at: number[] = [];
  #id: string[] = [];

  get size(): number {
    return this.#at.length;
  }

  topAt(): number {
    return this.#at[0];
  }

  topId(): string {
    return this.#id[0];
  }

  push(at: number, id: string): void {
    const a = this.#at;
    const ids = this.#id;
    let i = a.length;
    a.push(at);
    ids.push(id);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= at) break;
      a[i] = a[p];
      ids[i] = ids[p];
      i = p;
    }
    a[i] = at;
    ids[i] = id;
  }

  pop(): void {
    const a = this.#at;
    const ids = this.#id;
    const lastAt = a.pop()!;
    const lastId = ids.pop()!;
    const n = a.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && a[c + 1] < a[c]) c++;
      if (a[c] >= lastAt) break;
      a[i] = a[c];
      ids[i] = ids[c];
      i = c;
    }
    a[i] = lastAt;
    ids[i] = lastId;
  }

  /** Drops stale entries: rebuilt from the map of current next attempts. */
  rebuild(due: Map<string, number>): void {
    this.#at = [];
    this.#id = [];
    for (const [id, at] of due) this.push(at, id);
  }
}
