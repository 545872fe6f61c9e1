/**
 * `skiff queue`: the operator's view and handles on the queue, like
 * Postfix's postqueue and postsuper. `list [--json]` prints the queue as it
 * streams in (JSON: one object per message per line, like `postqueue -j`;
 * lib/cli/queue_list.ts); `show ID` prints
 * the envelope and each recipient's history; `hold`, `release`, `delete`
 * and `retry` take ids, `--domain DOMAIN` (messages with an open recipient
 * there) or `--all`, and say how many messages they changed. With a manager
 * running the work is done by it, over the control socket.
 */
import type { Config } from "../config/types.ts";
import { ControlDenied, ControlError } from "../control/client.ts";
import type { QueueOp, Selection } from "../control/protocol.ts";
import type { OpResult, QueueEntry, showMessage } from "../control/queue_ops.ts";
import { isQueueId } from "../spool/queue_id.ts";
import type { Envelope } from "../spool/records.ts";
import {
  EX_CONFIG,
  EX_NOINPUT,
  EX_NOPERM,
  EX_OK,
  EX_SOFTWARE,
  EX_TEMPFAIL,
  EX_USAGE,
} from "../sys/exit_codes.ts";
import {
  jsonSink,
  MAILQ_HEADER,
  mailqEntry,
  mailqFooter,
  mailqSink,
  streamListing,
} from "./queue_list.ts";

const USAGE = `Usage: skiff queue list [--json]
       skiff queue show ID [--json]
       skiff queue hold|release|delete|retry (ID... | --domain DOMAIN | --all)`;

const PAST: Record<string, string> = {
  hold: "placed on hold",
  release: "released from hold",
  delete: "deleted",
  retry: "scheduled for immediate delivery",
};

/** Parses the selection arguments of a changing operation. */
export function parseSelection(args: string[]): Selection {
  const sel: Selection = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--all" || a === "ALL") sel.all = true;
    else if (a === "--domain") {
      const d = args[++i];
      if (!d) throw new Error("Option --domain needs a domain");
      sel.domain = d.toLowerCase();
    } else if (a.startsWith("--domain=")) sel.domain = a.slice(9).toLowerCase();
    else if (a.startsWith("-")) throw new Error(`Unknown option ${a}`);
    else if (!isQueueId(a)) throw new Error(`Not a queue id: ${JSON.stringify(a)}`);
    else (sel.ids ??= []).push(a);
  }
  if (!sel.all && sel.domain === undefined && !sel.ids) {
    throw new Error("Name the messages: queue ids, --domain DOMAIN or --all");
  }
  return sel;
}

/** Runs `skiff queue ...`; returns the exit code. */
export async function queueCommand(cfg: Config, argv: string[]): Promise<number> {
  const [op, ...rest] = argv;
  try {
    switch (op) {
      case "list":
        return await list(cfg, rest);
      case "show":
        return await show(cfg, rest);
      case "hold":
      case "release":
      case "delete":
      case "retry":
        return await change(cfg, op, parseSelection(rest));
      default:
        console.error(
          op ? `skiff queue: unknown operation ${JSON.stringify(op)}\n${USAGE}` : USAGE,
        );
        return EX_USAGE;
    }
  } catch (err) {
    if (err instanceof ControlError) {
      console.error(`skiff queue: the manager refused: ${err.message}`);
      return EX_SOFTWARE;
    }
    if (err instanceof Error && !(err instanceof Deno.errors.PermissionDenied)) {
      if (/^(Unknown option|Option|Not a queue id|Name the messages)/.test(err.message)) {
        console.error(`skiff queue: ${err.message}\n${USAGE}`);
        return EX_USAGE;
      }
    }
    throw err;
  }
}

async function list(cfg: Config, args: string[]): Promise<number> {
  const json = args.includes("--json");
  const bad = args.find((a) => a !== "--json");
  if (bad) {
    console.error(`skiff queue list: unknown option ${bad}\n${USAGE}`);
    return EX_USAGE;
  }
  try {
    await streamListing(cfg, json ? jsonSink("skiff queue list") : mailqSink("skiff queue list"));
  } catch (err) {
    if (err instanceof Deno.errors.BrokenPipe) return EX_OK; // the reader had enough
    if (!(err instanceof Deno.errors.PermissionDenied) && !(err instanceof ControlDenied)) {
      throw err;
    }
    console.error(
      `skiff queue list: cannot read the queue in ${cfg.spoolDir} (${err.message}); ` +
        "only root and the user skiff runs as may list it",
    );
    return EX_NOPERM;
  }
  return EX_OK;
}

