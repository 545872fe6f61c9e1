/**
 * The queue listing (mailq, `skiff queue list`, `status`, /queue.json) as a
 * stream: the ids of queue/ and hold/ are read and sorted first (ids sort by
 * creation time, so this is oldest first), then each message's journal is
 * read and summarised in slices. Only the ids are held for the whole
 * listing; each slice's entries are handed on and dropped, so memory stays
 * flat however long the queue is (issue 13: one JSON document for 100,000
 * messages took 467 MiB and 104 s).
 *
 * A slice reads its files with synchronous calls: through the async ops
 * each open/read/close waits for a thread hand-off, and the old listing's
 * async readFile took about twice the time per file of the synchronous
 * calls here. A slice stops after SLICE_FILES files or SLICE_MS of work,
 * whichever comes first, and the next one starts on a later turn of the
 * event loop (nextTurn), so a manager listing its queue keeps serving SMTP
 * in between.
 */
import { setImmediate } from "node:timers";
import { parseHeader } from "../spool/spool.ts";
import { isQueueId } from "../spool/queue_id.ts";
import { holdDir, queueDir } from "../spool/queue_files.ts";
import type { MessageState } from "../spool/records.ts";
import { type ListedRecipient, listedRecipients, summarizeJournal } from "./journal_summary.ts";

/** Where a message is: Postfix's queue names. */
export type QueueName = "active" | "deferred" | "incoming" | "hold";

/** One message as `skiff queue list --json` prints it (like `postqueue -j`). */
export interface QueueEntry {
  queue_name: QueueName;
  queue_id: string;
  /** Epoch seconds. */
  arrival_time: number;
  message_size: number;
  sender: string;
  recipients: ListedRecipient[];
}

/** A queue file that is there but cannot be read (bad header, bad journal): named, not hidden. */
export interface UnreadableEntry {
  queue_id: string;
  error: string;
}

/** One item of a listing. */
export type ListItem = QueueEntry | UnreadableEntry;

/** True for an item that reports an unreadable file. */
export function isUnreadable(item: ListItem): item is UnreadableEntry {
  return typeof (item as UnreadableEntry).error === "string";
}

/** What the end of a listing says: counts by queue, bytes, unreadable files. */
export interface ListTotals {
  count: number;
  bytes: number;
  unreadable: number;
  queues: Record<QueueName, number>;
  /** The oldest arrival (epoch seconds) and its id; null for an empty queue. */
  oldest: { queue_id: string; arrival_time: number } | null;
}

/** Fresh, zero totals. */
export function emptyTotals(): ListTotals {
  return {
    count: 0,
    bytes: 0,
    unreadable: 0,
    queues: { active: 0, deferred: 0, incoming: 0, hold: 0 },
    oldest: null,
  };
}

/** Adds one item to running totals. */
export function addToTotals(t: ListTotals, item: ListItem): void {
  if (isUnreadable(item)) {
    t.unreadable++;
    return;
  }
  t.count++;
  t.bytes += item.message_size;
  t.queues[item.queue_name]++;
  if (t.oldest === null || item.arrival_time < t.oldest.arrival_time) {
    t.oldest = { queue_id: item.queue_id, arrival_time: item.arrival_time };
  }
}

/** Files read per slice at most. */
const SLICE_FILES = 256;
/** Work per slice at most before the event loop gets a turn, ms. */
const SLICE_MS = 5;
/** Most files hold header, a small message and its journal in this much. */
const FIRST_READ = 8 * 1024;
const CHUNK = 64 * 1024;
/** A journal longer than this is reported, not read (a real one is a few KB). */
const MAX_JOURNAL = 8 * 1024 * 1024;

const decoder = new TextDecoder();

/** Options of a listing. */
export interface ListOptions {
  /** Ids being delivered now (asked once per slice, so the marks stay current). */
  activeIds?: () => Set<string>;
  /** Files per slice (tests use small ones to cross slice boundaries). */
  sliceFiles?: number;
}

/**
 * Every queued and held message, oldest first (by queue id), a slice at a
 * time. A file removed while we look is skipped (delivered meanwhile); a
 * file that cannot be read is an UnreadableEntry in its place.
 */
export async function* streamQueue(
  spoolDir: string,
  opts: ListOptions = {},
): AsyncGenerator<ListItem[]> {
  const queued = await listIds(queueDir(spoolDir));
  const held = await listIds(holdDir(spoolDir));
  const sliceFiles = Math.max(1, opts.sliceFiles ?? SLICE_FILES);
  const buf = new Uint8Array(FIRST_READ);
  let q = 0;
  let h = 0;
  while (q < queued.length || h < held.length) {
    const active = opts.activeIds?.() ?? new Set<string>();
    const started = performance.now();
    const out: ListItem[] = [];
    for (let n = 0; n < sliceFiles && (q < queued.length || h < held.length); n++) {
      // Two sorted lists merged by id: one listing, oldest first, as ls would sort it.
      const fromHold = q >= queued.length || (h < held.length && held[h] < queued[q]);
      const id = fromHold ? held[h++] : queued[q++];
      const dir = fromHold ? holdDir(spoolDir) : queueDir(spoolDir);
      const item = readItem(`${dir}/${id}`, id, fromHold, active, buf);
      if (item) out.push(item);
      if (performance.now() - started > SLICE_MS) break;
    }
    if (out.length > 0) yield out;
    await nextTurn();
  }
}

