/**
 * The operator's queue operations (Postfix's postqueue/postsuper): list,
 * show, hold, release, delete and retry, by id, by recipient domain or all.
 * Held messages live in `<spool>/hold/`, out of the manager's sight, as in
 * Postfix's hold queue; release moves them back. The layout itself (the
 * directories, reading a file, the durable moves) is the spool's:
 * lib/spool/queue_files.ts. The same code runs inside
 * the manager (behind the control socket, with hooks that keep the
 * scheduler's hands off a message while it is moved) and in a CLI process
 * holding the spool lock when no manager runs.
 */
import type { MessageState } from "../spool/records.ts";
import { isQueueId } from "../spool/queue_id.ts";
import {
  holdDir,
  idsIn,
  loadFile,
  moveFile as move,
  queueDir,
  removeFile,
} from "../spool/queue_files.ts";
import { logEvent } from "../log/log.ts";
import { domainOf } from "../mail/address.ts";
import type { QueueOp, Selection } from "./protocol.ts";
import { entryOf, type Found, isUnreadable, type QueueEntry, streamQueue } from "./queue_list.ts";

/** What queue operations need from a running scheduler (no-ops without one). */
export interface QueueHooks {
  /** Runs fn while the scheduler leaves the message alone (waits for a delivery in progress). */
  withdraw<T>(id: string, fn: () => Promise<T>): Promise<T>;
  /** Makes these messages due now, deferred recipients included. */
  retry(ids: string[]): void | Promise<void>;
  /** Schedules a message that came back into queue/. */
  enqueue(id: string): void;
  /** Ids being delivered right now. */
  activeIds(): Set<string>;
}

/** Hooks for a process that holds the spool lock and runs no scheduler. */
export const NO_SCHEDULER: QueueHooks = {
  withdraw: (_id, fn) => fn(),
  retry: () => {},
  enqueue: () => {},
  activeIds: () => new Set(),
};

export type { QueueEntry, QueueName } from "./queue_list.ts";

/** Every readable message in queue/ and hold/ (files removed while we look are skipped). */
async function scanAll(spoolDir: string): Promise<Found[]> {
  const out: Found[] = [];
  for (const [dir, held] of [[queueDir(spoolDir), false], [holdDir(spoolDir), true]] as const) {
    // Journals are read 64 at a time: one by one, each read waits for a
    // thread hand-off and 20,000 of them took over 10 s on a busy machine.
    const ids = await idsIn(dir);
    for (let i = 0; i < ids.length; i += 64) {
      await Promise.all(
        ids.slice(i, i + 64).map(async (id) => {
          try {
            out.push({ id, held, state: await loadFile(`${dir}/${id}`, id) });
          } catch { /* delivered and removed while we looked, or unreadable: mailq skips it */ }
        }),
      );
    }
  }
  // Ties broken by id (time-ordered), as the one-by-one reading used to leave them.
  return out.sort((a, b) =>
    a.state.envelope.received - b.state.envelope.received || (a.id < b.id ? -1 : 1)
  );
}

/**
 * Every queued and held message, oldest first (by queue id), as one array:
 * for the status page's snapshot and small callers. mailq and `queue list`
 * stream instead (queue_list.ts). Unreadable files are left out here.
 */
export async function listQueue(spoolDir: string, hooks = NO_SCHEDULER): Promise<QueueEntry[]> {
  const out: QueueEntry[] = [];
  for await (const slice of streamQueue(spoolDir, { activeIds: () => hooks.activeIds() })) {
    for (const item of slice) if (!isUnreadable(item)) out.push(item);
  }
  return out;
}

/** One message's envelope and every recipient's history, or null when unknown. */
export async function showMessage(
  spoolDir: string,
  id: string,
  hooks = NO_SCHEDULER,
): Promise<(QueueEntry & { envelope: MessageState["envelope"]; history: unknown[] }) | null> {
  if (!isQueueId(id)) return null;
  for (const [dir, held] of [[queueDir(spoolDir), false], [holdDir(spoolDir), true]] as const) {
    try {
      const state = await loadFile(`${dir}/${id}`, id);
      return {
        ...entryOf({ id, held, state }, hooks.activeIds()),
        envelope: state.envelope,
        history: state.recipients.flatMap((r) => r.history),
      };
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return null;
}

function matches(f: Found, sel: Selection): boolean {
  if (sel.all) return true;
  if (sel.ids?.includes(f.id)) return true;
  if (sel.domain !== undefined) {
    return f.state.recipients.some((r) =>
      (r.status === "pending" || r.status === "deferred") && domainOf(r.address) === sel.domain
    );
  }
  return false;
}

/** The result of a changing operation: how many messages, and which. */
export interface OpResult {
  count: number;
  ids: string[];
}

/** Applies hold/release/delete/retry to the selected messages. */
export async function applyQueueOp(
  spoolDir: string,
  op: Exclude<QueueOp, "list" | "show">,
  sel: Selection,
  hooks = NO_SCHEDULER,
): Promise<OpResult> {
  const chosen = (await scanAll(spoolDir)).filter((f) => matches(f, sel));
  const done: string[] = [];
  const queue = queueDir(spoolDir);
  const hold = holdDir(spoolDir);
  for (const f of chosen) {
    let ok = false;
    if (op === "hold" && !f.held) {
      ok = await hooks.withdraw(f.id, () => move(queue, hold, f.id));
    } else if (op === "release" && f.held) {
      ok = await move(hold, queue, f.id);
      if (ok) hooks.enqueue(f.id);
    } else if (op === "delete") {
      const dir = f.held ? hold : queue;
      ok = await hooks.withdraw(f.id, () => removeFile(dir, f.id));
    } else if (op === "retry" && !f.held) {
      ok = true;
    }
    if (ok) {
      done.push(f.id);
      if (op !== "retry") logEvent(op === "delete" ? "removed" : op, { id: f.id, by: "operator" });
    }
  }
  // Released messages are tried at once too, as Postfix's postsuper -H does via the next scan.
  if ((op === "retry" || op === "release") && done.length > 0) await hooks.retry(done);
  return { count: done.length, ids: done };
}
