/**
 * The spool's directory layout as the operator's queue commands see it:
 * `queue/` (the manager's) and `hold/` (Postfix's hold queue, out of the
 * manager's sight), the ids in each, a spool file's state read without a
 * Spool object (a CLI without a manager, or the manager's control socket),
 * and the durable moves and removals between them. Beside spool.ts so the
 * layout is known in one folder; spool.ts's write and commit path is not
 * involved. lib/control/queue_ops.ts builds hold/release/delete/list on it.
 */
import { checkSeal, parseHeader } from "./spool.ts";
import { isQueueId } from "./queue_id.ts";
import { parseJournal, replay } from "./records.ts";
import type { MessageState } from "./records.ts";
import { syncDir } from "./durable.ts";

function trim(dir: string): string {
  return dir.length > 1 ? dir.replace(/\/+$/, "") : dir;
}

/** The hold directory of a spool. */
export function holdDir(spoolDir: string): string {
  return `${trim(spoolDir)}/hold`;
}

/** The queue directory of a spool (the manager's messages). */
export function queueDir(spoolDir: string): string {
  return `${trim(spoolDir)}/queue`;
}

/** Queue ids in a directory (validated names only), oldest first; [] when it does not exist. */
export async function idsIn(dir: string): Promise<string[]> {
  const ids: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile && isQueueId(e.name)) ids.push(e.name);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return ids.sort();
}

/** Reads and replays the journal of the spool file at `path` (a sealed one's seal checked). */
export async function loadFile(path: string, id: string): Promise<MessageState> {
  const bytes = await Deno.readFile(path);
  const header = parseHeader(bytes, id);
  if (header.crc32 !== undefined) checkSeal(bytes, header, id);
  const state = replay(parseJournal(new TextDecoder().decode(bytes.subarray(header.journal))));
  if (state.envelope.id !== id) throw new Error(`Spool file ${id} holds another message`);
  return state;
}

/**
 * Moves a spool file between queue/ and hold/ durably (rename, then fsync
 * both directories); false when it is gone (delivered meanwhile).
 */
export async function moveFile(from: string, to: string, id: string): Promise<boolean> {
  await Deno.mkdir(to, { recursive: true, mode: 0o700 });
  try {
    await Deno.rename(`${from}/${id}`, `${to}/${id}`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  await syncDir(to);
  await syncDir(from);
  return true;
}

/** Removes a spool file from `dir`; false when it is already gone. */
export async function removeFile(dir: string, id: string): Promise<boolean> {
  try {
    await Deno.remove(`${dir}/${id}`);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
