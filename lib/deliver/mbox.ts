/**
 * Delivery into an mbox file (the traditional /var/mail/<user> format,
 * mboxrd quoting): a "From sender date" separator line, Return-Path and
 * Delivered-To headers, the message with LF line endings, every line that
 * matches /^>*From / quoted with one more ">", and an empty line at the end.
 *
 * The mailbox is opened with O_NOFOLLOW|O_APPEND and refused when it is not
 * a regular file with one link owned by the delivering uid (see
 * deliverToMbox). Locking, as mutt, procmail and Postfix's local(8) expect: a dotlock
 * (<file>.lock created with O_EXCL; one older than 5 minutes is stale) and
 * flock(2) on the file itself. A directory where the dotlock cannot be made
 * (no write permission, as in a root-owned /var/mail) falls back to flock
 * alone. A failed write is cut back to the old length, so a reader never
 * sees half a message; the data is fsynced before success is reported.
 */
import { rfc5322Date } from "../smtp/received.ts";
import { DeliveryError, fsDeliveryError } from "./errors.ts";
import { CrlfToLf } from "./maildir.ts";
import { checkSharedDir, safeOpenAppend, UnsafeFileError } from "../sys/safe_open.ts";

/** Options of deliverToMbox. */
export interface MboxDelivery {
  path: string;
  returnPath: string;
  deliveredTo: string;
  content: Uint8Array;
  now?: number;
  /** The uid that must own the mailbox: the delivering process's own. */
  uid: number;
  /** A mailbox directory (mbox_dir, a route's path): refused when others may write it, unless sticky. */
  sharedDir?: boolean;
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

/** The bytes appended for one message (pure, for tests). Bytes in, bytes out: 8-bit mail stays exact. */
export function mboxEntry(opts: Omit<MboxDelivery, "uid">): Uint8Array {
  const conv = new CrlfToLf();
  const a = conv.push(opts.content);
  const b = conv.flush();
  const lf = new Uint8Array(a.length + b.length);
  lf.set(a);
  lf.set(b, a.length);
  const sender = opts.returnPath === "" ? "MAILER-DAEMON" : opts.returnPath.replace(/\s/g, "");
  const head = new TextEncoder().encode(
    `From ${sender} ${asctime(opts.now ?? Date.now())}\n` +
      `Return-Path: <${opts.returnPath}>\nDelivered-To: ${opts.deliveredTo}\n`,
  );
  const body = quoteFromLines(lf);
  const tail = body.length > 0 && body[body.length - 1] === 0x0a ? 1 : 2;
  const out = new Uint8Array(head.length + body.length + tail);
  out.set(head);
  out.set(body, head.length);
  out.fill(0x0a, head.length + body.length);
  return out;
}

const FROM_ = [0x46, 0x72, 0x6f, 0x6d, 0x20]; // "From "

/** mboxrd: every line matching /^>*From / gets one more ">", counted on bytes. */
export function quoteFromLines(lf: Uint8Array): Uint8Array {
  const starts: number[] = [];
  for (let i = 0; i < lf.length; i = lf.indexOf(0x0a, i) + 1 || lf.length) {
    let j = i;
    while (j < lf.length && lf[j] === 0x3e) j++;
    if (FROM_.every((c, k) => lf[j + k] === c)) starts.push(i);
  }
  if (starts.length === 0) return lf;
  const out = new Uint8Array(lf.length + starts.length);
  let from = 0, to = 0;
  for (const st of starts) {
    out.set(lf.subarray(from, st), to);
    to += st - from;
    out[to++] = 0x3e;
    from = st;
  }
  out.set(lf.subarray(from), to);
  return out;
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

/**
 * Appends one message to the mbox at opts.path, as the process's own uid
 * (the worker runs as the recipient): the directory may not be writable by
 * others unless sticky, and the mailbox is opened without following a
 * symlink and must be a regular file with one link owned by this uid
 * (lib/sys/safe_open.ts), as Postfix's local(8) requires. A refused mailbox
 * is deferred (4.2.0) with the reason, so an operator can repair it; its
 * content is never read.
 */
export async function deliverToMbox(opts: MboxDelivery): Promise<void> {
  const entry = mboxEntry(opts);
  let lock: string | null = null;
  let file: Deno.FsFile | null = null;
  try {
    if (opts.sharedDir) await checkSharedDir(opts.path.slice(0, opts.path.lastIndexOf("/")) || "/");
    lock = await dotlock(opts.path);
    file = await safeOpenAppend(opts.path, {
      owners: [opts.uid],
      createMode: 0o600,
    });
    await file.lock(true);
    const size = (await file.stat()).size;
    try {
      let off = 0;
      while (off < entry.length) off += await file.write(entry.subarray(off));
      await file.syncData();
    } catch (err) {
      await file.truncate(size).catch(() => {});
      throw err;
    }
  } catch (err) {
    if (err instanceof UnsafeFileError) {
      throw new DeliveryError(`Mailbox refused: ${err.message}`, { dsn: "4.2.0" });
    }
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
