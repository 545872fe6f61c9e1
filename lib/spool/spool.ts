/**
 * The durable spool: one file per message holding a fixed-width header line,
 * the content (streamed in once) and the control journal after it. A message
 * is received into incoming/ and renamed into queue/; anything in incoming/
 * at start-up is a crash leftover. A message written in one piece (the usual
 * case) is sealed: its header carries a CRC-32 of header, content and
 * envelope, so one sync after the rename commits it and a file that a crash
 * left torn in queue/ is recognised on load (it never got a 250). A larger
 * message is synced before its rename and again after it. One file rather
 * than a data and a control file because each file-system call costs a
 * thread hand-off and those calls bound the accept rate; see docs/spool.md
 * for the measurements and the crash-state table.
 */

import { Coalescer, DirSyncer, FsSyncer, syncDir, writeAll } from "./durable.ts";
import { isQueueId, newQueueId } from "./queue_id.ts";
import {
  encodeRecords,
  type Envelope,
  type JournalRecord,
  type MessageState,
  mustSync,
  parseJournal,
  replay,
  TORN_MARK,
} from "./records.ts";
import { crc32 } from "node:zlib";
import { concatBytes } from "../sys/bytes.ts";
import { metrics } from "../metrics/metrics.ts";

/** Content is handed to the kernel in writes of about this size (header included). */
const FLUSH_SIZE = 64 * 1024;
/** A writer's first buffer: a 2 KB message with its Received header and envelope fits. */
const INITIAL_BUFFER = 8 * 1024;
const READ_SIZE = 64 * 1024;
/** load() reads this much first: a 2 KB message and its journal fit. */
const FIRST_READ = 8 * 1024;
const DIGITS = 12;
/** Format 1: a message synced before its rename (streamed ones, and every file before format 2). */
const MAGIC = "skiff-spool 1";
/** Format 2: sealed by a CRC-32, committed by one sync after its rename. */
const MAGIC_SEALED = "skiff-spool 2";
/** Byte length of a format-1 header line (the shortest); content starts right after it. */
export const HEADER_LENGTH = formatHeader({ content: 0, length: 0, journal: 0 }).length;
/** Byte length of a sealed (format-2) header line. */
export const SEALED_HEADER_LENGTH =
  formatHeader({ content: 0, length: 0, journal: 0, crc32: 0 }).length;
/** The sealed header's tail, ` crc32=` and 8 hex digits and "\n": not covered by its own CRC. */
const CRC_FIELD_LENGTH = " crc32=00000000\n".length;
const OFFSETS = `content=(\\d{${DIGITS}}) length=(\\d{${DIGITS}}) journal=(\\d{${DIGITS}})`;
const HEADER_PATTERN = new RegExp(`^${MAGIC} ${OFFSETS}\\n$`);
const SEALED_PATTERN = new RegExp(`^${MAGIC_SEALED} ${OFFSETS} crc32=([0-9a-f]{8})\\n$`);
/** Written first when content outgrows the buffer; never parses as a header. */
const PLACEHOLDER = `${MAGIC} content=${pad(HEADER_LENGTH)} length=${"-".repeat(DIGITS)} journal=${
  "-".repeat(DIGITS)
}\n`;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PLACEHOLDER_BYTES = encoder.encode(PLACEHOLDER);
const SEALED_PREFIX = encoder.encode(MAGIC_SEALED + " ");
/** Room kept for the header at the start of a writer's buffer (the longer, sealed one). */
const HEAD_ROOM = SEALED_HEADER_LENGTH;
const EMPTY = new Uint8Array(0);
const NEWLINE = encoder.encode("\n");
const TORN_REPAIR = encoder.encode(TORN_MARK + "\n");

/**
 * A queue file that can never be delivered as it stands: bad header, a
 * journal line that is not a record, an envelope the SMTP server would have
 * refused. The manager quarantines such a file (never deletes it); I/O
 * errors are not this error and are retried.
 */
export class SpoolCorruptError extends Error {
  /** The message's queue id. */
  readonly id: string;
  constructor(id: string, message: string) {
    super(message);
    this.name = "SpoolCorruptError";
    this.id = id;
  }
}

/**
 * A queue file that a crash left incomplete before its commit's sync: a
 * sealed file whose CRC does not match or whose envelope line is cut short,
 * or a file that is empty, cut inside a sealed header or has zeros in its
 * header. Its message never got a 250 (the
 * 250 waits for the sync that makes the seal hold), so it is not mail anyone
 * was promised; the manager moves it out of queue/ like any corrupt file.
 */
