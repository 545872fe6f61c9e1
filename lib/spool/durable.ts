/**
 * The one place durable writes are made (STYLE item 6): data is written,
 * fdatasync'ed, renamed into place in the same file system, and the
 * directory is fsynced so the new name survives a crash. Deno has no
 * fsync(path), so a directory is synced through a read-only handle.
 */
import { metrics } from "../metrics/metrics.ts";

/** fsyncs a directory so renames and creations in it are durable. */
export async function syncDir(path: string): Promise<void> {
  const dir = await Deno.open(path, { read: true });
  try {
    await dir.sync();
    metrics.fsync("dir");
  } finally {
    dir.close();
  }
}

/** Writes all of `data` at the file's current position (write may be short). */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/**
 * Writes `data` to `path` durably: a temp file beside it, syncData, rename
 * over `path`, fsync of the directory. A crash leaves the old file or the
 * new one, never a mix; a `*.tmp-*` leftover may remain.
 */
export async function writeFileDurably(path: string, data: Uint8Array): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
  try {
    await writeAll(file, data);
    await file.syncData();
    metrics.fsync("data");
  } catch (e) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  file.close();
  await Deno.rename(tmp, path);
  await syncDir(dir);
}

interface DirState {
  running: Promise<void> | null;
  queued: Promise<void> | null;
}

/**
 * Coalesces concurrent directory fsyncs: while one fsync of a directory is
 * in flight, every new caller joins a single follow-up fsync that starts
 * when it ends (the running one may have begun before the caller's rename,
 * so it cannot be joined). Under N concurrent commits this costs at most
 * two fsyncs in flight instead of N — the dir half of group commit.
 */
export class DirSyncer {
  #dirs = new Map<string, DirState>();
  #coalesce: boolean;
  #syncs = 0;

  /** With `coalesce: false` every call makes its own fsync (for benchmarks). */
  constructor(options: { coalesce?: boolean } = {}) {
    this.#coalesce = options.coalesce ?? true;
  }

  /** Number of fsyncs actually issued. */
  get syncs(): number {
    return this.#syncs;
  }

  /** Resolves once an fsync of `path` that started after this call has finished. */
  sync(path: string): Promise<void> {
    if (!this.#coalesce) return this.#run(path);
    let s = this.#dirs.get(path);
    if (!s) this.#dirs.set(path, s = { running: null, queued: null });
    if (s.queued) return s.queued;
    if (!s.running) return this.#start(path, s);
    const state = s;
    const after = () => {
      state.queued = null;
      return this.#start(path, state);
    };
    s.queued = s.running.then(after, after);
    return s.queued;
  }

  #start(path: string, s: DirState): Promise<void> {
    const p: Promise<void> = this.#run(path).finally(() => {
      if (s.running === p) s.running = null;
    });
    s.running = p;
    return p;
  }

  #run(path: string): Promise<void> {
    this.#syncs++;
    return syncDir(path);
  }
}
