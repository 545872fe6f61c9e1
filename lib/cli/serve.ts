/**
 * `skiff serve`: the long-running queue manager. Loads the config, recovers
 * the spool, takes the spool lock (one manager per spool), starts the queue
 * manager and every listener, and handles signals: SIGTERM/SIGINT stop
 * gracefully, SIGUSR2 flushes the queue, SIGHUP re-reads the config and
 * the listeners' TLS certificates and SASL credentials; SIGUSR1 is blocked
 * before this runs (main.ts, lib/sys/sigusr1.ts). The control socket and maildrop
 * pickup come from lib/control/attach.ts.
 */
import type { Config } from "../config/types.ts";
import { type ListenerGroup, startListeners } from "../listen/mod.ts";
import { logError, logEvent, setupLogging } from "../log/log.ts";
import { QueueManager } from "../queue/manager.ts";
import { Spool } from "../spool/spool.ts";
import { attachControl, type Attached } from "../control/attach.ts";
import { VERSION } from "../version.ts";
import { EX_TEMPFAIL, EX_UNAVAILABLE } from "./exit_codes.ts";
import { tryLockSpool } from "./spool_lock.ts";

/** Runs the manager until a stop signal; returns the exit code. */
export async function serve(cfg: Config): Promise<number> {
  await setupLogging(cfg.log);
  // The lock comes first: init() deletes half-received files, which would be
  // live sessions' files if another manager were running on this spool.
  const lock = await tryLockSpool(cfg.spoolDir);
  if (lock === null) {
    logError("another manager holds the spool lock", { spool: cfg.spoolDir });
    return EX_TEMPFAIL;
  }
  const spool = new Spool(cfg.spoolDir, { sync: cfg.queue.spoolSync });
  const { removedPartials } = await spool.init();
  await lock.writePid();
  const manager = new QueueManager({ config: cfg, spool });
  // The queue is read in the background ("queue scanned" is logged when it
  // is done): the listeners answer at once whatever the backlog.
  const { scanned } = manager.start();
  scanned.catch((err) => logError("scan failed", { error: String(err) }));
  logEvent("starting", {
    version: VERSION,
    config: cfg.source,
    spool: cfg.spoolDir,
    removed_partials: removedPartials,
  });
  let group: ListenerGroup;
  try {
    group = await startListeners(cfg, {
      config: cfg,
      spool,
      onQueued: (id) => manager.enqueue(id),
    });
  } catch (err) {
    logError("listener failed", { error: (err as Error).message });
    console.error(`skiff: ${(err as Error).message}`);
    await manager.stop();
    return EX_UNAVAILABLE;
  }
  const listeners = group.listeners;
  const stopped = new Promise<string>((resolve) => {
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
  });
  Deno.addSignalListener("SIGUSR2", () => {
    logEvent("flush requested", { queued: manager.size });
    manager.flush();
  });
  // The control socket, maildrop pickup and SIGHUP reload (config, then the listeners' certificates).
  let control: Attached;
  try {
    control = await attachControl({
      config: cfg,
      spool,
      manager,
      connections: () => listeners.reduce((n, l) => n + l.connections(), 0),
      reloadExtra: () => group.reload(),
    });
  } catch (err) {
    logError("control socket failed", { error: (err as Error).message });
    console.error(`skiff: ${(err as Error).message}`);
    await group.close(0);
    await manager.stop();
    return EX_UNAVAILABLE;
  }
  logEvent("ready", { listeners: listeners.map((l) => l.address).join(",") });
  const signal = await stopped;
  logEvent("stopping", { signal });
  await control.close();
  await group.close(10_000);
  await manager.stop();
  lock.release();
  logEvent("stopped", {});
  return 0;
}
