/**
 * The metrics backend of `skiff serve`: receives the hooks of
 * lib/metrics/metrics.ts into prom-client counters, gauges and histograms
 * (prom-client writes the Prometheus text format, escaping and all), and
 * keeps the little history the status page draws: results per minute over
 * the last hours and deferrals per destination domain. Names follow the
 * Prometheus conventions: `skiff_` prefix, `_total` on counters, base units
 * (seconds). docs/monitoring.md lists every metric.
 */
import client from "prom-client";
import type { MetricsSink, ReasonClass, ResultEvent } from "../metrics/metrics.ts";
import { AGE_BUCKETS, type QueueSummary } from "./snapshot.ts";
import { VERSION } from "../version.ts";

/** Minutes of per-minute history kept for the status page. */
export const HISTORY_MINUTES = 6 * 60;
/** Domains remembered per hour for "top destinations by deferrals" (bounded memory). */
const MAX_DOMAINS = 1000;

/** Counts of one minute. */
export interface MinuteCounts {
  /** Epoch ms of the minute's start. */
  minute: number;
  received: number;
  delivered: number;
  deferred: number;
  bounced: number;
}

const DELIVERY_BUCKETS = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400];
const ACCEPT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Where queue figures come from at scrape time. */
export type QueueSource = () => Promise<QueueSummary>;

