/**
 * The one place the rest of skiff reports what it does for monitoring:
 * named, one-line hooks (a message received, a result recorded, an fsync, a
 * worker that failed...) called from the listener, the queue, the spool, the
 * connection cache and the worker runner. Nothing is kept here: the hooks
 * forward to a sink that `skiff serve` installs when [http] is on
 * (lib/http/collector.ts, built on prom-client). Without one they cost a
 * null check, and processes that never serve metrics (the sendmail shim,
 * worker children) do not load the Prometheus library (~150 ms at start).
 */

/** RFC 3463 §3.x subject of an enhanced status code: the "reason class" label. */
export type ReasonClass =
  | "other"
  | "address"
  | "mailbox"
  | "system"
  | "network"
  | "protocol"
  | "content"
  | "policy";

/** One recipient's delivery result, as the journal recorded it. */
export interface ResultEvent {
  outcome: "delivered" | "deferred" | "bounced";
  /** Where it went: "local", "remote" (SMTP/LMTP), "discard", "error" or "none". */
  transport: string;
  reason: ReasonClass;
  /** The recipient's domain (lower case), for "top destinations". */
  domain: string;
  /** Seconds from arrival to this result. */
  latencySeconds: number;
  /** Epoch ms of the result. */
  at: number;
}

/** What a metrics backend receives. */
export interface MetricsSink {
  received(listener: string): void;
  rejected(listener: string, reason: ReasonClass, permanent: boolean): void;
  connectionsIn(listener: string, delta: number): void;
  connectionsOut(delta: number): void;
  cacheLookup(hit: boolean): void;
  result(ev: ResultEvent): void;
  acceptLatency(seconds: number): void;
  fsync(kind: "data" | "dir"): void;
  workerFailure(reason: "timeout" | "exit" | "report"): void;
  /** A local-delivery worker process was started (lib/worker/pool.ts). */
  workerStarted(): void;
  /** A worker process left the pool (closed, used up, idle too long, or failed). */
  workerDropped(): void;
}

let sink: MetricsSink | null = null;

/** Installs the backend (once, by `skiff serve` with [http] on); null removes it (tests). */
export function installMetrics(s: MetricsSink | null): void {
  sink = s;
}

const SUBJECTS: ReasonClass[] = [
  "other",
  "address",
  "mailbox",
  "system",
  "network",
  "protocol",
  "content",
  "policy",
];

/** The reason class of an enhanced status code ("4.4.1" → "network"); "other" when absent. */
export function reasonOf(enhanced: string | undefined): ReasonClass {
  const m = /^[245]\.([0-7])\./.exec(enhanced ?? "");
  return m ? SUBJECTS[Number(m[1])] : "other";
}

function transportOf(relay: string | undefined): string {
  if (relay === undefined || relay === "none") return "none";
  if (relay === "local" || relay === "discard" || relay === "error") return relay;
  return "remote";
}

/** Makes a release function that takes effect once, however often it is called. */
function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}

/**
 * What `metrics.result` reads of a message's state and of a journal record
 * (lib/spool/records.ts MessageState and JournalRecord fit these), written
 * structurally so this module sits below the spool that calls it.
 */
interface ResultState {
  recipients: readonly { address: string }[];
  envelope: { received: number };
}
interface ResultRecord {
  t: string;
  rcpt?: number;
  relay?: string;
  dsn?: string;
  at?: number;
}

/** The hooks. Each is one line at its call site and never throws. */
export const metrics = {
  /** A message became durable in the queue through `listener` (its configured address). */
  received(listener: string): void {
    sink?.received(listener);
  },
  /** The server refused something (a 4xx/5xx reply other than 421 closing). */
  rejected(listener: string, code: number, enhanced: string | undefined): void {
    sink?.rejected(listener, reasonOf(enhanced), code >= 500);
  },
  /** An inbound connection opened; call the returned function when it closes. */
  connectionIn(listener: string): () => void {
    sink?.connectionsIn(listener, 1);
    const s = sink;
    return once(() => s?.connectionsIn(listener, -1));
  },
  /** An outbound SMTP/LMTP session opened; call the returned function when it closes. */
  connectionOut(): () => void {
    sink?.connectionsOut(1);
    const s = sink;
    return once(() => s?.connectionsOut(-1));
  },
  /** A connection-cache lookup found a reusable session (hit) or none (miss). */
  cacheLookup(hit: boolean): void {
    sink?.cacheLookup(hit);
  },
  /** A journal record was appended for a message; result records are counted. */
  result(state: ResultState, rec: ResultRecord): void {
    if (!sink || (rec.t !== "delivered" && rec.t !== "deferred" && rec.t !== "failed")) return;
    const address = state.recipients[rec.rcpt ?? -1]?.address ?? "";
    const at0 = rec.at ?? state.envelope.received;
    const at = address.lastIndexOf("@");
    sink.result({
      outcome: rec.t === "failed" ? "bounced" : rec.t,
      transport: transportOf(rec.relay),
      reason: reasonOf(rec.dsn),
      domain: at < 0 ? "(local)" : address.slice(at + 1).toLowerCase(),
      latencySeconds: Math.max(0, (at0 - state.envelope.received) / 1000),
      at: at0,
    });
  },
  /** Seconds from the end of a message's data to the server's final reply. */
  acceptLatency(seconds: number): void {
    sink?.acceptLatency(seconds);
  },
  /** One fdatasync of a spool file ("data") or fsync of a spool directory ("dir"). */
  fsync(kind: "data" | "dir"): void {
    sink?.fsync(kind);
  },
  /** A worker child timed out (and was killed), exited badly or printed no valid report. */
  workerFailure(reason: "timeout" | "exit" | "report"): void {
    sink?.workerFailure(reason);
  },

  /** A pooled worker process started. */
  workerStarted(): void {
    sink?.workerStarted();
  },

  /** A pooled worker process left the pool. */
  workerDropped(): void {
    sink?.workerDropped();
  },
};