async function show(cfg: Config, args: string[]): Promise<number> {
  const json = args.includes("--json");
  const ids = args.filter((a) => a !== "--json");
  if (ids.length !== 1) {
    console.error(`skiff queue show: name one queue id (got ${ids.length})\n${USAGE}`);
    return EX_USAGE;
  }
  if (!isQueueId(ids[0])) {
    console.error(
      `skiff queue show: ${JSON.stringify(ids[0])} is not a queue id ` +
        "(ids look like the first column of mailq)",
    );
    return EX_USAGE;
  }
  // Loaded here, not at the top: `queue list` should not pay for the queue manager's code.
  const { viaManager } = await import("./manager_link.ts");
  const { showMessage } = await import("../control/queue_ops.ts");
  const r = await viaManager(
    cfg,
    { cmd: "queue", op: "show", select: { ids } },
    (hooks) => showMessage(cfg.spoolDir, ids[0], hooks),
  );
  const msg = r.via === "manager"
    ? r.reply.message
    : r.via === "spool"
    ? r.value
    : await showMessage(cfg.spoolDir, ids[0]);
  if (!msg) {
    console.error(`skiff queue show: no message ${ids[0]} in the queue`);
    return EX_NOINPUT;
  }
  if (json) console.log(JSON.stringify(msg, null, 2));
  else console.log(formatShow(msg as Awaited<ReturnType<typeof showMessage>> & object));
  return EX_OK;
}

async function change(
  cfg: Config,
  op: Exclude<QueueOp, "list" | "show">,
  sel: Selection,
): Promise<number> {
  const { LOCKED_MESSAGE, oneShotPass, viaManager } = await import("./manager_link.ts");
  const { applyQueueOp } = await import("../control/queue_ops.ts");
  const r = await viaManager(cfg, { cmd: "queue", op, select: sel }, async (hooks) => {
    const res = await applyQueueOp(cfg.spoolDir, op, sel, hooks);
    return res;
  });
  if (r.via === "locked") {
    console.error(`skiff queue ${op}: ${LOCKED_MESSAGE}`);
    return EX_TEMPFAIL;
  }
  const res = (r.via === "manager" ? r.reply : r.value) as unknown as OpResult;
  console.log(`skiff queue ${op}: ${res.count} message(s) ${PAST[op]}`);
  for (const id of res.ids) console.log(`  ${id}`);
  if (op === "retry" && r.via === "spool" && res.count > 0) {
    // No manager: "retry now" means a queue pass for these messages, here.
    const { prepareQueueRun } = await import("../privsep/queue_run.ts");
    const { tryLockSpool } = await import("./spool_lock.ts");
    try {
      await prepareQueueRun(cfg);
    } catch (err) {
      console.error(`skiff queue retry: ${(err as Error).message}`);
      return EX_CONFIG;
    }
    const lock = await tryLockSpool(cfg.spoolDir);
    if (lock === null) {
      console.error(`skiff queue retry: ${LOCKED_MESSAGE}`);
      return EX_TEMPFAIL;
    }
    try {
      const { left } = await oneShotPass(cfg, lock, res.ids);
      console.log(`skiff queue retry: queue pass done, ${left} message(s) still queued`);
    } finally {
      lock.release();
    }
  }
  return EX_OK;
}

/** The Postfix mailq layout of a whole listing (small queues; mailq itself streams). */
export function formatMailq(entries: QueueEntry[]): string {
  if (entries.length === 0) return "Mail queue is empty";
  let bytes = 0;
  let text = MAILQ_HEADER + "\n";
  for (const e of entries) {
    bytes += e.message_size;
    text += mailqEntry(e);
  }
  return text + mailqFooter(entries.length, bytes);
}

function formatShow(m: QueueEntry & { envelope: Envelope; history: unknown[] }) {
  const e = m.envelope;
  const lines = [
    `id:        ${m.queue_id} (${m.queue_name})`,
    `arrived:   ${new Date(m.arrival_time * 1000).toISOString()}`,
    `size:      ${m.message_size}`,
    `sender:    <${m.sender}>`,
    `client:    ${e.client?.address || "local"}${
      e.client?.auth ? ` (auth ${e.client.auth})` : ""
    } via ${e.protocol}`,
    "recipients:",
  ];
  m.recipients.forEach((r, i) => {
    lines.push(
      `  ${i}: <${r.address}> ${r.status}, ${r.attempts} attempt(s)${
        r.next_attempt ? `, next ${new Date(r.next_attempt * 1000).toISOString()}` : ""
      }`,
    );
    for (
      const h of m.history as {
        rcpt?: number;
        t: string;
        at?: number;
        dsn?: string;
        text?: string;
      }[]
    ) {
      if (h.rcpt !== i) continue;
      lines.push(
        `     ${h.at ? new Date(h.at).toISOString() : "?"} ${h.t}${h.dsn ? ` ${h.dsn}` : ""}${
          h.text ? ` ${h.text}` : ""
        }`,
      );
    }
  });
  return lines.join("\n");
}