/** The registry and the history; install it with installMetrics(collector). */
export class Collector implements MetricsSink {
  readonly registry = new client.Registry();
  #now: () => number;
  #minutes: MinuteCounts[] = [];
  /** Deferrals per domain, one map per hour (epoch ms of the hour → domain → count). */
  #deferralsByHour = new Map<number, Map<string, number>>();
  #cache = { hits: 0, misses: 0 };
  #fsyncs = 0;
  #connectionsIn = 0;
  #received = 0;
  #receivedTotal = this.#counter(
    "skiff_messages_received_total",
    "Messages accepted into the queue (250 after DATA/BDAT), by listener.",
    ["listener"],
  );
  #rejected = this.#counter(
    "skiff_smtp_rejections_total",
    "SMTP/LMTP replies refusing a command, recipient or message (4xx/5xx), by listener, RFC 3463 reason class and class (temporary/permanent).",
    ["listener", "reason", "class"],
  );
  #delivered = this.#counter(
    "skiff_recipients_delivered_total",
    "Recipients delivered, by transport (local, remote, discard).",
    ["transport"],
  );
  #deferred = this.#counter(
    "skiff_recipients_deferred_total",
    "Delivery attempts that failed temporarily (the recipient stays queued), by transport and reason class.",
    ["transport", "reason"],
  );
  #bounced = this.#counter(
    "skiff_recipients_bounced_total",
    "Recipients that failed permanently (a bounce is sent), by transport and reason class.",
    ["transport", "reason"],
  );
  #connIn = this.#gauge(
    "skiff_connections_inbound",
    "Open inbound SMTP/LMTP connections, by listener.",
    ["listener"],
  );
  #connOut = this.#gauge(
    "skiff_connections_outbound",
    "Open outbound SMTP/LMTP sessions (including idle cached ones and LMTP programs).",
    [],
  );
  #hits = this.#counter(
    "skiff_connection_cache_hits_total",
    "Outbound deliveries that reused a cached session.",
    [],
  );
  #misses = this.#counter(
    "skiff_connection_cache_misses_total",
    "Outbound deliveries that found no cached session to reuse.",
    [],
  );
  #deliveryLatency = new client.Histogram({
    name: "skiff_delivery_latency_seconds",
    help: "Seconds from a message's arrival to a recipient's delivery, by transport.",
    labelNames: ["transport"],
    buckets: DELIVERY_BUCKETS,
    registers: [this.registry],
  });
  #acceptLatency = new client.Histogram({
    name: "skiff_accept_latency_seconds",
    help: "Seconds from the end of a message's data to the 250 reply (spool write and fsyncs).",
    buckets: ACCEPT_BUCKETS,
    registers: [this.registry],
  });
  #fsync = this.#counter(
    "skiff_spool_fsyncs_total",
    "fsync/fdatasync calls on spool files (data) and directories (dir); divide by received messages for fsyncs per message.",
    ["kind"],
  );
  #workers = this.#counter(
    "skiff_worker_failures_total",
    "Worker children that timed out, exited badly or gave no valid report (their recipients are deferred).",
    ["reason"],
  );
  #workerStarts = this.#counter(
    "skiff_worker_starts_total",
    "Local-delivery worker processes started (each serves many jobs).",
    [],
  );
  #workerProcs = this.#gauge(
    "skiff_worker_processes",
    "Local-delivery worker processes in the pool, busy or idle.",
    [],
  );

  constructor(opts: { queue: QueueSource; now?: () => number }) {
    this.#now = opts.now ?? Date.now;
    const reg = [this.registry];
    new client.Gauge({
      name: "skiff_build_info",
      help: "Always 1; the labels say which skiff and Deno run.",
      labelNames: ["version", "deno"],
      registers: reg,
    }).set({ version: VERSION, deno: Deno.version.deno }, 1);
    new client.Gauge({
      name: "skiff_start_time_seconds",
      help: "When this manager started, in seconds since the epoch.",
      registers: reg,
    }).set(Math.floor(this.#now() / 1000));
    // The manager's own memory, read when scraped: what the operator watches for growth
    // (process_resident_memory_bytes is the name Prometheus' client libraries use).
    new client.Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory of the manager process in bytes.",
      registers: reg,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    new client.Gauge({
      name: "skiff_heap_bytes",
      help: "The manager's V8 heap in bytes: total (reserved), used, external (buffers).",
      labelNames: ["kind"],
      registers: reg,
      collect() {
        const m = Deno.memoryUsage();
        this.set({ kind: "total" }, m.heapTotal);
        this.set({ kind: "used" }, m.heapUsed);
        this.set({ kind: "external" }, m.external);
      },
    });
    // Queue figures are read from the spool when scraped (cached briefly by the source).
    let pending: Promise<QueueSummary> | null = null;
    const summary = () => pending ??= opts.queue().finally(() => pending = null);
    new client.Gauge({
      name: "skiff_queue_messages",
      help: "Messages in the queue, by state (incoming, active, deferred, hold).",
      labelNames: ["state"],
      registers: reg,
      async collect() {
        const s = await summary();
        for (const [state, n] of Object.entries(s.byState)) this.set({ state }, n);
      },
    });
    new client.Gauge({
      name: "skiff_queue_messages_by_age",
      help: "Messages in the queue (hold included), by time since arrival.",
      labelNames: ["age"],
      registers: reg,
      async collect() {
        const s = await summary();
        for (const [, age] of AGE_BUCKETS) this.set({ age }, s.byAge[age] ?? 0);
      },
    });
    new client.Gauge({
      name: "skiff_queue_oldest_message_age_seconds",
      help: "Seconds since the oldest queued message arrived (0 when the queue is empty).",
      registers: reg,
      async collect() {
        this.set((await summary()).oldestAgeSeconds);
      },
    });
  }

  #counter(name: string, help: string, labelNames: string[]): client.Counter<string> {
    return new client.Counter({ name, help, labelNames, registers: [this.registry] });
  }

  #gauge(name: string, help: string, labelNames: string[]): client.Gauge<string> {
    return new client.Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  /** The Prometheus text exposition of every metric. */
  async text(): Promise<string> {
    return await this.registry.metrics();
  }

  /** The Content-Type of text(). */
  get contentType(): string {
    return this.registry.contentType;
  }

  received(listener: string): void {
    this.#receivedTotal.inc({ listener });
    this.#received++;
    this.#bump("received");
  }

  rejected(listener: string, reason: ReasonClass, permanent: boolean): void {
    this.#rejected.inc({ listener, reason, class: permanent ? "permanent" : "temporary" });
  }

  connectionsIn(listener: string, delta: number): void {
    this.#connIn.inc({ listener }, delta);
    this.#connectionsIn += delta;
  }

  connectionsOut(delta: number): void {
    this.#connOut.inc(delta);
  }

  cacheLookup(hit: boolean): void {
    if (hit) {
      this.#hits.inc();
      this.#cache.hits++;
    } else {
      this.#misses.inc();
      this.#cache.misses++;
    }
  }

  result(ev: ResultEvent): void {
    const { transport, reason } = ev;
    if (ev.outcome === "delivered") {
      this.#delivered.inc({ transport });
      this.#deliveryLatency.observe({ transport }, ev.latencySeconds);
    } else if (ev.outcome === "deferred") {
      this.#deferred.inc({ transport, reason });
      this.#countDeferral(ev.domain);
    } else {
      this.#bounced.inc({ transport, reason });
    }
    this.#bump(ev.outcome);
  }

  acceptLatency(seconds: number): void {
    this.#acceptLatency.observe(seconds);
  }

  fsync(kind: "data" | "dir"): void {
    this.#fsync.inc({ kind });
    this.#fsyncs++;
  }

  workerFailure(reason: "timeout" | "exit" | "report"): void {
    this.#workers.inc({ reason });
  }

  workerStarted(): void {
    this.#workerStarts.inc();
    this.#workerProcs.inc();
  }

  workerDropped(): void {
    this.#workerProcs.dec();
  }

  /** Open inbound connections on all listeners. */
  get openInbound(): number {
    return this.#connectionsIn;
  }

  /** Connection-cache hits and misses since start. */
  get cacheStats(): { hits: number; misses: number } {
    return { ...this.#cache };
  }

  /** Spool fsyncs per received message since start (null before the first message). */
  get fsyncsPerMessage(): number | null {
    return this.#received === 0 ? null : this.#fsyncs / this.#received;
  }

  /** One entry per minute of the last `minutes` (at most HISTORY_MINUTES), oldest first. */
  history(minutes = HISTORY_MINUTES): MinuteCounts[] {
    const now = Math.floor(this.#now() / 60_000) * 60_000;
    const byMinute = new Map(this.#minutes.map((m) => [m.minute, m]));
    const out: MinuteCounts[] = [];
    for (let i = Math.min(minutes, HISTORY_MINUTES) - 1; i >= 0; i--) {
      const minute = now - i * 60_000;
      out.push(
        byMinute.get(minute) ?? { minute, received: 0, delivered: 0, deferred: 0, bounced: 0 },
      );
    }
    return out;
  }

  /** Domains with the most deferrals over the last HISTORY_MINUTES, most first. */
  topDeferred(limit: number): { domain: string; deferrals: number }[] {
    this.#prune();
    const sum = new Map<string, number>();
    for (const hour of this.#deferralsByHour.values()) {
      for (const [d, n] of hour) sum.set(d, (sum.get(d) ?? 0) + n);
    }
    return [...sum].map(([domain, deferrals]) => ({ domain, deferrals }))
      .sort((a, b) => b.deferrals - a.deferrals || a.domain.localeCompare(b.domain))
      .slice(0, limit);
  }

  #bump(what: "received" | "delivered" | "deferred" | "bounced"): void {
    const minute = Math.floor(this.#now() / 60_000) * 60_000;
    let last = this.#minutes[this.#minutes.length - 1];
    if (!last || last.minute !== minute) {
      last = { minute, received: 0, delivered: 0, deferred: 0, bounced: 0 };
      this.#minutes.push(last);
      this.#prune();
    }
    last[what]++;
  }

  #countDeferral(domain: string): void {
    const hour = Math.floor(this.#now() / 3_600_000) * 3_600_000;
    let map = this.#deferralsByHour.get(hour);
    if (!map) {
      this.#deferralsByHour.set(hour, map = new Map());
      this.#prune();
    }
    // Past MAX_DOMAINS new domains are lumped together: a flood of them must not grow memory.
    const key = map.has(domain) || map.size < MAX_DOMAINS ? domain : "(other domains)";
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  #prune(): void {
    const cutoff = this.#now() - HISTORY_MINUTES * 60_000;
    while (this.#minutes.length > 0 && this.#minutes[0].minute < cutoff) this.#minutes.shift();
    for (const hour of this.#deferralsByHour.keys()) {
      if (hour + 3_600_000 <= cutoff) this.#deferralsByHour.delete(hour);
    }
  }
}
