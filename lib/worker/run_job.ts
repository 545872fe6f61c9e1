/**
 * The manager's side of per-message isolation, for one job: run it in a
 * worker process of its own (started for it, closed after it) through the
 * same code as the pool (pool.ts), so the failure handling is the pool's: a
 * child that crashes, hangs past its deadline (it is killed) or prints
 * garbage makes this reject with a WorkerError carrying the cause and the
 * start of the child's stderr; the manager logs it on the message's line and
 * defers the recipients, so the message is retried, never lost. The queue
 * manager itself uses a long-lived WorkerPool; this is for one-off callers.
 */
import type { DeliveryJob, WorkerReport } from "./protocol.ts";
import type { RunAs } from "../config/route_types.ts";
import type { Spawner } from "../sys/spawn.ts";
import { WorkerError, WorkerPool } from "./pool.ts";

export { WorkerError };

/** How to run one job. */
export interface RunOptions {
  timeoutMs: number;
  /** Another program instead of skiff (tests). */
  command?: { command: string; args: string[] };
  /** The message content, written after the job line. */
  content?: () => Promise<ReadableStream<Uint8Array>>;
  /** Run as this user (root only; otherwise the child runs as skiff's own uid). */
  user?: RunAs | null;
  /** Who starts the child (default: directly from this process). */
  spawner?: Spawner;
}

/** Runs one job in a child of its own; resolves with its validated report. */
export async function runWorkerJob(job: DeliveryJob, opts: RunOptions): Promise<WorkerReport> {
  const pool = new WorkerPool({
    spawner: opts.spawner,
    command: opts.command,
    timeoutMs: () => opts.timeoutMs,
    perKey: () => 1,
    total: () => 1,
    maxUse: 1,
  });
  try {
    return await pool.run(job, { content: opts.content, user: opts.user });
  } finally {
    await pool.close();
  }
}
