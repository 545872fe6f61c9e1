/**
 * The listing half of mailq and `skiff queue list [--json]`, streamed: each
 * message is printed as it arrives from the running manager's control
 * socket (which marks active messages `*`), or as this process reads it
 * from the spool when no manager runs, so neither side ever holds the whole
 * queue. Output is written synchronously a batch at a time: a slow reader
 * of stdout (a pager) stops this process reading the socket, which stops
 * the manager writing (lib/control/server.ts writeStream). Kept apart from
 * queue.ts so these commands do not load the queue manager's code.
 */
import type { Config } from "../config/types.ts";
import { controlStream } from "../control/client.ts";
import {
  addToTotals,
  emptyTotals,
  isUnreadable,
  type ListItem,
  type ListTotals,
  type QueueEntry,
  streamQueue,
} from "../control/queue_list.ts";

/** Where a listing goes: each item in order, then the end. */
export interface ListSink {
  item(item: ListItem): void;
  end(totals: ListTotals): void;
}

/**
 * Streams the queue into `sink`: from the manager when one runs, else from
 * the spool directly (reading is safe beside a queue run; only the "active"
 * marks need the manager). Rejects with ControlError when the manager
 * refuses, PermissionDenied when the spool is not ours to read.
 */
export async function streamListing(cfg: Config, sink: ListSink): Promise<void> {
  const totals = emptyTotals();
  const take = (item: ListItem) => {
    addToTotals(totals, item);
    sink.item(item);
  };
  const reply = await controlStream(
    cfg.spoolDir,
    { cmd: "queue", op: "list", select: {} },
    (items) => {
      for (const item of items) take(item as unknown as ListItem);
      out.flush();
    },
  );
  if (reply === null) {
    for await (const slice of streamQueue(cfg.spoolDir)) {
      for (const item of slice) take(item);
      out.flush();
    }
  }
  sink.end(totals);
  out.flush();
}

/** Buffered stdout, written synchronously a batch at a time. */
class Output {
  #text = "";
  #enc = new TextEncoder();

  write(s: string): void {
    this.#text += s;
  }

  /** Throws Deno.errors.BrokenPipe when the reader went away (`mailq | head`). */
  flush(): void {
    if (this.#text === "") return;
    const bytes = this.#enc.encode(this.#text);
    this.#text = "";
    let at = 0;
    while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
  }
}

/** The process's stdout, shared by the sinks below. */
export const out = new Output();

// Control characters in an error text (it may quote a hostile journal line) are not for a terminal.
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/g;

/** Reports an unreadable queue file on stderr, its text made safe for a terminal. */
function warnUnreadable(prog: string, item: { queue_id: string; error: string }): void {
  console.error(
    `${prog}: warning: queue file ${item.queue_id} cannot be read: ` +
      item.error.slice(0, 300).replace(CONTROL, "?"),
  );
}

function arrival(sec: number): string {
  const d = new Date(sec * 1000);
  return d.toUTCString().replace(/^(\w+), (\d+) (\w+) \d+ ([\d:]+) GMT$/, "$1 $3 $2 $4");
}

/** The column header of the Postfix mailq layout. */
export const MAILQ_HEADER =
  "-Queue ID-         --Size-- ----Arrival Time---- -Sender/Recipient-------";

/** One message in the Postfix mailq layout, blank line included: `*` active, `!` held. */
export function mailqEntry(e: QueueEntry): string {
  const mark = e.queue_name === "active" ? "*" : e.queue_name === "hold" ? "!" : " ";
  let s = `${e.queue_id}${mark} ${String(e.message_size).padStart(8)} ${
    arrival(e.arrival_time).padEnd(20)
  } ${e.sender || "MAILER-DAEMON"}\n`;
  for (const r of e.recipients) {
    if (r.status !== "pending" && r.status !== "deferred") continue;
    if (r.delay_reason) s += `${" ".repeat(49)}(${r.delay_reason.slice(0, 200)})\n`;
    s += `${" ".repeat(49)}${r.address}\n`;
  }
  return s + "\n";
}

/** The last line of mailq: total size and count. */
export function mailqFooter(count: number, bytes: number): string {
  return `-- ${Math.ceil(bytes / 1024)} Kbytes in ${count} Request${count === 1 ? "" : "s"}.`;
}

/** The Postfix mailq layout, printed as the entries come. */
export function mailqSink(prog: string): ListSink {
  let first = true;
  return {
    item(item) {
      if (isUnreadable(item)) return warnUnreadable(prog, item);
      if (first) out.write(MAILQ_HEADER + "\n");
      first = false;
      out.write(mailqEntry(item));
    },
    end(t) {
      out.write((t.count === 0 ? "Mail queue is empty" : mailqFooter(t.count, t.bytes)) + "\n");
    },
  };
}

/**
 * `queue list --json`: one JSON object per message per line, as before
 * streaming (and like `postqueue -j`); nothing after the last message.
 */
export function jsonSink(prog: string): ListSink {
  return {
    item(item) {
      if (isUnreadable(item)) return warnUnreadable(prog, item);
      out.write(JSON.stringify(item) + "\n");
    },
    end() {},
  };
}
