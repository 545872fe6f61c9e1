/**
 * Local delivery into a Maildir (https://cr.yp.to/proto/maildir.html): the
 * message is written under tmp/, made durable, then hard-linked into new/,
 * so a reader never sees a partial message and a crash leaves at most a
 * stray file in tmp/ (which Maildir readers clean up after 36 hours).
 *
 * Line endings: the spool stores messages as they travel, with CRLF. Files in
 * a Maildir use the local convention, LF — Dovecot, mutt and other MUAs read
 * them as Unix text and would otherwise show a stray CR on every line (this
 * is what Postfix's local(8) and qmail do too). So CRLF becomes LF while
 * streaming; a CR not followed by LF is kept as it is.
 *
 * Crash states, in order:
 *  1. tmp/ file partly written: not in new/, so never seen; left for the
 *     36-hour tmp/ cleanup; the queue retries (the failure was never reported
 *     as success).
 *  2. tmp/ file complete and synced, not linked: as 1.
 *  3. linked into new/ but new/ not yet synced: the link may be lost by a
 *     power cut; the queue still holds the recipient as undelivered and
 *     retries, so at worst the message arrives twice (at-least-once).
 *  4. new/ synced: delivered; this function returns.
 */

import { DeliveryError, fsDeliveryError } from "../mail/delivery_error.ts";
import { mailboxName } from "../mail/address.ts";
import { CrlfToLf } from "./crlf.ts";
// Not lib/spool/durable.ts: its syncDir counts spool fsyncs in the metrics.
import { fsyncDir as syncDir, writeAll } from "../sys/durable_io.ts";

/** Options of deliverToMaildir. */
export interface MaildirDelivery {
  /** Maildir root; the mailbox is `${root}/${user}/`. */
  root: string;
  /** Local part of the recipient; lower-cased to name the mailbox. */
  user: string;
  /** Envelope sender; "" (the null sender of bounces) is written as "<>". */
  returnPath: string;
  /** Recipient address, written as Delivered-To. */
  deliveredTo: string;
  /** This host's name, part of the unique file name. */
  hostname: string;
  /** The message as stored in the spool, with CRLF line endings. */
  content: ReadableStream<Uint8Array>;
  /** `user` names a directory as written (a home's "Maildir"), not a recipient: keep its case. */
  keepCase?: boolean;
}

let deliveries = 0;

/**
 * A file name unique per the Maildir spec: `<secs>.M<usecs>P<pid>Q<n>R<random>.<host>`,
 * with "/" and ":" in the host name escaped as "\057" and "\072" (":" starts
 * the info part in cur/). The random part keeps names unique even across
 * processes that share a pid namespace badly, or a clock that steps back.
 */