export class SpoolTornError extends SpoolCorruptError {
  constructor(id: string, message: string) {
    super(id, message);
    this.name = "SpoolTornError";
  }
}

/** Byte offsets recorded in a spool file's header line. */
export interface SpoolHeader {
  /** Offset of the first content byte. */
  content: number;
  /** Number of content bytes. */
  length: number;
  /** Offset of the first journal byte (content end, plus "\n" if the content lacks one). */
  journal: number;
  /**
   * Sealed files (format 2) only: CRC-32 of the header line before its
   * ` crc32=` field, then of the bytes from `content` to the end of the
   * envelope line (the journal's first line).
   */
  crc32?: number;
}

/** Options for a Spool. */
export interface SpoolOptions {
  /** Shared so concurrent commits coalesce their queue/ fsyncs; one per Spool by default. */
  dirSyncer?: DirSyncer;
  /**
   * How a commit makes data durable. "syncfs" (default): one syncfs(2) of
   * the spool's file system covers a whole batch of concurrent commits, once
   * for the data and once for the renames (needs --allow-ffi; falls back to
   * "fdatasync" without it). "fdatasync": each file is fdatasync'ed and the
   * coalesced queue/ fsync covers the renames.
   */
  sync?: "syncfs" | "fdatasync";
}

/** Shared syncs of one spool: data before the rename, then the rename itself. */
interface Commits {
  /** Makes written files' data durable; null: fdatasync each file. */
  data: Coalescer | null;
  /** Makes renames into queue/ durable. */
  dir: () => Promise<void>;
  dirRuns: () => number;
}

/**
 * A spool directory: `incoming/` for messages being received, `queue/` for
 * committed ones. load, content, append, remove and path work from any
 * process given the same directory; init belongs to the one process that
 * receives mail (it deletes what is in incoming/).
 */
export class Spool {
  #incoming: string;
  #queue: string;
  #root: string;
  #dirSyncer: DirSyncer;
  #syncMode: "syncfs" | "fdatasync";
  #commits: Commits | null = null;

  /** A spool rooted at `dir`; nothing is touched until init() or another call. */
  constructor(dir: string, options: SpoolOptions = {}) {
    this.#root = dir.length > 1 ? dir.replace(/\/+$/, "") : dir;
    this.#incoming = `${this.#root}/incoming`;
    this.#queue = `${this.#root}/queue`;
    this.#dirSyncer = options.dirSyncer ?? new DirSyncer();
    this.#syncMode = options.sync ?? "syncfs";
  }

