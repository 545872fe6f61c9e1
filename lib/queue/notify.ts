/**
 * After each delivery pass: tell the sender about recipients that failed
 * (a bounce), that have waited longer than delivery.delay_warning (a
 * delay warning), or that asked NOTIFY=SUCCESS and were delivered here or
 * relayed to a server without DSN (a success notice, RFC 3461 §5.2.2; a
 * server with DSN took the request on, so nothing is sent from here), each
 * recipient at most once per kind. The report is
 * queued as a new message with the null sender (so it can never bounce
 * back), then `notified` records are appended; a crash between the two
 * sends the report twice, never zero times.
 */
import type { Config } from "../config/types.ts";
import { logEvent } from "../log/log.ts";
import type {
  JournalRecord,
  MessageState,
  NoticeAction,
  RecipientState,
} from "../spool/records.ts";
import { applyRecords } from "../spool/records.ts";
import type { Spool } from "../spool/spool.ts";
import { buildReport, MAX_RETURNED, notifyTarget, wantsNotice } from "./bounce.ts";

/** What notify needs. */
export interface NotifyDeps {
  cfg: Config;
  spool: Spool;
  now: () => number;
  enqueue: (id: string) => void;
}

/** Sends the notices the state calls for; returns the state after. */
export async function notify(deps: NotifyDeps, state: MessageState): Promise<MessageState> {
  const now = deps.now();
  const records: JournalRecord[] = [];
  const failed = state.recipients.filter((r) => r.status === "failed" && !r.bounced);
  if (failed.length > 0) records.push(...await send(deps, state, failed, "failed", now));
  const warnAfter = deps.cfg.delivery.delayWarning * 1000;
  if (warnAfter > 0 && now - state.envelope.received >= warnAfter) {
    const late = state.recipients.filter((r) => r.status === "deferred" && !r.warned);
    if (late.length > 0) records.push(...await send(deps, state, late, "delayed", now));
  }
  for (const action of ["delivered", "relayed"] as const) {
    const done = state.recipients.filter((r) =>
      r.status === "delivered" && !r.succeeded && successAction(r) === action &&
      wantsNotice(state, r, action)
    );
    if (done.length > 0) records.push(...await send(deps, state, done, action, now));
  }
  if (records.length === 0) return state;
  await deps.spool.append(state.envelope.id, records);
  return applyRecords(state, records);
}

async function send(
  deps: NotifyDeps,
  state: MessageState,
  rcpts: RecipientState[],
  action: NoticeAction,
  now: number,
): Promise<JournalRecord[]> {
  const target = notifyTarget(deps.cfg, state);
  const wanted = rcpts.filter((r) => wantsNotice(state, r, action));
  let id = "none";
  if (target && wanted.length > 0) {
    const w = await deps.spool.begin();
    try {
      const original = await readOriginal(deps.spool, state.envelope.id);
      const bytes = buildReport({
        cfg: deps.cfg,
        state,
        recipients: wanted,
        action,
        original,
        id: w.id,
        now,
        to: target.to,
      });
      await w.write(bytes);
      await w.commit({
        id: w.id,
        from: "",
        recipients: [{ address: target.to }],
        received: now,
        client: { address: "127.0.0.1", helo: deps.cfg.hostname },
        protocol: target.protocol,
        size: bytes.length,
      });
    } catch (err) {
      await w.abort().catch(() => {});
      throw err;
    }
    id = w.id;
    deps.enqueue(id);
    const kind = { failed: "bounce", delayed: "delay warning" }[action as string] ??
      "success notice";
    logEvent(kind, {
      id: state.envelope.id,
      to: `<${target.to}>`,
      report: id,
      nrcpt: wanted.length,
    });
  } else if (action === "failed") {
    logEvent("no bounce", {
      id: state.envelope.id,
      reason: target ? "NOTIFY excludes FAILURE" : "null sender",
    });
  }
  return rcpts.map((r) => ({ t: "notified", rcpt: r.index, at: now, action, id }));
}

/** The success action of a delivered recipient: none when its DSN request went on with it. */
function successAction(r: RecipientState): "delivered" | "relayed" | null {
  const rec = r.history.findLast((h) => h.t === "delivered");
  if (!rec || rec.t !== "delivered") return null;
  return rec.hop === "passed" ? null : rec.hop === "relayed" ? "relayed" : "delivered";
}

/** The original, or as much as a full return may hold plus one byte (then headers only). */
async function readOriginal(spool: Spool, id: string): Promise<Uint8Array> {
  const { stream } = await spool.content(id);
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of stream) {
    chunks.push(c);
    n += c.length;
    if (n > MAX_RETURNED) break;
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