export function maildirName(hostname: string): string {
  const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
  const secs = Math.floor(us / 1_000_000);
  const usecs = us % 1_000_000;
  const rand = Array.from(crypto.getRandomValues(new Uint8Array(8)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const host = (hostname || "localhost").replaceAll("/", "\\057").replaceAll(":", "\\072");
  return `${secs}.M${usecs}P${Deno.pid}Q${++deliveries}R${rand}.${host}`;
}

/** The trace headers local delivery adds (LF-ended, like the rest of the file). */
function traceHeaders(opts: MaildirDelivery): Uint8Array {
  // deno-lint-ignore no-control-regex
  const unsafe = /[\u0000-\u001f\u007f]/;
  if (unsafe.test(opts.returnPath)) {
    throw new DeliveryError("Control character in the sender address", {
      permanent: true,
      dsn: "5.1.7",
    });
  }
  if (unsafe.test(opts.deliveredTo)) {
    throw new DeliveryError("Control character in the recipient address", {
      permanent: true,
      dsn: "5.1.3",
    });
  }
  const text = `Return-Path: <${opts.returnPath}>\nDelivered-To: ${opts.deliveredTo}\n`;
  return new TextEncoder().encode(text);
}

/** mkdir that tolerates an existing directory; says whether it created one. */
async function mkdirOnce(path: string): Promise<boolean> {
  try {
    await Deno.mkdir(path, { mode: 0o700 });
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw e;
  }
}

/** Creates `${root}/${user}/{tmp,new,cur}` as needed and makes new entries durable. */
async function ensureMaildir(root: string, user: string): Promise<void> {
  await Deno.mkdir(root, { recursive: true });
  const box = `${root}/${user}`;
  let created = await mkdirOnce(box);
  for (const sub of ["tmp", "new", "cur"]) created = (await mkdirOnce(`${box}/${sub}`)) || created;
  if (created) {
    await syncDir(box);
    await syncDir(root);
  }
}

/** Opens a new file in tmp/ with O_EXCL, creating the Maildir on first use. */
async function openTmp(
  box: { root: string; user: string; hostname: string },
): Promise<{ name: string; file: Deno.FsFile }> {
  const { root, user } = box;
  const tmpDir = `${root}/${user}/tmp`;
  for (let attempt = 0;; attempt++) {
    const name = maildirName(box.hostname);
    try {
      const file = await Deno.open(`${tmpDir}/${name}`, {
        write: true,
        createNew: true,
        mode: 0o600,
      });
      return { name, file };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound && attempt === 0) await ensureMaildir(root, user);
      else if (!(e instanceof Deno.errors.AlreadyExists) || attempt > 3) throw e;
    }
  }
}

const WRITE_BUFFER = 64 * 1024;

/** Streams the trace headers and the converted content into `file`, then syncs it. */
async function writeMessage(
  file: Deno.FsFile,
  head: Uint8Array,
  content: ReadableStream<Uint8Array>,
) {
  const buf = new Uint8Array(WRITE_BUFFER);
  let used = 0;
  const put = async (data: Uint8Array) => {
    if (used + data.length > buf.length) {
      await writeAll(file, buf.subarray(0, used));
      used = 0;
    }
    if (data.length >= buf.length) await writeAll(file, data);
    else {
      buf.set(data, used);
      used += data.length;
    }
  };
  const conv = new CrlfToLf();
  await put(head);
  const reader = content.getReader();
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        throw new DeliveryError("Cannot read the message from the spool", {
          dsn: "4.3.0",
          cause: e,
        });
      }
      if (r.done) break;
      await put(conv.push(r.value));
    }
    await put(conv.flush());
    await writeAll(file, buf.subarray(0, used));
    await file.syncData();
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    throw e;
  } finally {
    reader.releaseLock();
  }
}

async function removeQuietly(path: string): Promise<void> {
  await Deno.remove(path).catch(() => {});
}

/** Hard-links tmp/name into new/ (link, unlike rename, never replaces an existing file). */
async function linkIntoNew(root: string, user: string, name: string): Promise<string> {
  const from = `${root}/${user}/tmp/${name}`;
  const to = `${root}/${user}/new/${name}`;
  try {
    await Deno.link(from, to);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    // new/ (or cur/) was removed under us: recreate and try once more.
    await ensureMaildir(root, user);
    await Deno.link(from, to);
  }
  return to;
}

/**
 * Delivers one message into `${root}/${user}/new/` and returns the new
 * file's path once it is durable. Throws DeliveryError: permanent for a user
 * name no mailbox can have (5.1.1) or control characters in an address;
 * temporary otherwise (see fsDeliveryError for the status codes). Nothing is
 * left in new/ unless delivery succeeded, nor in tmp/ unless the process dies.
 */
export async function deliverToMaildir(opts: MaildirDelivery): Promise<string> {
  let user: string, head: Uint8Array;
  try {
    user = opts.keepCase ? (mailboxName(opts.user), opts.user) : mailboxName(opts.user);
    head = traceHeaders(opts);
  } catch (e) {
    await opts.content.cancel(e).catch(() => {});
    throw e;
  }
  const { root } = opts;
  let opened: { name: string; file: Deno.FsFile };
  try {
    opened = await openTmp({ root, user, hostname: opts.hostname });
  } catch (e) {
    await opts.content.cancel(e).catch(() => {});
    throw fsDeliveryError(e, `Cannot create a file in ${root}/${user}/tmp`);
  }
  const { name, file } = opened;
  const tmp = `${root}/${user}/tmp/${name}`;
  let dest: string;
  try {
    try {
      await writeMessage(file, head, opts.content);
    } finally {
      file.close();
    }
    dest = await linkIntoNew(root, user, name);
  } catch (e) {
    await removeQuietly(tmp);
    throw fsDeliveryError(e, `Cannot deliver to ${root}/${user}`);
  }
  await removeQuietly(tmp);
  try {
    await syncDir(`${root}/${user}/new`);
  } catch (e) {
    // Not durable: take it back so the retry does not make a second copy.
    await removeQuietly(dest);
    throw fsDeliveryError(e, `Cannot sync ${root}/${user}/new`);
  }
  return dest;
}