  /** Syncs issued so far: shared data syncs (syncfs mode only) and syncs covering renames. */
  get syncs(): { data: number; dir: number; mode: "syncfs" | "fdatasync" } {
    const c = this.#commits;
    if (c?.data) return { data: c.data.runs, dir: c.dirRuns(), mode: "syncfs" };
    return { data: 0, dir: this.#dirSyncer.syncs, mode: "fdatasync" };
  }

  /**
   * The shared data sync (one syncfs for every write before it, coalesced
   * with commits and appends) for writers that append through their own
   * handle (JournalWriter); null in fdatasync mode: sync each file.
   */
  sharedDataSync(): (() => Promise<void>) | null {
    const data = this.#commitPath().data;
    return data ? () => data.sync() : null;
  }

  /** Opens the syncfs handle on first use; keeps fdatasync when FFI is unavailable. */
  #commitPath(): Commits {
    if (this.#commits) return this.#commits;
    const fs = this.#syncMode === "syncfs" ? FsSyncer.open(this.#root) : null;
    if (fs) {
      // One syncfs covers a batch; counted once per kind, as the disk sees it.
      const dir = new Coalescer(() => fs.sync().then(() => metrics.fsync("dir")));
      this.#commits = {
        data: new Coalescer(() => fs.sync().then(() => metrics.fsync("data"))),
        dir: () => dir.sync(),
        dirRuns: () => dir.runs,
      };
    } else {
      const queue = this.#queue;
      this.#commits = {
        data: null,
        dir: () => this.#dirSyncer.sync(queue),
        dirRuns: () => this.#dirSyncer.syncs,
      };
    }
    return this.#commits;
  }

  /** Creates the directories (mode 0700) and deletes half-received files in incoming/. */
  async init(): Promise<{ removedPartials: number }> {
    for (const d of [this.#root, this.#incoming, this.#queue]) {
      await Deno.mkdir(d, { recursive: true, mode: 0o700 });
    }
    let removedPartials = 0;
    for await (const entry of Deno.readDir(this.#incoming)) {
      if (!entry.isFile || !isQueueId(entry.name)) continue;
      await removeIfPresent(`${this.#incoming}/${entry.name}`);
      removedPartials++;
    }
    return { removedPartials };
  }

  /**
   * Starts a message under a new or given id. With a new id nothing touches
   * the disk yet: a message that fits the buffer is written by commit() in
   * one call, so an aborted one costs no file-system call at all. A given id
   * is claimed at once (an empty file in incoming/, O_EXCL).
   */
  async begin(id?: string): Promise<SpoolWriter> {
    const given = id !== undefined;
    id ??= newQueueId();
    checkId(id);
    const partial = `${this.#incoming}/${id}`;
    if (given) await Deno.writeFile(partial, EMPTY, { createNew: true, mode: 0o600 });
    return new SpoolWriter({
      id,
      partial,
      final: this.path(id),
      commits: () => this.#commitPath(),
      claimed: given,
    });
  }

  /** Ids of committed messages, oldest first; other names in queue/ are ignored. */
  async list(): Promise<string[]> {
    const ids: string[] = [];
    for await (const entry of Deno.readDir(this.#queue)) {
      if (entry.isFile && isQueueId(entry.name)) ids.push(entry.name);
    }
    return ids.sort();
  }

  /** Reads the journal (not the content) and replays it. */
  async load(id: string): Promise<MessageState> {
    return (await this.loadWithContent(id)).state;
  }

  /**
   * load(), plus the content when the read that got the journal held all of
   * it (every sealed file, and small old-format ones): a delivery pass then
   * needs no second open of the file to see the message (null otherwise:
   * use content()).
   */
  async loadWithContent(id: string): Promise<{ state: MessageState; content: Uint8Array | null }> {
    const file = await Deno.open(this.path(id), { read: true });
    let journal: Uint8Array;
    let content: Uint8Array | null = null;
    try {
      // Most files are small: one short read gets header, content and journal.
      const first = await readUpTo(file, FIRST_READ);
      const header = parseHeaderOf(first, id);
      const parts: Uint8Array[] = [];
      let more = first.length === FIRST_READ;
      if (header.crc32 !== undefined) {
        // Sealed: written in one piece (at most ~64 KB), so read it all and check the seal.
        const whole = [first];
        while (more) {
          const chunk = await readUpTo(file, READ_SIZE);
          whole.push(chunk);
          more = chunk.length === READ_SIZE;
        }
        const bytes = concatBytes(whole);
        checkSeal(bytes, header, id);
        parts.push(bytes.subarray(header.journal));
        content = bytes.subarray(header.content, header.content + header.length);
      } else if (header.journal <= first.length) {
        parts.push(first.subarray(header.journal));
        content = first.subarray(header.content, header.content + header.length);
      } else {
        await file.seek(header.journal, Deno.SeekMode.Start);
        more = true;
      }
      while (more) {
        const chunk = await readUpTo(file, READ_SIZE);
        parts.push(chunk);
        more = chunk.length === READ_SIZE;
      }
      journal = concatBytes(parts);
    } finally {
      file.close();
    }
    let state: MessageState;
    try {
      state = replay(parseJournal(decoder.decode(journal)));
    } catch (e) {
      throw new SpoolCorruptError(id, `Spool file ${id}: ${(e as Error).message}`);
    }
    if (state.envelope.id !== id) {
      throw new SpoolCorruptError(
        id,
        `Spool file ${id} holds the envelope of ${JSON.stringify(state.envelope.id)}`,
      );
    }
    return { state, content };
  }

  /**
   * The content bytes as a stream read in 64 KB chunks. The file stays open
   * until the stream is read to the end or cancelled: always do one.
   */
  async content(id: string): Promise<{ stream: ReadableStream<Uint8Array>; length: number }> {
    const file = await Deno.open(this.path(id), { read: true });
    let header: SpoolHeader;
    try {
      const head = await readUpTo(file, SEALED_HEADER_LENGTH);
      header = parseHeader(head, id);
      // A seek only moves the file position: synchronous, no thread hand-off.
      if (header.content !== head.length) file.seekSync(header.content, Deno.SeekMode.Start);
    } catch (e) {
      file.close();
      throw e;
    }
    let left = header.length;
    let open = true;
    const close = () => {
      if (open) file.close();
      open = false;
    };
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          if (left === 0) {
            close();
            controller.close();
            return;
          }
          const chunk = await readUpTo(file, Math.min(READ_SIZE, left));
          if (chunk.length === 0) throw new Error(`Spool file ${id} content is truncated`);
          left -= chunk.length;
          controller.enqueue(chunk);
        } catch (e) {
          close();
          controller.error(e);
        }
      },
      cancel: close,
    });
    return { stream, length: header.length };
  }

  /**
   * Appends records in one write, then makes them durable: the journal is
   * the truth. Deferrals alone are not synced (records.ts, mustSync: losing
   * one only brings the next attempt forward). One appender at a time per
   * message. If a crash tore the last line, the same write first completes
   * it with TORN_MARK so parseJournal skips it. In syncfs mode the sync is shared with concurrent appends and
   * commits (group commit); the seeks and the one-byte read of a page just
   * written are synchronous calls that never wait on the disk, so an append
   * costs two thread hand-offs (open, write) plus its share of a sync.
   */
  async append(id: string, records: JournalRecord[]): Promise<void> {
    const path = this.path(id);
    if (records.length === 0) return;
    const lines = encodeRecords(records);
    const durable = mustSync(records);
    const shared = this.#commitPath().data;
    const { file, repair } = await openJournalEnd(path, id);
    try {
      await writeAll(file, repair.length === 0 ? lines : concatBytes([repair, lines]));
      if (!durable) return;
      if (!shared) {
        await file.syncData();
        metrics.fsync("data");
      }
    } finally {
      file.close();
    }
    if (shared) await shared.sync();
  }

  /**
   * Moves a message that can never be delivered out of queue/ into
   * quarantine/ (mode 0700), where nothing schedules it and an operator can
   * look at it, fix it and move it back. Returns the new path. Durable: the
   * rename is followed by an fsync of both directories.
   */
  async quarantine(id: string): Promise<string> {
    const dir = `${this.#root}/quarantine`;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const to = `${dir}/${id}`;
    await Deno.rename(this.path(id), to);
    await syncDir(dir);
    await syncDir(this.#queue);
    return to;
  }

  /** Deletes a committed message; a missing file is not an error. */
  async remove(id: string): Promise<void> {
    await removeIfPresent(this.path(id));
  }

  /** The message's file in queue/ (for workers in child processes). */
  path(id: string): string {
    checkId(id);
    return `${this.#queue}/${id}`;
  }
}

