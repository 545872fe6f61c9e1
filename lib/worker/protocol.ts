/**
 * The pipe protocol between the queue manager and a worker child (the seed
 * notes' vocabulary): the manager writes one job as a JSON line on the
 * child's stdin, followed by the message content (exactly `size` bytes), so
 * a child running as the recipient's uid never needs to read the spool. The
 * child delivers and answers one JSON line naming the message file, the
 * job's sequence number and each recipient's result; the manager appends
 * those to the journal. A child serves such jobs one after another (the
 * pool, pool.ts) until its stdin ends, MAX_JOBS were served, or none came
 * for IDLE_EXIT_MS. Everything read from a child is validated: a child that
 * prints garbage is treated like one that crashed.
 */
import type { ForwardTarget } from "../route/aliases.ts";
import type { LogConfig } from "../config/types.ts";
import type { Destination } from "../config/route_types.ts";
import { isQueueId } from "../spool/queue_id.ts";

/**
 * Jobs one worker process serves before it exits. Postfix's max_use is 100,
 * but a Postfix process starts in a millisecond; a worker here costs
 * 0.3-0.5 s of CPU to start (Deno, module loading), which over 100 jobs is
 * ~4 ms a message, as much as the rest of a Maildir delivery. 1000 keeps
 * the bound on anything a long life could accumulate while making the start
 * ~0.4 ms a message. Nothing of one job's message is kept for the next
 * (docs/delivery.md, "What is shared between jobs").
 */
export const MAX_JOBS = 1000;

/** A worker that waits this long for its next job exits (the manager closes idle ones sooner). */
export const IDLE_EXIT_MS = 120_000;

/** Most log lines a report carries back, and their length. */
export const MAX_LOGGED = 20;

/** One recipient of a local-delivery job. */
export interface JobTarget {
  /** Index into envelope.recipients. */
  rcpt: number;
  address: string;
  /** Mailbox name (lower-case local part). */
  user: string;
  destination: Destination;
  /**
   * Open the user's ~/.forward first (as the worker's uid, safely: see
   * lib/worker/forward.ts). `owner` may own it besides root; `deliver` lets
   * the worker deliver to `destination` when there is no usable .forward,
   * else it reports "noforward" and the manager routes the mailbox itself.
   */
  forward?: { path: string; owner: number; deliver: boolean };
}

/** A target read from a .forward by a worker (lib/route/aliases.ts, beside alias targets). */
export type { ForwardTarget };

/** A local-delivery job for one message and one uid/gid. */
export interface DeliveryJob {
  v: 2;
  /** The message's queue id (its file name in the spool's queue/). */
  file: string;
  hostname: string;
  /** Envelope sender ("" = null sender). */
  sender: string;
  /** Content bytes that follow the job line. */
  size: number;
  targets: JobTarget[];
  /** The manager's log settings, so the child's lines match its own. */
  log: LogConfig;
  /**
   * The job's number, unique in the manager; the report must echo it, so a
   * stray line a worker printed for an earlier job can never pass for this one's.
   */
  seq?: number;
}

/** One recipient's result from a child. */
export interface JobResult {
  rcpt: number;
  /** "expand": the .forward lists `targets`; "noforward": none usable, route the mailbox. */
  outcome: "delivered" | "deferred" | "failed" | "expand" | "noforward";
  dsn: string;
  text: string;
  targets?: ForwardTarget[];
}

/** What a child reports about one message. */
export interface WorkerReport {
  file: string;
  /** The job's `seq`, echoed. */
  seq?: number;
  results: JobResult[];
  /** The warnings and errors the worker logged during this job (formatted lines). */
  logged?: string[];
}

const OUTCOMES = ["delivered", "deferred", "failed", "expand", "noforward"];

/** Most targets a .forward may list (aliases' MAX_TARGETS). */
export const MAX_FORWARD_TARGETS = 1000;

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
const okText = (v: unknown, max = 1000): v is string =>
  typeof v === "string" && v !== "" && v.length <= max && !CONTROL.test(v);

