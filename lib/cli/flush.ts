/**
 * `skiff flush` (and `sendmail -q`): with a manager running, ask it over the
 * control socket to pick up the maildrop and try every queued message now;
 * with none running, take the spool lock and run one queue pass here, then
 * exit 0 when the queue is empty and 75 (EX_TEMPFAIL) when mail is still
 * deferred — the cron-driven flush. The lock means two flushes never deliver
 * a message twice: a second flush waits for the first pass to end and then
 * runs its own pass over what is left (or hands over to a manager that
 * started meanwhile).
 */
import type { Config } from "../config/types.ts";
import { ControlError, controlRequest } from "../control/client.ts";
import { setupLogging } from "../log/log.ts";
import { EX_CONFIG, EX_OK, EX_SOFTWARE, EX_TEMPFAIL } from "../sys/exit_codes.ts";
import { oneShotPass } from "./manager_link.ts";
import { prepareQueueRun } from "../privsep/queue_run.ts";
import { lockSpoolWait, type SpoolLock } from "./spool_lock.ts";

/** How long a flush waits for another queue run before giving up (cron runs again). */
const WAIT_MS = 30 * 60 * 1000;

/** Runs a flush; returns the exit code. */
export async function flush(cfg: Config): Promise<number> {
  await setupLogging(cfg.log);
  try {
    if (await askManager(cfg)) return EX_OK;
    try {
      await prepareQueueRun(cfg); // the spool is `user`'s before the lock touches it
    } catch (err) {
      console.error(`skiff flush: ${(err as Error).message}`);
      return EX_CONFIG;
    }
    // One lock request for the whole wait: a second request from this process
    // could be blocked by our own first one (flock is per open file).
    const locked = lockSpoolWait(cfg.spoolDir);
    let lock: SpoolLock | null = await Promise.race([locked, delay(300)]);
    if (lock === null) {
      console.log("skiff flush: another queue run holds the spool lock; waiting for it");
      lock = await waitForLockOrManager(cfg, locked);
      if (lock === null) return EX_OK; // a manager took over and was asked
    }
    try {
      const { left, pickedUp } = await oneShotPass(cfg, lock);
      console.log(
        `skiff flush: queue pass done, ${pickedUp} picked up from the maildrop, ` +
          `${left} message(s) still queued`,
      );
      return left === 0 ? EX_OK : EX_TEMPFAIL;
    } finally {
      lock.release();
    }
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    console.error(`skiff flush: ${err.message}`);
    return EX_SOFTWARE;
  }
}

/** True when a running manager took the request. */
async function askManager(cfg: Config): Promise<boolean> {
  const reply = await controlRequest(cfg.spoolDir, { cmd: "flush" });
  if (reply === null) return false;
  console.log(
    `skiff flush: asked the running manager (pid ${reply.pid}) to flush the queue ` +
      `(${reply.queued} message(s) queued)`,
  );
  return true;
}

/** Waits for the spool lock, or for a manager's control socket; null when a manager was asked. */
async function waitForLockOrManager(
  cfg: Config,
  locked: Promise<SpoolLock>,
): Promise<SpoolLock | null> {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    const winner = await Promise.race([locked, delay(250)]);
    if (winner) return winner;
    if (await askManager(cfg)) return null;
  }
  throw new ControlError(`the spool stayed locked for ${WAIT_MS / 60000} minutes; giving up`);
}

function delay(ms: number): Promise<null> {
  return new Promise((r) => setTimeout(() => r(null), ms));
}