/** Longest run of slices without letting the runtime poll its sockets, ms. */
const PARK_MS = 10;
/** Directory entries taken between two turns of the event loop. */
const DIR_SLICE = 4096;

/**
 * Queue ids in a directory (validated names only), sorted; [] when it does
 * not exist. Like the spool's idsIn, but gives the event loop a turn every
 * DIR_SLICE names: the entries of 100,000 files otherwise came as one
 * unbroken run of microtasks (a 150-280 ms pause here under load).
 */
async function listIds(dir: string): Promise<string[]> {
  const ids: string[] = [];
  try {
    let n = 0;
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && isQueueId(e.name)) ids.push(e.name);
      if (++n % DIR_SLICE === 0) await nextTurn();
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return ids.sort();
}

let lastPark = 0;

/**
 * Resolves on the next turn of the event loop. Usually through
 * setImmediate, which lets timers and settled operations run at once; but
 * at least every PARK_MS through a timer, which lets the runtime wait on
 * its sockets: with setImmediate alone it never did, and new connections
 * to the manager waited 0.6-1 s each while 100,000 messages were listed
 * (timers kept firing: a timer-based loop-lag probe saw nothing).
 */
function nextTurn(): Promise<void> {
  const now = performance.now();
  if (now - lastPark < PARK_MS) return new Promise((resolve) => setImmediate(resolve));
  lastPark = now;
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Collects a whole listing (small queues, the status page's snapshot). */
export async function collectQueue(spoolDir: string, opts: ListOptions = {}): Promise<ListItem[]> {
  const all: ListItem[] = [];
  for await (const slice of streamQueue(spoolDir, opts)) all.push(...slice);
  return all;
}

function readItem(
  path: string,
  id: string,
  held: boolean,
  active: Set<string>,
  buf: Uint8Array,
): ListItem | null {
  let text: string;
  try {
    text = readJournalSync(path, id, buf);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null; // delivered and removed meanwhile
    return { queue_id: id, error: (err as Error).message };
  }
  try {
    const s = summarizeJournal(text);
    if (s.id !== id) throw new Error(`holds the envelope of ${JSON.stringify(s.id)}`);
    return {
      queue_name: held
        ? "hold"
        : active.has(id)
        ? "active"
        : s.recipients.some((r) => r.status === "deferred")
        ? "deferred"
        : "incoming",
      queue_id: id,
      arrival_time: Math.floor(s.received / 1000),
      message_size: s.size,
      sender: s.from,
      recipients: listedRecipients(s),
    };
  } catch (err) {
    return { queue_id: id, error: `Spool file ${id}: ${(err as Error).message}` };
  }
}

/**
 * The journal of one spool file, read synchronously: one read for a small
 * message, else the header, a seek past the content and the journal only.
 */
function readJournalSync(path: string, id: string, buf: Uint8Array): string {
  const file = Deno.openSync(path, { read: true });
  try {
    const n = readFullSync(file, buf);
    const header = parseHeader(buf.subarray(0, n), id);
    if (n < buf.length) {
      if (header.journal > n) throw new Error(`Spool file ${id} ends before its journal`);
      return decoder.decode(buf.subarray(header.journal, n));
    }
    const parts: Uint8Array[] = [];
    let size = 0;
    if (header.journal < n) {
      parts.push(buf.slice(header.journal, n));
      size = n - header.journal;
    } else {
      file.seekSync(header.journal, Deno.SeekMode.Start);
    }
    for (;;) {
      const chunk = new Uint8Array(CHUNK);
      const got = readFullSync(file, chunk);
      parts.push(chunk.subarray(0, got));
      size += got;
      if (size > MAX_JOURNAL) {
        throw new Error(`Spool file ${id} has a journal over ${MAX_JOURNAL} bytes`);
      }
      if (got < CHUNK) break;
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return decoder.decode(all);
  } finally {
    file.close();
  }
}

/** Fills `buf` or stops at end of file; returns the bytes read. */
function readFullSync(file: Deno.FsFile, buf: Uint8Array): number {
  let got = 0;
  while (got < buf.length) {
    const want = buf.length - got;
    const n = file.readSync(buf.subarray(got));
    if (n === null || n === 0) break;
    got += n;
    // On a regular file a short read only happens at end of file: stop
    // instead of paying another call to learn it (as Spool.load does).
    if (n < want) break;
  }
  return got;
}

/** A message found in queue/ or hold/. */
export interface Found {
  id: string;
  held: boolean;
  state: MessageState;
}

/** The listing entry of a message. */
export function entryOf(f: Found, active: Set<string>): QueueEntry {
  const open = f.state.recipients.filter((r) => r.status === "pending" || r.status === "deferred");
  const queueName: QueueName = f.held
    ? "hold"
    : active.has(f.id)
    ? "active"
    : open.some((r) => r.status === "deferred")
    ? "deferred"
    : "incoming";
  return {
    queue_name: queueName,
    queue_id: f.id,
    arrival_time: Math.floor(f.state.envelope.received / 1000),
    message_size: f.state.envelope.size,
    sender: f.state.envelope.from,
    recipients: f.state.recipients.map((r) => ({
      address: r.address,
      status: r.status,
      ...(r.status === "deferred" && r.text ? { delay_reason: r.text } : {}),
      attempts: r.attempts,
      ...(r.status === "deferred" ? { next_attempt: Math.floor(r.nextAttempt / 1000) } : {}),
    })),
  };
}
