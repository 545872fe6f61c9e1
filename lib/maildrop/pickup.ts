/**
 * The manager's side of the maildrop (Postfix's pickup): turns dropped
 * files into spool messages. The directory is writable by everyone, so a
 * name is opened first (O_NOFOLLOW|O_NONBLOCK: a symlink, FIFO or device
 * swapped in never blocks or redirects anything) and only the descriptor is
 * judged (regular, one link, marked complete), reading at most the size
 * limit plus one byte however the file grows (lib/sys/safe_open.ts); the
 * file's owner, not anything written inside, is the submitter. A sender address that is not the
 * owner's own (unless the owner is root or a trusted user) is refused or
 * flagged with X-Authentication-Warning, per `sendmail.untrusted_sender`.
 * The spool commit happens before the drop file is removed: a crash in
 * between gives a duplicate, never a loss.
 */
import type { Config } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { parseMailbox } from "../wire/command.ts";
import { rfc5322Date } from "../smtp/received.ts";
import type { Envelope } from "../spool/records.ts";
import type { Spool } from "../spool/spool.ts";
import { decodeDrop, type DropEnvelope } from "./format.ts";
import { loginOf } from "../sys/passwd.ts";
import { senderAllowed } from "./sender_policy.ts";
import { type SafeRead, safeReadFile, UnsafeFileError } from "../sys/safe_open.ts";
import { authenticateMessage } from "../mailauth/hook.ts";

/** Incomplete drops older than this are abandoned (the shim died while writing). */
const ABANDONED_MS = 24 * 3600 * 1000;

/** Picks up every complete drop file; resolves to the number of messages queued. */
export async function pickupMaildrop(
  cfg: Config,
  spool: Spool,
  onQueued: (id: string) => void = () => {},
  opts: { onWaiting?: () => void } = {},
): Promise<number> {
  const dir = cfg.sendmail.maildropDir;
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) names.push(e.name);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
  let n = 0;
  for (const name of names.sort()) {
    if (!/^[0-9a-z]+\.[0-9a-f]{24}$/.test(name)) {
      logWarn("maildrop: unexpected name", { file: name });
      continue;
    }
    try {
      const id = await pickupOne(cfg, spool, `${dir}/${name}`);
      if (id !== null) {
        n++;
        onQueued(id);
      } else opts.onWaiting?.();
    } catch (err) {
      logWarn("maildrop: file refused", { file: name, error: (err as Error).message });
    }
  }
  return n;
}

/** Checks, queues and removes one drop file; null when it is not ready yet. */
async function pickupOne(cfg: Config, spool: Spool, path: string): Promise<string | null> {
  // Open first (no symlink followed, never blocking on a FIFO or device),
  // then judge only the descriptor: the name can be swapped at any time.
  let read: SafeRead | null;
  try {
    read = await safeReadFile(path, {
      limit: cfg.limits.messageSize + 64 * 1024,
      readIf: (st) => (st.mode & 0o100) !== 0,
    });
  } catch (err) {
    if (err instanceof UnsafeFileError) {
      // A symlink, FIFO, device, hard link or oversized file: drop our name, never the target.
      await Deno.remove(path).catch(() => {});
    }
    throw err;
  }
  if (read === null) return null; // gone already
  if (read.skipped) {
    if (Date.now() - read.stat.mtimeMs > ABANDONED_MS) await Deno.remove(path);
    return null; // still being written
  }
  let drop;
  try {
    drop = decodeDrop(read.bytes);
  } catch (err) {
    await Deno.remove(path);
    throw err;
  }
  const id = await queueDrop(cfg, spool, { uid: read.uid, ...drop });
  await Deno.remove(path);
  return id;
}

/**
 * DKIM-signs a local user's dropped message as the submission socket would
 * (lib/mailauth/hook.ts); a signing failure throws, leaving the drop file
 * for the next pickup.
 */
async function dkimSignDrop(
  cfg: Config,
  d: { uid: number; content: Uint8Array; from: string; id: string; now: number },
): Promise<string> {
  if (cfg.dkim.length === 0) return "";
  const name = loginOf(d.uid).name;
  const trusted = d.uid === 0 || cfg.auth.trustedUsers.includes(name);
  const out = await authenticateMessage(d.content, {
    cfg,
    listener: { senders: "own", dmarc: "off", spfFail: "ignore" },
    subject: {
      identity: { kind: "peercred", name, uid: d.uid, trusted },
      clientAddress: "",
      helo: "",
      from: d.from,
    },
    role: "sign",
    id: d.id,
    client: "maildrop",
    now: d.now,
  });
  if (out.reject) throw new Error(`DKIM signing of the drop from uid ${d.uid} failed`);
  return out.prepend;
}

/** Writes a dropped message into the spool as submitted by `uid`. */
async function queueDrop(
  cfg: Config,
  spool: Spool,
  d: { uid: number; envelope: DropEnvelope; content: Uint8Array },
): Promise<string> {
  const user = loginOf(d.uid);
  let from = d.envelope.from;
  let warning = "";
  if (from !== "" && !parseMailbox(from)) from = `${user.name}@${cfg.hostname}`;
  if (!senderAllowed(cfg, { login: user.name, uid: d.uid, sender: from })) {
    if (cfg.sendmail.untrustedSender === "warn") {
      warning = `X-Authentication-Warning: ${cfg.hostname}: ${user.name} set sender to ${
        from.replace(/[^\x20-\x7e]/g, "?")
      } using -f\r\n`;
    } else {
      logWarn("maildrop: sender refused", { uid: d.uid, user: user.name, from: `<${from}>` });
      from = `${user.name}@${cfg.hostname}`;
    }
  }
  for (const r of d.envelope.recipients) {
    if (!parseMailbox(r.address)) {
      throw new Error(`Bad recipient address ${JSON.stringify(r.address)}`);
    }
  }
  const writer = await spool.begin();
  const now = Date.now();
  const received =
    `Received: by ${cfg.hostname} (skiff, from userid ${d.uid})\r\n\tid ${writer.id}; ${
      rfc5322Date(now)
    }\r\n`;
  let head = new Uint8Array();
  try {
    // A sender kept with an X-Authentication-Warning is not the user's own: never signed.
    const signature = warning ? "" : await dkimSignDrop(cfg, { ...d, from, id: writer.id, now });
    head = new TextEncoder().encode(signature + received + warning);
    await writer.write(head);
    await writer.write(d.content);
    const envelope: Envelope = {
      id: writer.id,
      from,
      recipients: d.envelope.recipients,
      received: now,
      client: { address: "", helo: "", auth: user.name },
      protocol: "LOCAL",
      size: head.length + d.content.length,
      ...(d.envelope.params ? { params: d.envelope.params } : {}),
    };
    await writer.commit(envelope);
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
  logEvent("received", {
    id: writer.id,
    from: `<${from}>`,
    size: head.length + d.content.length,
    nrcpt: d.envelope.recipients.length,
    client: "maildrop",
    uid: d.uid,
    user: user.name,
  });
  return writer.id;
}
