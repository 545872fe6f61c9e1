/**
 * Config reload for a running manager (SIGHUP or `skiff reload`): the file
 * the manager was started with is read again and checked; a bad file is
 * refused and the running config kept. Settings that the code reads at each
 * use (queue tuning, relay, local domains, routing, auth, log) take effect
 * at once by updating the shared Config object in place; the spool
 * directory and the listeners' addresses need a restart, which the reply
 * and the log say.
 */
import { loadConfig } from "../config/load.ts";
import type { Config } from "../config/types.ts";
import { logEvent, setupLogging } from "../log/log.ts";
import { forgetDkimKeys } from "../mailauth/keys.ts";

/** Keys that a running manager cannot change without a restart. */
const RESTART_KEYS: readonly (keyof Config)[] = ["spoolDir", "listeners", "user"];

/** Reloads `cfg` in place from its source; resolves to what changed. Throws ConfigError on a bad file. */
export async function reloadConfig(cfg: Config): Promise<Record<string, unknown>> {
  const fresh = await loadConfig(cfg.source.startsWith("(") ? undefined : cfg.source);
  const changed: string[] = [];
  const restart: string[] = [];
  for (const key of Object.keys(fresh) as (keyof Config)[]) {
    if (JSON.stringify(fresh[key]) === JSON.stringify(cfg[key])) continue;
    if (RESTART_KEYS.includes(key)) {
      restart.push(key);
      continue;
    }
    changed.push(key);
    (cfg as unknown as Record<string, unknown>)[key] = fresh[key];
  }
  if (changed.includes("log")) await setupLogging(cfg.log);
  // DKIM key files may have changed even when their paths did not.
  forgetDkimKeys();
  logEvent("reloaded", {
    config: cfg.source,
    changed: changed.join(",") || "nothing",
    needs_restart: restart.join(",") || undefined,
  });
  return { config: cfg.source, changed, needs_restart: restart };
}