/**
 * Opens a message's spool file at its end for appending journal lines (the
 * one way Spool.append and JournalWriter do it). A crash mid-append can
 * leave the last line unterminated: `repair` (TORN_REPAIR, else empty) must
 * be written before any record, so that line ends in TORN_MARK and replay
 * skips it. The seeks and the one-byte read are synchronous calls that never
 * wait on the disk (the last page is cached), saving three thread hand-offs.
 */
export async function openJournalEnd(
  path: string,
  id: string,
): Promise<{ file: Deno.FsFile; repair: Uint8Array }> {
  const file = await Deno.open(path, { read: true, write: true });
  try {
    const end = file.seekSync(0, Deno.SeekMode.End);
    if (end < HEADER_LENGTH) throw new Error(`Spool file ${id} is too short to be a message`);
    file.seekSync(-1, Deno.SeekMode.End);
    const last = new Uint8Array(1);
    if (file.readSync(last) !== 1) throw new Error(`Spool file ${id} could not be read`);
    return { file, repair: last[0] === NEWLINE[0] ? new Uint8Array(0) : TORN_REPAIR };
  } catch (e) {
    file.close();
    throw e;
  }
}

interface WriterInit {
  id: string;
  partial: string;
  final: string;
  commits: () => Commits;
  /** The partial file already exists, empty (begin with a given id). */
  claimed: boolean;
}

/**
 * One message being received. Content is copied once into a buffer that is
 * handed to the kernel in ~64 KB writes; a message that fits the buffer is
 * written by commit() as header, content and envelope with one writeFile.
 * The file in incoming/ is created only when the buffer first fills.
 * Calls must not overlap.
 */
