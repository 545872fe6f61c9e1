/**
 * The two system calls every durable write in skiff is built from: writing a
 * whole buffer (FsFile.write may write less than asked) and fsyncing a
 * directory so a rename or link in it survives a crash (Deno has no
 * fsync(path), so through a read-only handle). Below both the spool
 * (lib/spool/durable.ts, which adds its metrics and group commit) and the
 * Maildir agent, so the helpers exist once.
 */

/** fsyncs a directory so renames, links and creations in it are durable. */
export async function fsyncDir(path: string): Promise<void> {
  const dir = await Deno.open(path, { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/** Writes all of `data` at the file's current position (write may be short). */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}
