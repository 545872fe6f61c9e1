/**
 * `skiff serve`: the long-running queue manager. Loads the config, decides
 * how to handle privileges (lib/privsep/plan.ts), prepares the spool and
 * maildrop, takes the spool lock (one manager per spool), recovers the
 * spool, starts the privileged helper when it will drop root, binds every
 * listener, then switches to `user` (verified from /proc) and revokes the
 * permission to run programs, and only then starts the queue and lets
 * sessions in: nothing that parses network input runs as root. It handles
 * signals: SIGTERM/SIGINT stop gracefully, SIGUSR2 flushes the queue, SIGHUP
 * re-reads the config and the listeners' TLS certificates and SASL
 * credentials; SIGUSR1 is blocked before this runs (main.ts,
 * lib/sys/sigusr1.ts). The control socket and maildrop pickup come from
 * lib/control/attach.ts; the monitoring endpoint ([http]) from
 * lib/http/server.ts, loaded only when configured.
 */
import type { Config } from "../config/types.ts";
import { type ListenerGroup, startListeners } from "../listen/mod.ts";
import { logError, logEvent, logWarn, reopenLogFile, setupLogging } from "../log/log.ts";
import { QueueManager } from "../queue/manager.ts";
import { Spool } from "../spool/spool.ts";
import { attachControl, type Attached } from "../control/attach.ts";
import { VERSION } from "../version.ts";
import {
  EX_CANTCREAT,
  EX_CONFIG,
  EX_OSERR,
  EX_TEMPFAIL,
  EX_UNAVAILABLE,
} from "../sys/exit_codes.ts";
import { lockHolderPid, tryLockSpool } from "./spool_lock.ts";
import type { HttpEndpoint } from "../http/server.ts";
import { recipientCheck } from "../route/verify.ts";
import {
  NO_USER_WARNING,
  type PrivilegePlan,
  privilegePlan,
  unreachableByOthers,
} from "../privsep/plan.ts";
import { prepareOwnedDirs } from "../privsep/dirs.ts";
import { logHelperExit, PrivHelper } from "../privsep/client.ts";
import { dropPrivileges } from "../privsep/drop.ts";
import { closeOnExecAll } from "../sys/cloexec.ts";
import { DirectSpawner, type Spawner } from "../sys/spawn.ts";
import { rememberDenoDir } from "../sys/child_env.ts";
import { dropPermissions } from "../sys/permissions.ts";

function fail(what: string, err: unknown, code: number): number {
  const msg = err instanceof Error ? err.message : String(err);
  logError(what, { error: msg });
  console.error(`skiff: ${msg}`);
  return code;
}

/** Checks the plan and prepares the directories; a message and exit code on failure. */
async function prepare(cfg: Config): Promise<PrivilegePlan | number> {
  let plan: PrivilegePlan;
  try {
    plan = privilegePlan(cfg);
  } catch (err) {
    return fail("wrong user", err, EX_CONFIG);
  }
  if (plan.mode === "root") logWarn("running as root", { warning: NO_USER_WARNING });
  const owner = plan.mode === "root" ? null : plan.user;
  if (owner) {
    try {
      await prepareOwnedDirs(cfg.spoolDir, cfg.sendmail.maildropDir, owner, plan.mode === "drop");
    } catch (err) {
      return fail("spool not ready", err, EX_CONFIG);
    }
  }
  if (plan.mode === "drop") {
    for (const p of unreachableByOthers()) {
      logError("workers running as other users cannot load skiff", {
        error: `${p} (see docs/security.md, "Running under deno run")`,
      });
    }
  }
  return plan;
}

/** Switches to `user` for good (verified per thread) and gives up running programs. */
async function switchToUser(u: { uid: number; gid: number }): Promise<void> {
  try {
    dropPrivileges(u.uid, u.gid);
    // Every child now starts through the helper; this process never runs one again.
    await dropPermissions(["run"]);
  } catch (err) {
    // Nothing was served yet: stop hard rather than serve half-privileged.
    fail("privilege drop failed", err, EX_OSERR);
    Deno.exit(EX_OSERR);
  }
}

