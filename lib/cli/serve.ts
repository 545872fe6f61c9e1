/**
 * `skiff serve`: the long-running queue manager. Loads the config, recovers
 * the spool, takes the spool lock (one manager per spool), starts the queue
 * manager and every listener, and handles signals: SIGTERM/SIGINT stop
 * gracefully, SIGUSR2 flushes the queue, SIGHUP is logged (reload comes
 * later), SIGUSR1 is caught and ignored (see scripts/deno on why).
 */
import type { Config } from "../config/types.ts";
import { type Listener, startSmtpListener } from "../listen/smtp_listener.ts";
import { logError, logEvent, logWarn, setupLogging } from "../log/log.ts";
import { QueueManager } from "../queue/manager.ts";
import { Spool } from "../spool/spool.ts";
import { VERSION } from "../version.ts";
import { EX_TEMPFAIL, EX_UNAVAILABLE } from "./exit_codes.ts";
import { tryLockSpool } from "./spool_lock.ts";

/** Runs the manager until a stop signal; returns the exit code. */
export async function serve(cfg: Config): Promise<number> {
  await setupLogging(cfg.log);
  // Registered first thing: on Deno 2.9.1 an unhandled SIGUSR1 kills the process.
  Deno.addSignalListener("SIGUSR1", () => logWarn("signal ignored", { signal: "SIGUSR1" }));
  // The lock comes first: init() deletes half-received files, which would be
  // live sessions' files if another manager were running on this spool.
  const lock = await tryLockSpool(cfg.spoolDir);
  if (lock === null) {
    logError("another manager holds the spool lock", { spool: cfg.spoolDir });
    return EX_TEMPFAIL;
  }
  const spool = new Spool(cfg.spoolDir);
  const { removedPartials } = await spool.init();
  await lock.writePid();
  const manager = new QueueManager({ config: cfg, spool });
  const { messages } = await manager.start();
  logEvent("starting", {
    version: VERSION,
    config: cfg.source,
    spool: cfg.spoolDir,
    queued: messages,
    removed_partials: removedPartials,
  });
  const listeners: Listener[] = [];
  for (const lc of cfg.listeners) {
    try {
      listeners.push(
        await startSmtpListener(lc, { config: cfg, spool, onQueued: (id) => manager.enqueue(id) }),
      );
    } catch (err) {
      logError("listener failed", { error: (err as Error).message });
      console.error(`skiff: ${(err as Error).message}`);
      for (const l of listeners) await l.close(0);
      await manager.stop();
      return EX_UNAVAILABLE;
    }
  }
  const stopped = new Promise<string>((resolve) => {
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
  });
  Deno.addSignalListener("SIGUSR2", () => {
    logEvent("flush requested", { queued: manager.size });
    manager.flush();
  });
  Deno.addSignalListener(
    "SIGHUP",
    () => logEvent("reload requested", { note: "not implemented yet" }),
  );
  logEvent("ready", { listeners: listeners.map((l) => l.address).join(",") });
  const signal = await stopped;
  logEvent("stopping", { signal });
  await Promise.all(listeners.map((l) => l.close(10_000)));
  await manager.stop();
  lock.release();
  logEvent("stopped", {});
  return 0;
}
