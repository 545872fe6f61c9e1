/**
 * What `skiff serve` adds for the operator and for local submission: the
 * control socket, the maildrop pickup (at start, when the directory changes,
 * on every flush and at each scan interval) and config reload on SIGHUP.
 * Kept out of serve.ts so the entry point stays a list of things to start.
 */
import type { Config } from "../config/types.ts";
import { ConfigError } from "../config/load.ts";
import { logError, logEvent } from "../log/log.ts";
import { ensureMaildrop } from "../maildrop/drop.ts";
import { pickupMaildrop } from "../maildrop/pickup.ts";
import { watchMaildrop } from "../maildrop/watch.ts";
import type { QueueManager } from "../queue/manager.ts";
import type { Spool } from "../spool/spool.ts";
import { managerHandler } from "./commands.ts";
import { controlSocketPath } from "./protocol.ts";
import { reloadConfig } from "./reload.ts";
import { startControlServer } from "./server.ts";

/** What the manager gives the control side. */
export interface AttachOptions {
  config: Config;
  spool: Spool;
  manager: QueueManager;
  /** Open inbound connections, when the listeners can say. */
  connections?: () => number | null;
  /** More to reload on SIGHUP / `skiff reload` (e.g. the listeners' certificates). */
  reloadExtra?: () => Promise<void>;
}

/** The running control side; close() before the manager stops. */
export interface Attached {
  close(): Promise<void>;
}

/** Starts the control socket, the maildrop pickup and the SIGHUP handler. */
export async function attachControl(o: AttachOptions): Promise<Attached> {
  const cfg = o.config;
  const startedAt = Date.now();
  await ensureMaildrop(cfg.sendmail.maildropDir);
  // One pickup at a time; a request during a run asks for one more run after it.
  let running: Promise<number> | null = null;
  let again = false;
  let waiting = false;
  const pickup = async (): Promise<number> => {
    if (running) {
      again = true;
      return await running;
    }
    running = (async () => {
      let n = 0;
      do {
        again = false;
        n += await pickupMaildrop(cfg, o.spool, (id) => o.manager.enqueue(id), {
          onWaiting: () => waiting = true,
        });
      } while (again);
      return n;
    })();
    try {
      return await running;
    } finally {
      running = null;
    }
  };
  const safePickup = () =>
    pickup().catch((err) => {
      logError("maildrop pickup failed", { error: String(err) });
      return 0;
    });
  await safePickup();
  const reload = async () => {
    const result = await reloadConfig(cfg);
    await o.reloadExtra?.();
    return result;
  };
  const server = await startControlServer(
    controlSocketPath(cfg.spoolDir),
    managerHandler({
      config: cfg,
      manager: o.manager,
      startedAt,
      connections: o.connections ?? (() => null),
      reload,
      pickup,
    }),
  );
  const onHup = () => {
    logEvent("reload requested", { signal: "SIGHUP" });
    reload().catch((err) => {
      const msg = err instanceof ConfigError ? err.message : String(err);
      logError("reload failed; keeping the running config", { error: msg });
    });
  };
  Deno.addSignalListener("SIGHUP", onHup);
  const timer = setInterval(safePickup, cfg.queue.scanInterval * 1000);
  // A drop while the manager runs (the shim chose the maildrop) is picked up
  // within a second (lib/maildrop/watch.ts says why this is no Deno.watchFs).
  const watcher = watchMaildrop(cfg.sendmail.maildropDir, {
    intervalMs: 1000,
    onChange: async () => {
      waiting = false;
      await safePickup();
      return waiting;
    },
  });
  return {
    close: async () => {
      Deno.removeSignalListener("SIGHUP", onHup);
      clearInterval(timer);
      watcher.close();
      await server.close();
      await running?.catch(() => {});
    },
  };
}
