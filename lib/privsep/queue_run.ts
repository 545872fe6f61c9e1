/**
 * One-shot queue runs (`skiff flush` and `skiff queue retry` with no
 * manager running, e.g. from root's cron) deliver mail and write the spool
 * just like the manager, so with `user` set they drop root the same way:
 * prepare the spool as `user`'s, start the privileged helper for the
 * workers, switch to `user` (verified), revoke `run`. Otherwise a root cron
 * job would leave root-owned queue files that the manager then refuses.
 */
import type { Config } from "../config/types.ts";
import { logWarn } from "../log/log.ts";
import type { Spawner } from "../sys/spawn.ts";
import { dropPermissions } from "../sys/permissions.ts";
import { PrivHelper } from "./client.ts";
import { prepareOwnedDirs } from "./dirs.ts";
import { dropPrivileges } from "./drop.ts";
import { NO_USER_WARNING, privilegePlan } from "./plan.ts";

/**
 * Creates or checks the spool and maildrop as `user`'s (when set); call before
 * taking the spool lock, which would otherwise create the spool as root.
 */
export async function prepareQueueRun(cfg: Config): Promise<void> {
  const plan = privilegePlan(cfg);
  if (plan.mode === "root" || !plan.user) return;
  await prepareOwnedDirs(cfg.spoolDir, cfg.sendmail.maildropDir, plan.user, plan.mode === "drop");
}

/** Drops to `user` when root with `user` set; the spawner to use (and to close) or null. */
export async function dropForQueueRun(
  cfg: Config,
): Promise<(Spawner & { close(): Promise<void> }) | null> {
  const plan = privilegePlan(cfg);
  if (plan.mode === "root") {
    logWarn("running as root", { warning: NO_USER_WARNING });
    return null;
  }
  if (!plan.user) return null;
  await prepareOwnedDirs(cfg.spoolDir, cfg.sendmail.maildropDir, plan.user, plan.mode === "drop");
  if (plan.mode !== "drop") return null;
  const helper = await PrivHelper.start(cfg);
  try {
    dropPrivileges(plan.user.uid, plan.user.gid);
    await dropPermissions(["run"]);
  } catch (err) {
    await helper.close();
    throw err;
  }
  return helper;
}
