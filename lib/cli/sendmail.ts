/**
 * `skiff sendmail` (and a `sendmail` link): reads a message on stdin and
 * hands it to the running manager. This first version submits over SMTP to
 * the first configured listener; the unix submission socket with kernel
 * peer credentials and the maildrop for when no manager runs come with the
 * sendmail-shim issue. Flags follow sendmail: -t -i -oi -f -r -F -bm -bp -q -v,
 * other -o options are accepted with a warning; unknown flags are EX_USAGE.
 */
import type { Config } from "../config/types.ts";
import { sendMessage } from "../smtp/client.ts";
import { parseMailbox } from "../smtp/command.ts";
import { rfc5322Date } from "../smtp/received.ts";
import { newQueueId } from "../spool/queue_id.ts";
import { EX_DATAERR, EX_OK, EX_TEMPFAIL, EX_USAGE } from "./exit_codes.ts";
import { flush } from "./flush.ts";
import { mailq } from "./mailq.ts";

/** Parsed sendmail command line. */
export interface SendmailArgs {
  mode: "deliver" | "queue-list" | "flush";
  fromHeaders: boolean;
  dotEnds: boolean;
  sender: string | null;
  fullName: string | null;
  verbose: boolean;
  recipients: string[];
  warnings: string[];
}

/** A usage error naming what was wrong. */
export class UsageError extends Error {}

/** Parses sendmail's flags (its own syntax: -fADDR and -f ADDR, -oi, -bX). */
export function parseSendmailArgs(argv: string[]): SendmailArgs {
  const a: SendmailArgs = {
    mode: "deliver",
    fromHeaders: false,
    dotEnds: true,
    sender: null,
    fullName: null,
    verbose: false,
    recipients: [],
    warnings: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (flag: string) => {
      const rest = arg.slice(flag.length);
      if (rest !== "") return rest;
      if (i + 1 >= argv.length) throw new UsageError(`Option ${flag} needs a value`);
      return argv[++i];
    };
    if (arg === "--") {
      a.recipients.push(...argv.slice(i + 1));
      break;
    } else if (!arg.startsWith("-") || arg === "-") a.recipients.push(arg);
    else if (arg === "-t") a.fromHeaders = true;
    else if (arg === "-i" || arg === "-oi") a.dotEnds = false;
    else if (arg.startsWith("-f") || arg.startsWith("-r")) a.sender = value(arg.slice(0, 2));
    else if (arg.startsWith("-F")) a.fullName = value("-F");
    else if (arg === "-bm") a.mode = "deliver";
    else if (arg === "-bp") a.mode = "queue-list";
    else if (arg === "-q") a.mode = "flush";
    else if (arg === "-v") a.verbose = true;
    else if (arg.startsWith("-o")) a.warnings.push(`Option ${arg} ignored`);
    else throw new UsageError(`Unknown option ${arg}`);
  }
  return a;
}

/** The submitting user's login name. */
function loginName(): string {
  return Deno.env.get("USER") ?? Deno.env.get("LOGNAME") ??
    (Deno.uid() === 0 ? "root" : `uid${Deno.uid()}`);
}

/** Reads stdin as text lines, stopping at a lone "." unless -i. */
async function readMessage(dotEnds: boolean): Promise<string[]> {
  const text = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer());
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === "") lines.pop();
  if (dotEnds) {
    const dot = lines.indexOf(".");
    if (dot >= 0) lines.length = dot;
  }
  return lines;
}

/** Addresses in a header value like `A <a@x>, b@y`. */
function headerAddresses(value: string): string[] {
  return [...value.matchAll(/<([^<>\s]+@[^<>\s]+)>|([^\s,<>"]+@[^\s,<>"]+)/g)].map((m) =>
    m[1] ?? m[2]
  );
}

/** Splits header lines from body lines, unfolding nothing (headers are passed on as given). */
function splitHeaders(lines: string[]): { headers: string[]; body: string[] } {
  const end = lines.indexOf("");
  return end < 0
    ? { headers: lines, body: [] }
    : { headers: lines.slice(0, end), body: lines.slice(end) };
}

/** Runs `sendmail`; returns the exit code. */
export async function sendmail(cfg: Config, argv: string[]): Promise<number> {
  let args: SendmailArgs;
  try {
    args = parseSendmailArgs(argv);
  } catch (err) {
    console.error(`sendmail: ${(err as Error).message}`);
    return EX_USAGE;
  }
  for (const w of args.warnings) console.error(`sendmail: ${w}`);
  if (args.mode === "queue-list") return await mailq(cfg);
  if (args.mode === "flush") return await flush(cfg);
  const user = loginName();
  const sender = args.sender ?? `${user}@${cfg.hostname}`;
  if (sender !== "" && sender !== "<>" && !parseMailbox(sender)) {
    console.error(`sendmail: bad sender address ${JSON.stringify(sender)}`);
    return EX_DATAERR;
  }
  const { headers, body } = splitHeaders(await readMessage(args.dotEnds));
  const recipients = [...args.recipients];
  const kept: string[] = [];
  // Header name of the line being read; continuation lines belong to it.
  let current: string | undefined;
  for (const h of headers) {
    const name = /^([!-9;-~]+):/.exec(h)?.[1].toLowerCase();
    if (name !== undefined) current = name;
    const value = name !== undefined ? h.slice(h.indexOf(":") + 1) : h;
    if (args.fromHeaders && (current === "to" || current === "cc" || current === "bcc")) {
      recipients.push(...headerAddresses(value));
    }
    if (current !== "bcc") kept.push(h); // -t removes Bcc
  }
  if (recipients.length === 0) {
    console.error("sendmail: no recipients given (name them as arguments or use -t)");
    return EX_USAGE;
  }
  const has = (n: string) => kept.some((h) => h.toLowerCase().startsWith(`${n}:`));
  const added: string[] = [];
  if (!has("from")) {
    added.push(`From: ${args.fullName ? `${args.fullName} ` : ""}<${sender || user}>`);
  }
  if (!has("date")) added.push(`Date: ${rfc5322Date(Date.now())}`);
  if (!has("message-id")) added.push(`Message-ID: <${newQueueId()}@${cfg.hostname}>`);
  const text = [...added, ...kept, ...body].map((l) => l + "\r\n").join("");
  const bytes = new TextEncoder().encode(text);
  const l = cfg.listeners[0];
  const result = await sendMessage({
    host: l.address.host,
    port: l.address.port,
    helo: cfg.hostname,
    connectTimeoutMs: 10_000,
    replyTimeoutMs: 60_000,
  }, {
    from: sender === "<>" ? "" : sender,
    recipients,
    size: bytes.length,
    content: () => Promise.resolve(new Blob([bytes]).stream()),
  });
  let status = EX_OK;
  for (const r of result.recipients) {
    if (args.verbose || r.outcome !== "delivered") {
      console.error(`sendmail: <${r.address}>: ${r.outcome} (${r.code} ${r.dsn} ${r.text})`);
    }
    if (r.outcome === "failed" && status === EX_OK) status = EX_DATAERR;
    if (r.outcome === "deferred") status = EX_TEMPFAIL;
  }
  return status;
}
