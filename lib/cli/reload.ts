/**
 * `skiff reload`: asks the running manager, over the control socket, to
 * re-read its config (the same as SIGHUP, but with an answer: what changed,
 * what needs a restart, or why the new file was refused).
 */
import type { Config } from "../config/types.ts";
import { ControlError, controlRequest } from "../control/client.ts";
import { EX_CONFIG, EX_OK, EX_UNAVAILABLE } from "../sys/exit_codes.ts";

/** Runs `skiff reload`; returns the exit code. */
export async function reload(cfg: Config): Promise<number> {
  let reply;
  try {
    reply = await controlRequest(cfg.spoolDir, { cmd: "reload" });
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    console.error(`skiff reload: refused: ${err.message}`);
    return EX_CONFIG;
  }
  if (reply === null) {
    console.error(`skiff reload: no manager is running on ${cfg.spoolDir}`);
    return EX_UNAVAILABLE;
  }
  const changed = reply.changed as string[];
  const restart = reply.needs_restart as string[];
  console.log(
    `skiff reload: ${changed.length ? `changed ${changed.join(", ")}` : "nothing changed"}${
      restart.length ? `; needs a restart: ${restart.join(", ")}` : ""
    }`,
  );
  return EX_OK;
}
