/**
 * The one place durable writes are made (STYLE item 6): data is written,
 * fdatasync'ed, renamed into place in the same file system, and the
 * directory is fsynced so the new name survives a crash. Deno has no
 * fsync(path), so a directory is synced through a read-only handle.
 */
import { metrics } from "../metrics/metrics.ts";
import { fsyncDir, writeAll } from "../sys/durable_io.ts";

export { writeAll };

/** fsyncs a spool directory so renames and creations in it are durable (counted). */
export async function syncDir(path: string): Promise<void> {
  await fsyncDir(path);
  metrics.fsync("dir");
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

/**
 * Runs an expensive sync for many waiters at once: while one run is in
 * flight, every new caller joins a single follow-up run that starts when it
 * ends (the running one may have begun before the caller's write, so it
 * cannot be joined). Under N concurrent callers this costs at most two runs
 * in flight instead of N — the heart of group commit.
 */
export class Coalescer {
  #run: () => Promise<void>;
  #running: Promise<void> | null = null;
  #queued: Promise<void> | null = null;
  #runs = 0;

  /** `run` is the sync to share (an fsync, a syncfs). */
  constructor(run: () => Promise<void>) {
    this.#run = run;
  }

  /** Number of runs actually started. */
  get runs(): number {
    return this.#runs;
  }

  /** Resolves once a run that started after this call has finished. */
  sync(): Promise<void> {
    if (this.#queued) return this.#queued;
    if (!this.#running) return this.#start();
    const after = () => {
      this.#queued = null;
      return this.#start();
    };
    this.#queued = this.#running.then(after, after);
    return this.#queued;
  }

  #start(): Promise<void> {
    this.#runs++;
    const p: Promise<void> = this.#run().finally(() => {
      if (this.#running === p) this.#running = null;
    });
    this.#running = p;
    return p;
  }
}

/**
 * Coalesces concurrent directory fsyncs (see {@link Coalescer}): the
 * directory half of group commit when data is synced file by file.
 */
export class DirSyncer {
  #dirs = new Map<string, Coalescer>();
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
    if (!this.#coalesce) return this.#runOne(path);
    let c = this.#dirs.get(path);
    if (!c) this.#dirs.set(path, c = new Coalescer(() => this.#runOne(path)));
    return c.sync();
  }

  #runOne(path: string): Promise<void> {
    this.#syncs++;
    return syncDir(path);
  }
}

const O_RDONLY = 0;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;

type FsLib = Deno.DynamicLibrary<{
  open: { parameters: ["buffer", "i32"]; result: "i32" };
  syncfs: { parameters: ["i32"]; result: "i32"; nonblocking: true };
  close: { parameters: ["i32"]; result: "i32" };
}>;
let fsLib: FsLib | null | undefined;

function loadFsLib(): FsLib | null {
  if (fsLib !== undefined) return fsLib;
  fsLib = null;
  if (Deno.build.os !== "linux") return null;
  try {
    fsLib = Deno.dlopen("libc.so.6", {
      open: { parameters: ["buffer", "i32"], result: "i32" },
      syncfs: { parameters: ["i32"], result: "i32", nonblocking: true },
      close: { parameters: ["i32"], result: "i32" },
    });
  } catch {
    // No --allow-ffi, or no glibc: callers fall back to per-file fdatasync.
  }
  return fsLib;
}

/**
 * syncfs(2) on the file system holding a directory: one call makes every
 * file written there durable (data, inodes and directory entries), so a
 * batch of messages shares one device flush. Deno has no syncfs and hides
 * file descriptors, so the directory is opened and synced through FFI
 * (libc); the blocking call runs on Deno's FFI thread (nonblocking: true).
 */
export class FsSyncer {
  #fd: number;
  #lib: FsLib;

  private constructor(lib: FsLib, fd: number) {
    this.#lib = lib;
    this.#fd = fd;
  }

  /** Opens `dir`; null when FFI is not allowed or the directory cannot be opened. */
  static open(dir: string): FsSyncer | null {
    const lib = loadFsLib();
    if (!lib) return null;
    const path = new TextEncoder().encode(dir + "\0");
    const fd = lib.symbols.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? null : new FsSyncer(lib, fd);
  }

  /** Flushes the whole file system; rejects if the kernel reports an error. */
  async sync(): Promise<void> {
    if (this.#fd < 0) throw new Error("FsSyncer used after close");
    const rc = await this.#lib.symbols.syncfs(this.#fd);
    // Since Linux 5.8 syncfs also reports writeback errors (EIO, ENOSPC).
    if (rc !== 0) throw new Error("syncfs on the spool file system failed (I/O error?)");
  }

  /** Releases the directory descriptor. */
  close(): void {
    if (this.#fd >= 0) this.#lib.symbols.close(this.#fd);
    this.#fd = -1;
  }
}
