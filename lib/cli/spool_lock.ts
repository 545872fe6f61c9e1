/**
 * One manager (or one one-shot flush) per spool: an exclusive flock on
 * `<spool>/lock`, held for the life of the process, with the holder's pid
 * written inside so `skiff flush` can signal a running manager. Deno's
 * FsFile.lock() blocks and has no try variant, so a lock that is not granted
 * within a short wait counts as held (the pending request ends with the process).
 */

/** A held spool lock. */
export interface SpoolLock {
  writePid(): Promise<void>;
  release(): void;
}

/** Takes the spool lock, or returns null when another process holds it. */
export async function tryLockSpool(spoolDir: string, waitMs = 300): Promise<SpoolLock | null> {
  await Deno.mkdir(spoolDir, { recursive: true, mode: 0o700 });
  const path = `${spoolDir}/lock`;
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const granted = await Promise.race([
    file.lock(true).then(() => true),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), waitMs)),
  ]);
  clearTimeout(timer);
  if (!granted) return null;
  return {
    writePid: async () => {
      await file.truncate(0);
      await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    },
    release: () => {
      try {
        file.close();
      } catch { /* already closed */ }
    },
  };
}

/**
 * Waits for the spool lock without a time limit (the request cannot be
 * cancelled: race it against a deadline and exit, which drops it).
 */
export async function lockSpoolWait(spoolDir: string): Promise<SpoolLock> {
  await Deno.mkdir(spoolDir, { recursive: true, mode: 0o700 });
  const file = await Deno.open(`${spoolDir}/lock`, {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  });
  await file.lock(true);
  return {
    writePid: async () => {
      await file.truncate(0);
      await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    },
    release: () => {
      try {
        file.close();
      } catch { /* already closed */ }
    },
  };
}

/** The pid written in the lock file, or null. */
export async function lockHolderPid(spoolDir: string): Promise<number | null> {
  try {
    const text = await Deno.readTextFile(`${spoolDir}/lock`);
    const pid = Number(text.trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}
