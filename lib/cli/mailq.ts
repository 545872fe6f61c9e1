/**
 * `skiff mailq` (and `sendmail -bp`): lists the queue in the familiar Postfix
 * layout, read straight from the spool's journals, so it works whether or not
 * a manager is running.
 */
import type { Config } from "../config/types.ts";
import { Spool } from "../spool/spool.ts";

function arrival(ms: number): string {
  const d = new Date(ms);
  return d.toUTCString().replace(/^(\w+), (\d+) (\w+) \d+ ([\d:]+) GMT$/, "$1 $3 $2 $4");
}

/** Prints the queue; returns the exit code. */
export async function mailq(cfg: Config): Promise<number> {
  const spool = new Spool(cfg.spoolDir);
  let ids: string[];
  try {
    ids = await spool.list();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) ids = [];
    else throw err;
  }
  if (ids.length === 0) {
    console.log("Mail queue is empty");
    return 0;
  }
  console.log("-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------");
  let bytes = 0;
  let count = 0;
  for (const id of ids) {
    let state;
    try {
      state = await spool.load(id);
    } catch {
      continue; // removed while we looked
    }
    const env = state.envelope;
    bytes += env.size;
    count++;
    console.log(
      `${id.padEnd(16)} ${String(env.size).padStart(8)} ${arrival(env.received).padEnd(20)} ` +
        `${env.from || "MAILER-DAEMON"}`,
    );
    for (const r of state.recipients) {
      if (r.status === "delivered" || r.status === "failed") continue;
      if (r.text) console.log(`${" ".repeat(47)}(${r.text.slice(0, 200)})`);
      console.log(`${" ".repeat(47)}${r.address}`);
    }
    console.log("");
  }
  console.log(`-- ${Math.ceil(bytes / 1024)} Kbytes in ${count} Request${count === 1 ? "" : "s"}.`);
  return 0;
}
