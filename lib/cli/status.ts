/**
 * `skiff status [--json]`: the running manager's pid, uptime and open
 * connections with the queue counts by state and the oldest message; with
 * no manager, the same queue figures read from the spool.
 */
import type { Config } from "../config/types.ts";
import { ControlError, controlRequest } from "../control/client.ts";
import { formatStatus, type SpoolStatus, spoolStatus } from "../control/status.ts";
import { EX_OK, EX_SOFTWARE, EX_USAGE } from "../sys/exit_codes.ts";
import { NO_USER_WARNING } from "../privsep/plan.ts";

/** Runs `skiff status`; returns the exit code. */
export async function status(cfg: Config, argv: string[]): Promise<number> {
  const bad = argv.find((a) => a !== "--json");
  if (bad) {
    console.error(`skiff status: unknown option ${bad}; usage: skiff status [--json]`);
    return EX_USAGE;
  }
  let s: Record<string, unknown> & SpoolStatus;
  try {
    const reply = await controlRequest(cfg.spoolDir, { cmd: "status" });
    s = reply
      ? (reply as unknown as Record<string, unknown> & SpoolStatus)
      : { manager: "not running", ...await spoolStatus(cfg) };
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    console.error(`skiff status: ${err.message}`);
    return EX_SOFTWARE;
  }
  if ("ok" in s) delete s.ok;
  // A manager running as root (or one that would, started by root): say so every time.
  if (!cfg.user || s.uid === 0) s.warning = NO_USER_WARNING;
  if (argv.includes("--json")) console.log(JSON.stringify(s));
  else console.log(formatStatus(s));
  return EX_OK;
}
