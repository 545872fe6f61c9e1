/**
 * Delivery into an mbox file (the traditional /var/mail/<user> format,
 * mboxrd quoting): a "From sender date" separator line, Return-Path and
 * Delivered-To headers, the message with LF line endings, every line that
 * matches /^>*From / quoted with one more ">", and an empty line at the end.
 *
 * Locking, as mutt, procmail and Postfix's local(8) expect: a dotlock
 * (<file>.lock created with O_EXCL; one older than 5 minutes is stale) and
 * flock(2) on the file itself. A directory where the dotlock cannot be made
 * (no write permission, as in a root-owned /var/mail) falls back to flock
 * alone. A failed write is cut back to the old length, so a reader never
 * sees half a message; the data is fsynced before success is reported.
 */
import { rfc5322Date } from "../smtp/received.ts";
import { DeliveryError, fsDeliveryError } from "./errors.ts";
import { CrlfToLf } from "./maildir.ts";

/** Options of deliverToMbox. */
export interface MboxDelivery {
  path: string;
  returnPath: string;
  deliveredTo: string;
  content: Uint8Array;
  now?: number;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** The asctime(3) date of a "From " line, in UTC. */
export function asctime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${
    String(d.getUTCDate()).padStart(2)
  } ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

/** The bytes appended for one message (pure, for tests). */
export function mboxEntry(opts: MboxDelivery): Uint8Array {
  const conv = new CrlfToLf();
  const lf = new TextDecoder().decode(
    Uint8Array.from([...conv.push(opts.content), ...conv.flush()]),
  );
  const sender = opts.returnPath === "" ? "MAILER-DAEMON" : opts.returnPath.replace(/\s/g, "");
  const body = lf.replace(/^(>*From )/gm, ">$1");
  const head = `From ${sender} ${asctime(opts.now ?? Date.now())}\n` +
    `Return-Path: <${opts.returnPath}>\nDelivered-To: ${opts.deliveredTo}\n`;
  const tail = body.endsWith("\n") ? "\n" : "\n\n";
  return new TextEncoder().encode(head + body + tail);
}

async function dotlock(path: string): Promise<string | null> {
  const lock = `${path}.lock`;
  for (let i = 0; i < 50; i++) {
    try {
      const f = await Deno.open(lock, { write: true, createNew: true, mode: 0o600 });
      f.close();
      return lock;
    } catch (err) {
      if (err instanceof Deno.errors.PermissionDenied) return null; // flock alone
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const st = await Deno.stat(lock).catch(() => null);
      if (st?.mtime && Date.now() - st.mtime.getTime() > 300_000) {
        await Deno.remove(lock).catch(() => {});
        continue;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new DeliveryError(`Mailbox ${path} is locked (${lock})`, { dsn: "4.2.0" });
}

/** Appends one message to the mbox at opts.path. */
export async function deliverToMbox(opts: MboxDelivery): Promise<void> {
  const entry = mboxEntry(opts);
  let lock: string | null = null;
  let file: Deno.FsFile | null = null;
  try {
    lock = await dotlock(opts.path);
    file = await Deno.open(opts.path, { read: true, write: true, create: true, mode: 0o600 });
    await file.lock(true);
    const st = await file.stat();
    if (!st.isFile) {
      throw new DeliveryError(`${opts.path} is not a regular file`, {
        dsn: "5.2.0",
        permanent: true,
      });
    }
    const size = await file.seek(0, Deno.SeekMode.End);
    try {
      let off = 0;
      while (off < entry.length) off += await file.write(entry.subarray(off));
      await file.syncData();
    } catch (err) {
      await file.truncate(size).catch(() => {});
      throw err;
    }
  } catch (err) {
    throw fsDeliveryError(err, `Cannot deliver to mbox ${opts.path}`);
  } finally {
    if (file) {
      await file.unlock().catch(() => {});
      file.close();
    }
    if (lock) await Deno.remove(lock).catch(() => {});
  }
}

export { rfc5322Date };
