/**
 * Starts every configured listener with what they share: the TLS
 * certificates (re-read on SIGHUP; new connections get the new ones) and
 * the SASL credentials and failure throttle. Any listener that cannot bind
 * stops start-up with its address named; those already bound are closed.
 */
import { readFileSync } from "node:fs";
import * as tls from "node:tls";
import { AuthThrottle, Credentials, HashGate } from "../auth/credentials.ts";
import type { Config, ListenerConfig } from "../config/types.ts";
import { logError, logEvent, logWarn } from "../log/log.ts";
import type { SaslContext } from "../smtp/auth_exchange.ts";
import { SpaceMonitor } from "../spool/space.ts";
import { parseMilterAddress } from "../config/milter_address.ts";
import { MilterChain, type MilterSettings } from "../milter/chain.ts";
import type { FilterClient, SessionFilter } from "../smtp/filter.ts";
import { type Listener, type ListenerContext, startSmtpListener } from "./smtp_listener.ts";

export type { Listener };

/** The running listeners. */
export interface ListenerGroup {
  listeners: Listener[];
  /** Re-reads certificates and credentials; keeps the old ones when the new ones are bad. */
  reload(): Promise<void>;
  close(graceMs: number): Promise<void>;
}

function loadContext(lc: ListenerConfig): tls.SecureContext {
  return tls.createSecureContext({
    cert: readFileSync(lc.tlsCert),
    key: readFileSync(lc.tlsKey),
    minVersion: "TLSv1.2",
  });
}

/** The listener's milters as a session filter; undefined when it has none. */
function milterFilter(
  cfg: Config,
  lc: ListenerConfig,
): ((client: FilterClient) => Promise<SessionFilter>) | undefined {
  if (lc.milters.length === 0) return undefined;
  const m = cfg.milter;
  const settings: MilterSettings = {
    milters: lc.milters.map((name) => ({ name, address: parseMilterAddress(name) })),
    defaultAction: m.defaultAction,
    timeouts: {
      connect: m.connectTimeout * 1000,
      command: m.commandTimeout * 1000,
      content: m.contentTimeout * 1000,
    },
  };
  return (client) => MilterChain.open(settings, client);
}

/** Starts all listeners of `cfg`; rejects (after closing any started) when one fails. */
export async function startListeners(
  cfg: Config,
  base: Omit<ListenerContext, "secureContext" | "sasl" | "space" | "openFilter">,
): Promise<ListenerGroup> {
  const contexts = new Map<ListenerConfig, tls.SecureContext>();
  const loadAllTls = (initial: boolean) => {
    for (const lc of cfg.listeners) {
      if (lc.tls === "none") continue;
      try {
        contexts.set(lc, loadContext(lc));
      } catch (err) {
        const msg = `Cannot load TLS certificate ${lc.tlsCert} / key ${lc.tlsKey}: ${
          (err as Error).message
        }`;
        if (initial) throw new Error(msg);
        logError("tls reload failed", { error: msg });
      }
    }
  };
  loadAllTls(true);
  const warn = (msg: string) => logWarn("credentials", { file: cfg.auth.credentials, error: msg });
  let credentials = await Credentials.load(cfg.auth.credentials, warn).catch((err) => {
    throw new Error(`Cannot read credentials ${cfg.auth.credentials}: ${(err as Error).message}`);
  });
  const sasl: SaslContext = {
    credentials: () => credentials,
    throttle: new AuthThrottle(cfg.auth.maxFailures, cfg.auth.failureWindow),
    gate: new HashGate(cfg.auth.concurrentChecks),
  };
  // One free-space figure for every listener: MAIL is refused early on a full spool.
  const space = new SpaceMonitor({
    dir: cfg.spoolDir,
    minFree: cfg.queue.minFreeBytes,
    messageSize: cfg.limits.messageSize,
  });
  await space.refresh();
  space.start();
  const listeners: Listener[] = [];
  try {
    for (const lc of cfg.listeners) {
      listeners.push(
        await startSmtpListener(lc, {
          ...base,
          space,
          secureContext: lc.tls === "none" ? undefined : () => contexts.get(lc)!,
          sasl: lc.auth === "sasl" ? sasl : undefined,
          openFilter: milterFilter(cfg, lc),
        }),
      );
    }
  } catch (err) {
    space.stop();
    await Promise.all(listeners.map((l) => l.close(0)));
    throw err;
  }
  return {
    listeners,
    reload: async () => {
      loadAllTls(false);
      try {
        credentials = await Credentials.load(cfg.auth.credentials, warn);
      } catch (err) {
        logError("credentials reload failed", { error: (err as Error).message });
      }
      logEvent("reloaded", { certificates: contexts.size, users: credentials.size });
    },
    close: async (graceMs) => {
      space.stop();
      await Promise.all(listeners.map((l) => l.close(graceMs)));
    },
  };
}