export class SpoolWriter {
  /** The message's queue id. */
  readonly id: string;
  #file: Deno.FsFile | null = null;
  #partial: string;
  #final: string;
  #commits: () => Commits;
  /**
   * Content waiting to be written; the first HEAD_ROOM bytes are kept for
   * the header (a sealed one fills them; a format-1 one, shorter, ends at HEAD_ROOM).
   */
  #buf: Uint8Array;
  #used = HEAD_ROOM;
  #length = 0;
  #lastByte = -1;
  /** The partial file may exist (a create was attempted). */
  #created = false;
  #state: "open" | "busy" | "committed" | "closed" = "open";

  /** Made by Spool.begin(). */
  constructor(init: WriterInit) {
    this.id = init.id;
    this.#partial = init.partial;
    this.#final = init.final;
    this.#commits = init.commits;
    this.#created = init.claimed;
    this.#buf = new Uint8Array(INITIAL_BUFFER);
  }

  /** Number of content bytes written so far. */
  get length(): number {
    return this.#length;
  }

  /** Adds content bytes; the chunk is copied, so the caller may reuse it. */
  async write(chunk: Uint8Array): Promise<void> {
    this.#enter("write");
    try {
      if (chunk.length === 0) {
        this.#state = "open"; // an empty write must not leave the writer busy
        return;
      }
      this.#length += chunk.length;
      this.#lastByte = chunk[chunk.length - 1];
      let rest = chunk;
      while (rest.length > 0) {
        const room = FLUSH_SIZE - this.#used;
        if (room === 0) {
          await this.#flush();
          continue;
        }
        const n = Math.min(room, rest.length);
        this.#reserve(this.#used + n);
        this.#buf.set(n === rest.length ? rest : rest.subarray(0, n), this.#used);
        this.#used += n;
        rest = rest.subarray(n);
      }
      this.#state = "open";
    } catch (e) {
      await this.#discard();
      throw e;
    }
  }

