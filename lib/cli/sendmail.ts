/**
 * `skiff sendmail` (and a `sendmail` link): the sendmail-compatible front
 * end every Unix program calls. It reads the message on stdin, completes its
 * headers (sendmail_message.ts) and hands it over: on the manager's unix
 * submission socket when the manager runs (the kernel says who we are), else
 * into the maildrop (the file's owner says who we are), so mail is never
 * lost because the daemon is down. Only the uid decides the identity:
 * $USER and $LOGNAME are never trusted. Other modes (-bp, -bs, -bi, -bv,
 * -q) hand off to their commands. Exit codes follow sysexits.h.
 */
import type { Config } from "../config/types.ts";
import { dropMessage, ensureMaildrop } from "../maildrop/drop.ts";
import { type DropEnvelope, MaildropError } from "../maildrop/format.ts";
import { loginOf } from "../sys/passwd.ts";
import { dropPermissions } from "../sys/permissions.ts";
import { senderAllowed } from "../maildrop/sender_policy.ts";
import { parseMailbox } from "../wire/command.ts";
import {
  EX_CANTCREAT,
  EX_DATAERR,
  EX_NOPERM,
  EX_NOUSER,
  EX_OK,
  EX_TEMPFAIL,
  EX_USAGE,
} from "../sys/exit_codes.ts";
import { flush } from "./flush.ts";
import { mailq } from "./mailq.ts";
import { queueCommand } from "./queue.ts";
import { parseSendmailArgs, type SendmailArgs, UsageError } from "./sendmail_args.ts";
import { prepareMessage } from "./sendmail_message.ts";
import { newaliasesCommand, verifyCommand } from "./sendmail_modes.ts";
import { stdioSession } from "./stdio_session.ts";
import { submitOnSocket } from "./submit_socket.ts";
import { submissionListener } from "./submit_target.ts";

export { parseSendmailArgs, type SendmailArgs, UsageError };

/** Runs `sendmail`; returns the exit code. */
export async function sendmail(cfg: Config, argv: string[]): Promise<number> {
  let args: SendmailArgs;
  try {
    args = parseSendmailArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`sendmail: ${err.message}`);
    return EX_USAGE;
  }
  for (const w of args.warnings) console.error(`sendmail: warning: ${w}`);
  switch (args.mode) {
    case "queue-list":
      return await mailq(cfg);
    case "flush":
      return args.flushDomain
        ? await queueCommand(cfg, ["retry", "--domain", args.flushDomain])
        : await flush(cfg);
    case "newaliases":
      return await newaliasesCommand(cfg, args.verbose ? ["-v"] : []);
    case "verify":
      return await verifyCommand(cfg, args.recipients);
    case "smtp":
      return await stdioSession(cfg);
    case "deliver":
      return await deliver(cfg, args);
  }
}

/** Appends @hostname to a bare local part, as Postfix's append_at_myorigin does. */
function qualify(address: string, hostname: string): string {
  return address.includes("@") ? address : `${address}@${hostname}`;
}

async function deliver(cfg: Config, args: SendmailArgs): Promise<number> {
  const uid = Deno.uid() ?? -1;
  // Handing a message over needs files and a socket, never a program or FFI.
  await dropPermissions(["run", "ffi"]);
  const user = loginOf(uid);
  const own = `${user.name}@${cfg.hostname}`;
  const sender = args.sender === null
    ? own
    : args.sender === ""
    ? ""
    : qualify(args.sender, cfg.hostname);
  if (sender !== "" && !parseMailbox(sender)) {
    console.error(`sendmail: bad sender address ${JSON.stringify(sender)}`);
    return EX_DATAERR;
  }
  const allowed = senderAllowed(cfg, { login: user.name, uid, sender });
  if (!allowed && cfg.sendmail.untrustedSender === "refuse") {
    console.error(
      `sendmail: ${user.name} may not use the sender address <${sender}> ` +
        `(only root and auth.trusted_users may set another user's address)`,
    );
    return EX_NOPERM;
  }
  const input = new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
  if (input.length > cfg.limits.messageSize) {
    console.error(
      `sendmail: the message (${input.length} bytes) exceeds the size limit of ` +
        `${cfg.limits.messageSize} bytes`,
    );
    return EX_DATAERR;
  }
  const msg = prepareMessage(input, {
    dotEnds: args.dotEnds,
    extract: args.extract,
    fromAddress: sender || own,
    fullName: args.fullName ?? user.fullName,
    hostname: cfg.hostname,
    now: Date.now(),
  });
  const recipients = [...new Set([...args.recipients, ...msg.extracted])].map((r) =>
    qualify(r.replace(/^<(.*)>$/, "$1"), cfg.hostname)
  );
  if (recipients.length === 0) {
    console.error("sendmail: no recipients given (name them as arguments, or use -t)");
    return EX_USAGE;
  }
  const bad = recipients.find((r) => !parseMailbox(r));
  if (bad) {
    console.error(`sendmail: bad recipient address ${JSON.stringify(bad)}`);
    return EX_DATAERR;
  }
  const verbose = (s: string) => args.verbose && console.error(`sendmail: ${s}`);
  const target = submissionListener(cfg);
  // A flagged sender (untrusted_sender = "warn") goes through the maildrop,
  // where the pickup adds the X-Authentication-Warning header.
  if (target && allowed) {
    const r = await submitOnSocket({
      path: target.path,
      helo: cfg.hostname,
      from: sender,
      recipients,
      notify: args.notify,
      ret: args.ret,
      envid: args.envid,
      body: args.body,
      content: msg.content,
      trace: args.verbose ? (l) => console.error(l) : undefined,
    });
    for (const f of r.kind === "unavailable" ? [] : r.refused) {
      console.error(`sendmail: <${f.address}>: refused: ${f.reply}`);
    }
    if (r.kind === "accepted") {
      verbose(`submitted on ${target.path}: ${r.reply}`);
      return r.refused.length > 0 ? EX_NOUSER : EX_OK;
    }
    if (r.kind === "rejected" && !r.temporary) {
      console.error(`sendmail: the message was refused: ${r.reply}`);
      return /\b5\.7\.\d/.test(r.reply) ? EX_NOPERM : r.refused.length ? EX_NOUSER : EX_DATAERR;
    }
    verbose(
      `submission socket ${target.path} not usable (${
        r.kind === "unavailable" ? r.reason : r.reply
      }); using the maildrop`,
    );
  }
  const env: DropEnvelope = {
    from: sender,
    recipients: recipients.map((address) => ({
      address,
      ...(args.notify ? { notify: args.notify } : {}),
    })),
  };
  const params: Record<string, string> = {};
  if (args.ret) params.RET = args.ret;
  if (args.envid) params.ENVID = args.envid;
  if (args.body) params.BODY = args.body;
  if (Object.keys(params).length > 0) env.params = params;
  try {
    await ensureMaildrop(cfg.sendmail.maildropDir);
    const name = await dropMessage(cfg.sendmail.maildropDir, env, msg.content);
    verbose(`queued in the maildrop as ${name}; the manager or the next flush picks it up`);
  } catch (err) {
    if (err instanceof MaildropError) {
      console.error(`sendmail: ${err.message}`);
      return EX_DATAERR;
    }
    console.error(
      `sendmail: cannot write to the maildrop ${cfg.sendmail.maildropDir}: ${
        (err as Error).message
      }`,
    );
    return err instanceof Deno.errors.PermissionDenied ? EX_CANTCREAT : EX_TEMPFAIL;
  }
  return EX_OK;
}
