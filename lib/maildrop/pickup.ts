/**
 * The manager's side of the maildrop (Postfix's pickup): turns dropped
 * files into spool messages. Nothing in a file is trusted before its
 * metadata is checked twice — by name (lstat: a regular file, not a
 * symlink, one link, marked complete) and on the opened descriptor (fstat:
 * the same inode, still one link) — and the file's owner, not anything
 * written inside, is the submitter. A sender address that is not the
 * owner's own (unless the owner is root or a trusted user) is refused or
 * flagged with X-Authentication-Warning, per `sendmail.untrusted_sender`.
 * The spool commit happens before the drop file is removed: a crash in
 * between gives a duplicate, never a loss.
 */
import type { Config } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { parseMailbox } from "../smtp/command.ts";
import { rfc5322Date } from "../smtp/received.ts";
import type { Envelope } from "../spool/records.ts";
import type { Spool } from "../spool/spool.ts";
import { decodeDrop, type DropEnvelope } from "./format.ts";
import { loginOf } from "../sys/passwd.ts";
import { senderAllowed } from "./sender_policy.ts";
import { authenticateMessage } from "../mailauth/hook.ts";

/** Incomplete drops older than this are abandoned (the shim died while writing). */
const ABANDONED_MS = 24 * 3600 * 1000;

/** Picks up every complete drop file; resolves to the number of messages queued. */
export async function pickupMaildrop(
  cfg: Config,
  spool: Spool,
  onQueued: (id: string) => void = () => {},
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
      }
    } catch (err) {
      logWarn("maildrop: file refused", { file: name, error: (err as Error).message });
    }
  }
  return n;
}

/** Checks, queues and removes one drop file; null when it is not ready yet. */
async function pickupOne(cfg: Config, spool: Spool, path: string): Promise<string | null> {
  const st = await Deno.lstat(path);
  if (!st.isFile) {
    // A symlink, fifo or device planted by someone: drop the name, never open it.
    if (st.isSymlink || !st.isDirectory) await Deno.remove(path);
    throw new Error("Not a regular file");
  }
  if (((st.mode ?? 0) & 0o100) === 0) {
    if (st.mtime && Date.now() - st.mtime.getTime() > ABANDONED_MS) await Deno.remove(path);
    return null; // still being written
  }
  if (st.nlink !== 1) {
    await Deno.remove(path); // a hard link to someone else's file: unlink our name only
    throw new Error(`File has ${st.nlink} links`);
  }
  if (st.size > cfg.limits.messageSize + 64 * 1024) {
    await Deno.remove(path);
    throw new Error(`File of ${st.size} bytes exceeds the message size limit`);
  }
  const file = await Deno.open(path, { read: true });
  let bytes: Uint8Array;
  let uid: number;
  try {
    const fst = await file.stat();
    if (!fst.isFile || fst.ino !== st.ino || fst.dev !== st.dev || fst.nlink !== 1) {
      throw new Error("File changed between checks");
    }
    uid = fst.uid ?? -1;
    bytes = new Uint8Array(fst.size);
    let got = 0;
    while (got < bytes.length) {
      const r = await file.read(bytes.subarray(got));
      if (r === null) break;
      got += r;
    }
    bytes = bytes.subarray(0, got);
  } finally {
    file.close();
  }
  let drop;
  try {
    drop = decodeDrop(bytes);
  } catch (err) {
    await Deno.remove(path);
    throw err;
  }
  const id = await queueDrop(cfg, spool, { uid, ...drop });
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
