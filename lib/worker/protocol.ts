/**
 * The pipe protocol between the queue manager and a worker child (the seed
 * notes' vocabulary): the manager writes one job as a JSON line on the
 * child's stdin; the child answers one JSON line on stdout naming the
 * message file and either the next time to process it or that it should be
 * deleted. Everything read from a child is validated: a child that prints
 * garbage is treated like one that crashed.
 */
import type { LogConfig } from "../config/types.ts";
import { isQueueId } from "../spool/queue_id.ts";

/** A local-delivery job for one message. */
export interface DeliveryJob {
  v: 1;
  /** The message's queue id (its file name in the spool's queue/). */
  file: string;
  spoolDir: string;
  maildirRoot: string;
  hostname: string;
  /** Indexes of the recipients to deliver locally now. */
  recipients: number[];
  retryMin: number;
  retryMax: number;
  /** The manager's log settings, so the child's lines match its own. */
  log: LogConfig;
}

/** What a child reports about one message. */
export type WorkerReport =
  | { file: string; delete: true }
  | { file: string; next: number };

/** Parses and validates one report line; throws a clear error on anything else. */
export function parseReport(line: string, expectedFile: string): WorkerReport {
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
  if (r.delete === true) return { file: expectedFile, delete: true };
  if (typeof r.next === "number" && Number.isFinite(r.next) && r.next >= 0) {
    return { file: expectedFile, next: r.next };
  }
  throw new Error("Worker report has neither delete nor a valid next time");
}

/** Parses a job line (child side); throws on anything malformed. */
export function parseJob(line: string): DeliveryJob {
  const j = JSON.parse(line) as DeliveryJob;
  if (j.v !== 1 || typeof j.file !== "string" || !isQueueId(j.file)) {
    throw new Error("Job has no valid queue id");
  }
  if (!Array.isArray(j.recipients) || !j.recipients.every((n) => Number.isInteger(n) && n >= 0)) {
    throw new Error("Job has no valid recipient list");
  }
  if (typeof j.log !== "object" || j.log === null) throw new Error("Job has no log settings");
  for (const k of ["spoolDir", "maildirRoot", "hostname"] as const) {
    if (typeof j[k] !== "string" || j[k] === "") throw new Error(`Job has no ${k}`);
  }
  return j;
}
