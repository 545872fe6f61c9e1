/**
 * Opening a file that someone else may control (a user's ~/.forward, an mbox
 * in a shared directory, a drop in the world-writable maildrop) without
 * following a symlink and without blocking on a FIFO or device, then judging
 * the open descriptor — not the name, which can be swapped between a check
 * and the open (Postfix's safe_open(3) and local(8) make the same checks:
 * regular file, one link, right owner, not writable by others).
 *
 * What works under Deno 2.9.6, measured here (strace): `Deno.open` has no
 * O_NOFOLLOW or O_NONBLOCK. `node:fs` `open(path, number)` passes numeric
 * flags to open(2), and O_NONBLOCK is honoured (a FIFO opens at once, or
 * ENXIO for writing; the descriptor is close-on-exec), but with granular
 * permissions (`--allow-read`, as skiff runs; not with `-A`) Deno first
 * resolves symlinks in the path for its permission check and opens the
 * resolved path, so O_NOFOLLOW never sees the symlink. FFI on libc open(2)
 * would need --allow-ffi, which delivery children drop. So this is
 * Postfix's portable safe_open: lstat the name (a symlink or non-regular
 * file is refused unopened), open it O_NONBLOCK|O_NOFOLLOW, fstat the
 * descriptor and require the same device and inode as the lstat (a name
 * swapped in between — for a symlink, FIFO or anything else — is refused),
 * then judge the descriptor's links, owner and mode. `node:fs` has no
 * flock, so an mbox is opened a second time with `Deno.open` (no create)
 * for a lockable `Deno.FsFile`, used only when it is the same inode.
 * (Re-opening /proc/self/fd/N would avoid that, but Deno demands
 * --allow-all for it.)
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readSync,
  type Stats,
} from "node:fs";
import { type FileHandle, lstat, open } from "node:fs/promises";

const { O_RDONLY, O_WRONLY, O_APPEND, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = constants;

/** A file refused for what it is (symlink, FIFO, links, owner, mode, size); `reason` names it. */
export class UnsafeFileError extends Error {
  constructor(readonly path: string, readonly reason: string) {
    super(`Refused ${path}: ${reason}`);
    this.name = "UnsafeFileError";
  }
}

/** What the open descriptor must be. */
export interface FileRules {
  /** Allowed owner uids; absent = anyone. */
  owners?: readonly number[];
  /** Refuse a file writable by its group or by others (.forward, :include:). */
  noGroupOtherWrite?: boolean;
  /** Refuse a file writable by others. */
  noOtherWrite?: boolean;
}

/** Judges an open descriptor's metadata; throws UnsafeFileError naming the first problem. */
export function checkStats(path: string, st: Stats, rules: FileRules): void {
  if (st.isSymbolicLink()) throw new UnsafeFileError(path, "a symbolic link");
  if (!st.isFile()) throw new UnsafeFileError(path, `not a regular file (${kindOf(st)})`);
  if (st.nlink !== 1) throw new UnsafeFileError(path, `has ${st.nlink} hard links`);
  if (rules.owners && !rules.owners.includes(st.uid)) {
    throw new UnsafeFileError(path, `owned by uid ${st.uid}, not ${rules.owners.join(" or ")}`);
  }
  if (rules.noGroupOtherWrite && (st.mode & 0o022) !== 0) {
    throw new UnsafeFileError(path, "writable by group or others");
  }
  if (rules.noOtherWrite && (st.mode & 0o002) !== 0) {
    throw new UnsafeFileError(path, "writable by others");
  }
}

function kindOf(st: Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device";
  if (st.isDirectory()) return "a directory";
  if (st.isSocket()) return "a socket";
  return "not a file";
}

/** Maps open(2) errors about the name itself to UnsafeFileError; others pass through. */
function openError(path: string, err: unknown): unknown {
  const code = (err as { code?: string }).code;
  if (code === "ELOOP") return new UnsafeFileError(path, "a symbolic link");
  if (code === "ENXIO") return new UnsafeFileError(path, "a FIFO or socket");
  return err;
}

/** lstat(2) of a name; null when it does not exist. */
async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
}

