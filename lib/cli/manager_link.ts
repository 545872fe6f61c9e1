/**
 * How the operator's commands reach the queue: through the running
 * manager's control socket when there is one, else directly on the spool
 * while holding the spool lock (so no manager or queue run starts
 * meanwhile). Also the one-shot queue pass that `flush` and `queue retry`
 * run when no manager is up.
 */
import type { Config } from "../config/types.ts";
import { controlRequest } from "../control/client.ts";
import type { ControlRequest } from "../control/protocol.ts";
import { NO_SCHEDULER, type QueueHooks } from "../control/queue_ops.ts";
import { logEvent } from "../log/log.ts";
import { ensureMaildrop } from "../maildrop/drop.ts";
import { pickupMaildrop } from "../maildrop/pickup.ts";
import type { Spawner } from "../sys/spawn.ts";
import { dropForQueueRun } from "../privsep/queue_run.ts";
import { QueueManager } from "../queue/manager.ts";
import { Spool } from "../spool/spool.ts";
import { type SpoolLock, tryLockSpool } from "./spool_lock.ts";

/** The manager's answer, or what a local run returned, or "locked". */
export type Outcome<T> =
  | { via: "manager"; reply: Record<string, unknown> }
  | { via: "spool"; value: T }
  | { via: "locked" };

/**
 * Sends `req` to the running manager; without one, runs `local` with the
 * spool lock held. Rejects with ControlError when the manager refuses.
 */
export async function viaManager<T>(
  cfg: Config,
  req: ControlRequest,
  local: (hooks: QueueHooks) => Promise<T>,
): Promise<Outcome<T>> {
  const reply = await controlRequest(cfg.spoolDir, req);
  if (reply !== null) return { via: "manager", reply };
  const lock = await tryLockSpool(cfg.spoolDir);
  if (lock === null) return { via: "locked" };
  try {
    return { via: "spool", value: await local(NO_SCHEDULER) };
  } finally {
    lock.release();
  }
}

/** The message for a spool locked by a process that has no control socket. */
export const LOCKED_MESSAGE =
  "the spool is locked by another skiff process (a manager starting up or a queue run); try again";

/**
 * One queue pass with the spool lock held (no manager runs): picks up the
 * maildrop, tries every message (or only `ids`) now, waits for the results.
 * Returns how many messages are still queued.
 */
export async function oneShotPass(
  cfg: Config,
  lock: SpoolLock,
  ids?: string[],
): Promise<{ left: number; pickedUp: number }> {
  void lock; // held by the caller for the whole pass
  // Root with `user` set: the pass runs as `user`, workers through the helper.
  const helper = await dropForQueueRun(cfg);
  try {
    return await pass(cfg, ids, helper ?? undefined);
  } finally {
    await helper?.close();
  }
}

async function pass(
  cfg: Config,
  ids: string[] | undefined,
  spawner: Spawner | undefined,
): Promise<{ left: number; pickedUp: number }> {
  const spool = new Spool(cfg.spoolDir);
  await spool.init();
  await ensureMaildrop(cfg.sendmail.maildropDir);
  const pickedUp = await pickupMaildrop(cfg, spool);
  const manager = new QueueManager({ config: cfg, spool, spawner });
  await manager.scan();
  manager.flush(ids);
  await manager.idle();
  await manager.stop();
  const left = (await spool.list()).length;
  logEvent("queue pass done", { left, picked_up: pickedUp });
  return { left, pickedUp };
}
