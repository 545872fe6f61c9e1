/**
 * `skiff mailq` (and `sendmail -bp`, a `mailq` link): lists the queue in the
 * familiar Postfix layout, each message printed as it comes. Asks a running
 * manager (which marks active messages with `*`), else reads the spool's
 * journals directly; held messages are marked `!`. The queue is private to
 * the manager's user: others get a clear refusal (exit 77), not a stack trace.
 */
import type { Config } from "../config/types.ts";
import { ControlDenied, ControlError } from "../control/client.ts";
import { countMaildrop } from "../control/status.ts";
import { EX_NOPERM, EX_OK, EX_SOFTWARE } from "../sys/exit_codes.ts";
import { mailqSink, out, streamListing } from "./queue_list.ts";

/** Prints the queue; returns the exit code. */
export async function mailq(cfg: Config): Promise<number> {
  try {
    await streamListing(cfg, mailqSink("mailq"));
    // Postfix lists maildrop files too: mail waiting there is not yet in the
    // queue, but an operator asking "where is my mail" must see it.
    const waiting = await countMaildrop(cfg);
    if (waiting) {
      out.write(
        `-- ${waiting} message(s) waiting in the maildrop ${cfg.sendmail.maildropDir} ` +
          "(picked up by the running manager or the next skiff flush)\n",
      );
      out.flush();
    }
    return EX_OK;
  } catch (err) {
    if (err instanceof Deno.errors.BrokenPipe) return EX_OK; // `mailq | head` had enough
    if (err instanceof ControlError && !(err instanceof ControlDenied)) {
      // Reached the manager, which refused or broke off midway (stopped while listing).
      console.error(`mailq: the manager could not list the queue: ${err.message}`);
      return EX_SOFTWARE;
    }
    if (!(err instanceof ControlDenied) && !(err instanceof Deno.errors.PermissionDenied)) {
      throw err;
    }
    console.error(
      `mailq: cannot read the queue in ${cfg.spoolDir} (${(err as Error).message}); ` +
        "only root and the user skiff runs as may list it",
    );
    return EX_NOPERM;
  }
}
