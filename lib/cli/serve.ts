/**
 * `skiff serve`: the long-running queue manager. Loads the config, recovers
 * the spool, takes the spool lock (one manager per spool), starts the queue
 * manager and every listener, and handles signals: SIGTERM/SIGINT stop
 * gracefully, SIGUSR2 flushes the queue, SIGHUP re-reads the config and
 * the listeners' TLS certificates and SASL credentials; SIGUSR1 is blocked
 * before this runs (main.ts, lib/sys/sigusr1.ts). The control socket and maildrop
 * pickup come from lib/control/attach.ts; the monitoring endpoint ([http])
 * from lib/http/server.ts, loaded only when configured.
 */
import type { Config } from "../config/types.ts";
import { type ListenerGroup, startListeners } from "../listen/mod.ts";
import { recipientCheck } from "../route/verify.ts";
import { logError, logEvent, setupLogging } from "../log/log.ts";
import { QueueManager } from "../queue/manager.ts";
import { Spool } from "../spool/spool.ts";
import { attachControl, type Attached } from "../control/attach.ts";
import { VERSION } from "../version.ts";
import { EX_TEMPFAIL, EX_UNAVAILABLE } from "./exit_codes.ts";
import { lockHolderPid, tryLockSpool } from "./spool_lock.ts";
import type { HttpEndpoint } from "../http/server.ts";

/** Runs the manager until a stop signal; returns the exit code. */
export async function serve(cfg: Config): Promise<number> {
  await setupLogging(cfg.log);
  // The lock comes first: init() deletes half-received files, which would be
  // live sessions' files if another manager were running on this spool.
  const lock = await tryLockSpool(cfg.spoolDir);
  if (lock === null) {
    const pid = await lockHolderPid(cfg.spoolDir);
    logError("another manager holds the spool lock", {
      spool: cfg.spoolDir,
      pid: pid ?? "unknown",
    });
    console.error(
      `skiff: another manager (pid ${pid ?? "unknown"}) holds the spool lock ${cfg.spoolDir}/lock`,
    );
    return EX_TEMPFAIL;
  }
  const spool = new Spool(cfg.spoolDir);
  const { removedPartials } = await spool.init();
  await lock.writePid();
  const manager = new QueueManager({ config: cfg, spool });
  // The metrics sink goes in before anything is counted; other commands never load prom-client.
  let http: HttpEndpoint | null = null;
  if (cfg.http.address) {
    try {
      const { startHttp } = await import("../http/server.ts");
      http = await startHttp({ config: cfg, activeIds: () => manager.activeIds() });
    } catch (err) {
      logError("http failed", { error: (err as Error).message });
      console.error(`skiff: ${(err as Error).message}`);
      lock.release();
      return EX_UNAVAILABLE;
    }
  }
  const { messages } = await manager.start();
  logEvent("starting", {
    version: VERSION,
    config: cfg.source,
    spool: cfg.spoolDir,
    queued: messages,
    removed_partials: removedPartials,
  });
  let group: ListenerGroup;
  try {
    group = await startListeners(cfg, {
      config: cfg,
      spool,
      onQueued: (id) => manager.enqueue(id),
      knownRecipient: recipientCheck(cfg, () => manager.aliasTable) ?? undefined,
    });
  } catch (err) {
    logError("listener failed", { error: (err as Error).message });
    console.error(`skiff: ${(err as Error).message}`);
    await http?.close();
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
    await http?.close();
    await manager.stop();
    return EX_UNAVAILABLE;
  }
  logEvent("ready", { listeners: listeners.map((l) => l.address).join(",") });
  const signal = await stopped;
  logEvent("stopping", { signal });
  await control.close();
  await group.close(10_000);
  await http?.close();
  await manager.stop();
  lock.release();
  logEvent("stopped", {});
  return 0;
}