/** The descriptor must be the inode the name showed (nothing swapped in between). */
function sameFile(path: string, named: Stats, opened: Stats): void {
  if (named.dev !== opened.dev || named.ino !== opened.ino) {
    throw new UnsafeFileError(path, "changed while opened");
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/** Options of safeReadFile. */
export interface ReadRules extends FileRules {
  /** Largest content accepted, in bytes; one byte more is read to see a larger file. */
  limit: number;
  /** Read the content only when this holds for the checked descriptor (else `skipped`). */
  readIf?: (st: Stats) => boolean;
}

/** A file read safely, with the metadata of the descriptor it was read from. */
export interface SafeRead {
  bytes: Uint8Array;
  uid: number;
  /** The descriptor's metadata. */
  stat: Stats;
  /** True when `readIf` said no: `bytes` is empty. */
  skipped: boolean;
}

/**
 * Reads a file without following a symlink or blocking on a FIFO; null when
 * it does not exist. Throws UnsafeFileError when the descriptor breaks a rule
 * or holds more than `limit` bytes (however the file grew after any check).
 */
export async function safeReadFile(path: string, rules: ReadRules): Promise<SafeRead | null> {
  const named = await lstatOrNull(path);
  if (named === null) return null;
  checkStats(path, named, rules);
  let fh: FileHandle;
  try {
    fh = await open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    if (isMissing(err)) return null;
    throw openError(path, err);
  }
  try {
    const st = await fh.stat();
    sameFile(path, named, st);
    checkStats(path, st, rules);
    if (rules.readIf && !rules.readIf(st)) {
      return { bytes: new Uint8Array(0), uid: st.uid, stat: st, skipped: true };
    }
    const buf = new Uint8Array(Math.min(rules.limit + 1, Math.max(st.size, 0) + 1, 1 << 30));
    let got = 0;
    let chunk = buf;
    while (true) {
      if (got === chunk.length) {
        if (got > rules.limit) break;
        // Grown since fstat: read on, still bounded by limit + 1.
        const next = new Uint8Array(Math.min(rules.limit + 1, got * 2 + 4096));
        next.set(chunk);
        chunk = next;
      }
      const { bytesRead } = await fh.read(chunk, got, chunk.length - got, null);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got > rules.limit) throw new UnsafeFileError(path, `larger than ${rules.limit} bytes`);
    return { bytes: chunk.subarray(0, got), uid: st.uid, stat: st, skipped: false };
  } finally {
    await fh.close();
  }
}

/**
 * The synchronous form of safeReadFile for text (the router is synchronous):
 * null when the file is missing, refused or not UTF-8.
 */
export function safeReadTextSync(path: string, rules: ReadRules): string | null {
  let fd: number;
  let named: Stats;
  try {
    named = lstatSync(path);
    checkStats(path, named, rules);
    fd = openSync(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    sameFile(path, named, st);
    checkStats(path, st, rules);
    const buf = new Uint8Array(rules.limit + 1);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, null);
      if (n === 0) break;
      got += n;
    }
    if (got > rules.limit) return null;
    return new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, got));
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Options of safeOpenAppend. */
export interface AppendRules extends FileRules {
  /** Create the file (O_CREAT|O_EXCL, never through a symlink) when missing, with this mode. */
  createMode?: number;
}

/**
 * Opens a file for appending without following a symlink or blocking on a
 * FIFO, checks the descriptor, and returns it as a Deno.FsFile (lockable).
 * A missing file is created exclusively when `createMode` is given.
 */
export async function safeOpenAppend(path: string, rules: AppendRules): Promise<Deno.FsFile> {
  let fh: FileHandle | null = null;
  let named: Stats | null = null;
  for (let i = 0; i < 2 && fh === null; i++) {
    named = await lstatOrNull(path);
    if (named) checkStats(path, named, rules);
    try {
      fh = await open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK);
    } catch (err) {
      if (!isMissing(err) || rules.createMode === undefined) throw openError(path, err);
      try {
        const flags = O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK;
        fh = await open(path, flags, rules.createMode);
      } catch (err2) {
        // Someone created it in between: open what is there now, with the same checks.
        if ((err2 as { code?: string }).code !== "EEXIST") throw openError(path, err2);
      }
    }
  }
  if (fh === null) throw new UnsafeFileError(path, "keeps changing while opened");
  try {
    const st = await fh.stat();
    // Created here: the name must now show what was created.
    sameFile(path, named ?? await lstat(path), st);
    checkStats(path, st, rules);
    // A second open by name, only to get a lockable Deno.FsFile: it is used
    // only when it is the very inode checked above (Postfix's safe_open
    // compares the same way). Deno refuses /proc/self/fd/N without --allow-all.
    const file = await Deno.open(path, { write: true, append: true });
    const again = await file.stat();
    if (again.dev !== st.dev || again.ino !== st.ino) {
      file.close();
      throw new UnsafeFileError(path, "changed while opened");
    }
    return file;
  } finally {
    await fh.close();
  }
}

/**
 * Refuses a directory writable by others unless it is sticky (then nobody
 * can remove or rename another user's file in it), as Postfix's local(8)
 * asks of a mail spool directory.
 */
export async function checkSharedDir(dir: string): Promise<void> {
  const st = await Deno.stat(dir);
  if (!st.isDirectory) throw new UnsafeFileError(dir, "not a directory");
  const mode = st.mode ?? 0;
  if ((mode & 0o002) !== 0 && (mode & 0o1000) === 0) {
    throw new UnsafeFileError(dir, "writable by others and not sticky (chmod +t)");
  }
}