/** Validates a worker's .forward targets as untrusted input; throws on anything odd. */
export function checkForwardTargets(v: unknown): ForwardTarget[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_FORWARD_TARGETS) {
    throw new Error("Worker report has a malformed .forward target list");
  }
  return v.map((x) => {
    const o = (typeof x === "object" && x !== null ? x : {}) as Record<string, unknown>;
    if (o.kind === "address" && okText(o.address) && !/[\s<>]/.test(o.address)) {
      return { kind: "address", address: o.address };
    }
    if (o.kind === "file" && okText(o.path) && o.path.startsWith("/")) {
      return { kind: "file", path: o.path };
    }
    if (
      o.kind === "pipe" && Array.isArray(o.command) && o.command.length > 0 &&
      o.command.length <= 100 && o.command.every((a) =>
        typeof a === "string" && !CONTROL.test(a)
      ) &&
      okText(o.command[0]) && (o.command[0] as string).startsWith("/")
    ) {
      return { kind: "pipe", command: o.command as string[] };
    }
    throw new Error("Worker report has a malformed .forward target");
  });
}

/** Parses and validates one report line; throws a clear error on anything else. */
export function parseReport(line: string, expectedFile: string, seq?: number): WorkerReport {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new Error(
      `Worker printed something that is not JSON: ${JSON.stringify(line.slice(0, 80))}`,
    );
  }
  if (typeof v !== "object" || v === null) throw new Error("Worker report is not an object");
  const r = v as Record<string, unknown>;
  if (r.file !== expectedFile || !isQueueId(String(r.file))) {
    throw new Error(`Worker reported on ${JSON.stringify(r.file)}, expected ${expectedFile}`);
  }
  if (seq !== undefined && r.seq !== seq) {
    throw new Error(`Worker answered job ${JSON.stringify(r.seq)}, expected job ${seq}`);
  }
  if (!Array.isArray(r.results)) throw new Error("Worker report has no results");
  const logged = r.logged ?? [];
  if (
    !Array.isArray(logged) || logged.length > MAX_LOGGED ||
    !logged.every((l) => typeof l === "string")
  ) throw new Error("Worker report has a malformed log line list");
  const results = r.results.map((x) => {
    const o = x as Record<string, unknown>;
    if (
      !Number.isSafeInteger(o.rcpt) || !OUTCOMES.includes(o.outcome as string) ||
      typeof o.dsn !== "string" || !/^[245]\.\d{1,3}\.\d{1,3}$/.test(o.dsn) ||
      typeof o.text !== "string"
    ) throw new Error("Worker report has a malformed result");
    return {
      rcpt: o.rcpt,
      outcome: o.outcome,
      dsn: o.dsn,
      text: o.text.slice(0, 1000),
      ...(o.outcome === "expand" ? { targets: checkForwardTargets(o.targets) } : {}),
    } as JobResult;
  });
  return {
    file: expectedFile,
    ...(seq !== undefined ? { seq } : {}),
    results,
    logged: (logged as string[]).map((l) => l.slice(0, 1000)),
  };
}

/** Parses a job line (child side); throws on anything malformed. */
export function parseJob(line: string): DeliveryJob {
  const j = JSON.parse(line) as DeliveryJob;
  if (j.v !== 2 || typeof j.file !== "string" || !isQueueId(j.file)) {
    throw new Error("Job has no valid queue id");
  }
  if (
    !Array.isArray(j.targets) || !j.targets.every((t) => Number.isInteger(t.rcpt) && t.destination)
  ) {
    throw new Error("Job has no valid target list");
  }
  if (typeof j.log !== "object" || j.log === null) throw new Error("Job has no log settings");
  if (!Number.isSafeInteger(j.size) || j.size < 0) throw new Error("Job has no valid size");
  if (typeof j.hostname !== "string" || j.hostname === "") throw new Error("Job has no hostname");
  if (j.seq !== undefined && !Number.isSafeInteger(j.seq)) throw new Error("Job has no valid seq");
  return j;
}