  /**
   * Writes the envelope record, renames the file incoming/→queue/ and makes
   * both durable. The message is durable (say 250) once this resolves; if it
   * rejects, the partial file is gone unless the rename already happened. A
   * message that fit the buffer is written sealed (format 2) in one call and,
   * in syncfs mode, committed by one syncfs after the rename: a crash before
   * that sync ends can leave a torn file in queue/, which load() recognises by
   * its seal. A streamed one is synced before the rename and again after it.
   * In syncfs mode every sync is shared with concurrent commits (group
   * commit, docs/spool.md).
   */
  async commit(envelope: Envelope): Promise<void> {
    this.#enter("commit");
    let renamed = false;
    try {
      if (envelope.id !== this.id) {
        throw new Error(`Envelope id ${JSON.stringify(envelope.id)} is not ${this.id}`);
      }
      if (envelope.size !== this.#length) {
        throw new Error(
          `Envelope size ${envelope.size} does not match the ${this.#length} content bytes`,
        );
      }
      const record = encodeRecords([{ t: "envelope", ...envelope }]);
      const sep = this.#length > 0 && this.#lastByte !== NEWLINE[0] ? 1 : 0;
      const commits = this.#commits();
      this.#reserve(this.#used + sep + record.length);
      if (sep) this.#buf[this.#used++] = NEWLINE[0];
      this.#buf.set(record, this.#used);
      this.#used += record.length;
      const sealed = this.#file === null;
      if (sealed) await this.#writeSealed(sep, commits.data === null);
      else await this.#finishStreamed(sep, commits.data === null);
      this.#state = "closed";
      this.#buf = EMPTY;
      // A sealed file needs no sync before its rename: one after it covers both.
      if (commits.data !== null && !sealed) await commits.data.sync();
      await Deno.rename(this.#partial, this.#final);
      renamed = true;
      await commits.dir();
      this.#state = "committed";
    } catch (e) {
      if (!renamed) await this.#discard();
      throw e;
    }
  }

  /** Writes the whole file at once with a sealed header: one writeFile (or open, write, fdatasync). */
  async #writeSealed(sep: number, syncData: boolean): Promise<void> {
    const h: SpoolHeader = {
      content: SEALED_HEADER_LENGTH,
      length: this.#length,
      journal: SEALED_HEADER_LENGTH + this.#length + sep,
    };
    const bytes = this.#buf.subarray(0, this.#used);
    // The CRC's header part is the line before its crc32 field, which does not depend on it.
    bytes.set(encoder.encode(formatHeader({ ...h, crc32: 0 })), 0);
    h.crc32 = sealOf(bytes, h, this.#used);
    bytes.set(encoder.encode(formatHeader(h)), 0);
    const exists = this.#created;
    this.#created = true;
    await writeNew(this.#partial, bytes, { syncData, exists });
  }

  /** Writes the tail of a streamed file, then its real format-1 header over the placeholder. */
  async #finishStreamed(sep: number, syncData: boolean): Promise<void> {
    const file = this.#file!;
    await writeAll(file, this.#buf.subarray(HEAD_ROOM, this.#used));
    file.seekSync(0, Deno.SeekMode.Start);
    await writeAll(
      file,
      encoder.encode(formatHeader({
        content: HEADER_LENGTH,
        length: this.#length,
        journal: HEADER_LENGTH + this.#length + sep,
      })),
    );
    if (syncData) {
      await file.syncData();
      metrics.fsync("data");
    }
    file.close();
    this.#file = null;
  }

  /** Closes and deletes the partial file; does nothing after commit(). */
  async abort(): Promise<void> {
    if (this.#state === "committed") return;
    await this.#discard();
  }

  #enter(what: string): void {
    if (this.#state === "busy") {
      throw new Error(`SpoolWriter.${what} for ${this.id} while another call is in progress`);
    }
    if (this.#state !== "open") {
      throw new Error(`SpoolWriter.${what} for ${this.id} after ${this.#state}`);
    }
    this.#state = "busy";
  }

  /** Grows the buffer (doubling) to hold `size` bytes. */
  #reserve(size: number): void {
    if (size <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(size, this.#buf.length * 2));
    grown.set(this.#buf.subarray(0, this.#used));
    this.#buf = grown;
  }

  /** Writes the full buffer; the first flush creates the file and writes a placeholder header. */
  async #flush(): Promise<void> {
    if (this.#file === null) {
      const exists = this.#created;
      this.#created = true;
      this.#file = await Deno.open(this.#partial, openNew(exists));
      // Streamed files are format 1: the shorter header ends where the content starts.
      const at = HEAD_ROOM - HEADER_LENGTH;
      this.#buf.set(PLACEHOLDER_BYTES, at);
      await writeAll(this.#file, this.#buf.subarray(at, this.#used));
    } else {
      await writeAll(this.#file, this.#buf.subarray(HEAD_ROOM, this.#used));
    }
    this.#used = HEAD_ROOM;
  }

  async #discard(): Promise<void> {
    try {
      this.#file?.close();
    } catch {
      // Already closed.
    }
    this.#file = null;
    this.#state = "closed";
    this.#buf = EMPTY;
    if (this.#created) await removeIfPresent(this.#partial);
  }
}

/** Open options for a partial file: created with O_EXCL unless begin() claimed it already. */
function openNew(exists: boolean): Deno.OpenOptions {
  return exists
    ? { write: true, truncate: true, mode: 0o600 }
    : { write: true, createNew: true, mode: 0o600 };
}

/** Creates `path` holding `data`: one writeFile, or (fdatasync mode) open, write, fdatasync. */
async function writeNew(
  path: string,
  data: Uint8Array,
  o: { syncData: boolean; exists: boolean },
): Promise<void> {
  if (!o.syncData) {
    await Deno.writeFile(path, data, o.exists ? { mode: 0o600 } : { createNew: true, mode: 0o600 });
    return;
  }
  const file = await Deno.open(path, openNew(o.exists));
  try {
    await writeAll(file, data);
    await file.syncData();
  } finally {
    file.close();
  }
}

/**
 * The header line for the given offsets (fixed width: 12 digits each); with
 * `crc32`, the sealed (format-2) line.
 */
export function formatHeader(h: SpoolHeader): string {
  const offsets = `content=${pad(h.content)} length=${pad(h.length)} journal=${pad(h.journal)}`;
  if (h.crc32 === undefined) return `${MAGIC} ${offsets}\n`;
  return `${MAGIC_SEALED} ${offsets} crc32=${h.crc32.toString(16).padStart(8, "0")}\n`;
}

/** Parses the header line (either format) at the start of `bytes`, or throws naming `id`. */
export function parseHeader(bytes: Uint8Array, id = "?"): SpoolHeader {
  const sealed = startsWith(bytes, SEALED_PREFIX);
  const size = sealed ? SEALED_HEADER_LENGTH : HEADER_LENGTH;
  const m = (sealed ? SEALED_PATTERN : HEADER_PATTERN).exec(
    decoder.decode(bytes.subarray(0, size)),
  );
  if (!m) throw new Error(`Spool file ${id} has no valid header (incomplete or not a spool file)`);
  const h: SpoolHeader = { content: Number(m[1]), length: Number(m[2]), journal: Number(m[3]) };
  if (sealed) h.crc32 = parseInt(m[4], 16);
  if (h.content < size || h.journal < h.content + h.length) {
    throw new Error(`Spool file ${id} has inconsistent header offsets`);
  }
  return h;
}

/**
 * parseHeader for load(): a file that is empty, cut inside a sealed header
 * or has zeros in its header is what a crash leaves of a file whose data
 * had not all reached the disk when its rename did (SpoolTornError); any
 * other bad header is corruption.
 */
function parseHeaderOf(bytes: Uint8Array, id: string): SpoolHeader {
  try {
    return parseHeader(bytes, id);
  } catch (e) {
    const head = bytes.subarray(0, SEALED_HEADER_LENGTH);
    const cut = head.length < SEALED_HEADER_LENGTH &&
      startsWith(SEALED_PREFIX, head.subarray(0, SEALED_PREFIX.length));
    if (head.length === 0 || head.includes(0) || cut) {
      throw new SpoolTornError(
        id,
        `Spool file ${id} is ${
          head.length === 0 ? "empty" : cut ? "shorter than its header" : "zero-filled"
        }: torn by a crash before its commit completed (never acknowledged)`,
      );
    }
    throw new SpoolCorruptError(id, (e as Error).message);
  }
}

/** The CRC-32 that seals a file: header line up to its crc32 field, content, envelope line. */
export function sealOf(bytes: Uint8Array, h: SpoolHeader, envelopeEnd: number): number {
  const head = bytes.subarray(0, SEALED_HEADER_LENGTH - CRC_FIELD_LENGTH);
  return crc32(bytes.subarray(h.content, envelopeEnd), crc32(head));
}

/**
 * Checks a sealed file's CRC over `bytes` (the file from its start), or
 * throws SpoolTornError: a crash before the commit's sync can leave the
 * renamed file short, zero-filled or holding stale blocks, and the seal is
 * what tells such a file (never acknowledged) from a committed one.
 */
export function checkSeal(bytes: Uint8Array, h: SpoolHeader, id = "?"): void {
  const end = bytes.indexOf(NEWLINE[0], h.journal);
  const why = end < 0
    ? "its envelope line is incomplete"
    : sealOf(bytes, h, end + 1) !== h.crc32
    ? "its CRC-32 does not match"
    : null;
  if (why === null) return;
  throw new SpoolTornError(
    id,
    `Spool file ${id} fails its seal (${why}): torn by a crash before its commit completed ` +
      "(never acknowledged), or changed since it was written",
  );
}

/**
 * A sealed file's bytes with its CRC-32 computed again, for a tool (or a
 * test) that edits a queue file on purpose; format-1 bytes come back as
 * they are. Throws if the bytes have no envelope line.
 */
export function reseal(bytes: Uint8Array): Uint8Array {
  const h = parseHeader(bytes);
  if (h.crc32 === undefined) return bytes;
  const end = bytes.indexOf(NEWLINE[0], h.journal);
  if (end < 0) throw new Error("Spool file has no complete envelope line to seal");
  const out = bytes.slice();
  const hex = sealOf(out, h, end + 1).toString(16).padStart(8, "0");
  out.set(encoder.encode(hex), SEALED_HEADER_LENGTH - 9);
  return out;
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

function pad(n: number): string {
  return String(n).padStart(DIGITS, "0");
}

function checkId(id: string): void {
  if (!isQueueId(id)) throw new Error(`Invalid queue id ${JSON.stringify(id)}`);
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Reads until `size` bytes or end of file (spool files only); a shorter result means end of file. */
async function readUpTo(file: Deno.FsFile, size: number): Promise<Uint8Array> {
  const buf = new Uint8Array(size);
  let got = 0;
  while (got < size) {
    const want = size - got;
    const n = await file.read(buf.subarray(got));
    if (n === null) break;
    got += n;
    // On a regular file a short read only happens at end of file: stop
    // instead of paying another call (a thread hand-off) to learn it.
    if (n < want) break;
  }
  return buf.subarray(0, got);
}
