/**
 * `skiff flush` (and `sendmail -q`): with a manager running, ask it to try
 * every queued message now (SIGUSR2 to the pid in the spool lock); with none
 * running, take the spool lock and run one queue pass here, then exit 0 when
 * the queue is empty and 75 (EX_TEMPFAIL) when mail is still deferred — the
 * cron-driven flush. The lock means two flushes never deliver a message twice.
 */
import type { Config } from "../config/types.ts";
import { logEvent, setupLogging } from "../log/log.ts";
import { QueueManager } from "../queue/manager.ts";
import { Spool } from "../spool/spool.ts";
import { EX_OK, EX_TEMPFAIL } from "./exit_codes.ts";
import { lockHolderPid, tryLockSpool } from "./spool_lock.ts";

/** Runs a flush; returns the exit code. */
export async function flush(cfg: Config): Promise<number> {
  await setupLogging(cfg.log);
  const lock = await tryLockSpool(cfg.spoolDir);
  if (lock === null) {
    const pid = await lockHolderPid(cfg.spoolDir);
    if (pid === null) {
      console.error("skiff flush: the spool is locked but names no process; try again");
      return EX_TEMPFAIL;
    }
    Deno.kill(pid, "SIGUSR2");
    console.log(`skiff flush: asked the running manager (pid ${pid}) to flush the queue`);
    return EX_OK;
  }
  try {
    const spool = new Spool(cfg.spoolDir);
    await spool.init();
    const manager = new QueueManager({ config: cfg, spool });
    await manager.scan();
    manager.flush();
    await manager.idle();
    await manager.stop();
    const left = (await spool.list()).length;
    logEvent("flush done", { left });
    console.log(`skiff flush: queue pass done, ${left} message(s) still queued`);
    return left === 0 ? EX_OK : EX_TEMPFAIL;
  } finally {
    lock.release();
  }
}
