/**
 * Where local submission goes: the first unix listener with peercred
 * authentication (the manager's submission socket), if the config has one.
 */
import type { Config, ListenerConfig } from "../config/types.ts";

/** The peercred submission listener, or null. */
export function submissionListener(cfg: Config): (ListenerConfig & { path: string }) | null {
  for (const l of cfg.listeners) {
    const a = l.address as { kind?: string; path?: string };
    if (a.kind === "unix" && typeof a.path === "string" && l.auth === "peercred") {
      return { ...l, path: a.path };
    }
  }
  return null;
}