/** Runs the manager until a stop signal; returns the exit code. */
export async function serve(cfg: Config): Promise<number> {
  try {
    await setupLogging(cfg.log, { file: true, owner: cfg.user ?? undefined });
  } catch (err) {
    console.error(`skiff: cannot open the log file ${cfg.log.file}: ${(err as Error).message}`);
    return EX_CANTCREAT;
  }
  rememberDenoDir();
  const plan = await prepare(cfg);
  if (typeof plan === "number") return plan;
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
  const spool = new Spool(cfg.spoolDir, { sync: cfg.queue.spoolSync });
  const { removedPartials } = await spool.init();
  await lock.writePid();
  let spawner: Spawner = new DirectSpawner();
  let helper: PrivHelper | null = null;
  if (plan.mode === "drop") {
    try {
      helper = await PrivHelper.start(cfg);
    } catch (err) {
      return fail("privileged helper failed", err, EX_OSERR);
    }
    spawner = helper;
  }
  const manager = new QueueManager({ config: cfg, spool, spawner });
  // The metrics sink goes in before anything is counted (and its port is bound before the
  // switch to `user`); other commands never load prom-client.
  let http: HttpEndpoint | null = null;
  if (cfg.http.address) {
    try {
      const { startHttp } = await import("../http/server.ts");
      http = await startHttp({ config: cfg, activeIds: () => manager.activeIds() });
    } catch (err) {
      await helper?.close();
      return fail("http failed", err, EX_UNAVAILABLE);
    }
  }
  // Sessions wait for this: none may run before the switch to `user`.
  const gate = Promise.withResolvers<void>();
  let group: ListenerGroup;
  try {
    group = await startListeners(cfg, {
      config: cfg,
      spool,
      onQueued: (id) => manager.enqueue(id),
      gate: gate.promise,
      // Read only once sessions run, after manager.start() has loaded the aliases.
      knownRecipient: recipientCheck(cfg, () => manager.aliasTable) ?? undefined,
    });
  } catch (err) {
    await http?.close();
    await helper?.close();
    return fail("listener failed", err, EX_UNAVAILABLE);
  }
  closeOnExecAll(); // the node:net listeners are not close-on-exec by themselves
  if (plan.mode === "drop") await switchToUser(plan.user);
  // The queue is read in the background ("queue scanned" is logged when it
  // is done): the listeners answer at once whatever the backlog.
  const { scanned } = manager.start();
  scanned.catch((err) => logError("scan failed", { error: String(err) }));
  logEvent("starting", {
    version: VERSION,
    config: cfg.source,
    spool: cfg.spoolDir,
    removed_partials: removedPartials,
    uid: Deno.uid(),
    privileges: plan.mode,
    helper: helper?.pid,
  });
  // RCPT checks consult the aliases (backscatter): none may run before they are loaded.
  await manager.aliasesLoaded();
  gate.resolve();
  return await run(cfg, { spool, manager, group, helper, lock, http });
}

async function run(
  cfg: Config,
  s: {
    spool: Spool;
    manager: QueueManager;
    group: ListenerGroup;
    helper: PrivHelper | null;
    lock: { release(): void };
    http: HttpEndpoint | null;
  },
): Promise<number> {
  const { manager, group, helper } = s;
  const listeners = group.listeners;
  let exitCode = 0;
  const stopped = new Promise<string>((resolve) => {
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
    if (helper) {
      helper.onExit = (why) => {
        logHelperExit(why);
        exitCode = EX_OSERR;
        resolve("privileged helper exited");
      };
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
      spool: s.spool,
      manager,
      connections: () => listeners.reduce((n, l) => n + l.connections(), 0),
      reloadExtra: async () => {
        const why = reopenLogFile();
        if (why) logError("log file reopen failed", { error: why });
        await group.reload();
        manager.workerPool.retire(); // new settings reach new worker processes
        const r = await helper?.reload().catch((e) => ({ ok: false, error: String(e) }));
        if (r && !r.ok) logError("privileged helper reload failed", { error: String(r.error) });
      },
    });
  } catch (err) {
    fail("control socket failed", err, EX_UNAVAILABLE);
    await group.close(0);
    await s.http?.close();
    await manager.stop();
    await helper?.close();
    return EX_UNAVAILABLE;
  }
  logEvent("ready", { listeners: listeners.map((l) => l.address).join(",") });
  const signal = await stopped;
  logEvent("stopping", { signal });
  await control.close();
  await group.close(10_000);
  await s.http?.close();
  await manager.stop();
  await helper?.close();
  s.lock.release();
  logEvent("stopped", {});
  return exitCode;
}
