/**
 * Notices new maildrop files while the manager runs. Not `Deno.watchFs`:
 * measured on Deno 2.9.6 here, a FIFO created in a watched directory blocks
 * the watcher's thread for good (no event is delivered any more and the
 * process cannot exit), and the maildrop is writable by everyone. Instead
 * the directory's own metadata is polled (one lstat a tick, which never
 * opens anything in it): a changed mtime/ctime means a file came or went;
 * while a drop is still being written (its completeness bit is a chmod,
 * which does not change the directory) the pickup runs on every tick.
 */

/** Options of watchMaildrop. */
export interface MaildropWatch {
  /** Milliseconds between two looks at the directory. */
  intervalMs: number;
  /** Runs a pickup; resolves true while drops are waiting to be completed. */
  onChange: () => Promise<boolean>;
}

/** Starts polling `dir`; close() stops it (and waits for nothing). */
export function watchMaildrop(dir: string, opts: MaildropWatch): { close(): void } {
  let last = "";
  let waiting = false;
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = async () => {
    try {
      const st = await Deno.lstat(dir);
      const seen = `${st.mtime?.getTime()}:${st.ctime?.getTime()}:${st.ino}`;
      if (seen !== last || waiting) {
        last = seen;
        waiting = await opts.onChange();
      }
    } catch { /* missing directory: look again next tick */ }
    if (!closed) timer = setTimeout(tick, opts.intervalMs);
  };
  timer = setTimeout(tick, opts.intervalMs);
  return {
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
