/**
 * `skiff status`: queue counts by state, the oldest message and, from a
 * running manager, its pid, uptime and open connections. The spool half is
 * read from disk, so the same figures come with or without a manager.
 */
import type { Config } from "../config/types.ts";
import { addToTotals, emptyTotals, streamQueue } from "./queue_list.ts";
import { NO_SCHEDULER, type QueueHooks } from "./queue_ops.ts";

/** Queue figures read from the spool. */
export interface SpoolStatus {
  queue: { active: number; deferred: number; incoming: number; hold: number; total: number };
  /** Files waiting in the maildrop; null when this user cannot read it. */
  maildrop: number | null;
  oldest: { queue_id: string; arrival_time: number; age_seconds: number } | null;
}

/** Counts messages by state and finds the oldest. */
export async function spoolStatus(
  cfg: Config,
  hooks: QueueHooks = NO_SCHEDULER,
): Promise<SpoolStatus> {
  // Counted as the listing streams by: no array of the whole queue is built.
  const t = emptyTotals();
  for await (const slice of streamQueue(cfg.spoolDir, { activeIds: () => hooks.activeIds() })) {
    for (const item of slice) addToTotals(t, item);
  }
  const first = t.oldest;
  return {
    queue: { ...t.queues, total: t.count },
    maildrop: await countMaildrop(cfg),
    oldest: first
      ? {
        queue_id: first.queue_id,
        arrival_time: first.arrival_time,
        age_seconds: Math.max(0, Math.floor(Date.now() / 1000) - first.arrival_time),
      }
      : null,
  };
}

/** Files waiting in the maildrop; null when this user cannot read it. */
export async function countMaildrop(cfg: Config): Promise<number | null> {
  let n = 0;
  try {
    for await (const e of Deno.readDir(cfg.sendmail.maildropDir)) if (e.isFile) n++;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    return null;
  }
  return n;
}

/** Human-readable lines for `skiff status`. */
export function formatStatus(s: Record<string, unknown> & SpoolStatus): string {
  const lines: string[] = [];
  if (typeof s.pid === "number") {
    const uid = typeof s.uid === "number" ? `, uid ${s.uid}` : "";
    lines.push(
      `manager: running, pid ${s.pid}${uid}, version ${s.version}, up ${s.uptime_seconds} s`,
      `connections: ${s.connections ?? "unknown"}`,
    );
  } else {
    lines.push("manager: not running");
  }
  const q = s.queue;
  lines.push(
    `queue: ${q.total} message(s): ${q.active} active, ${q.deferred} deferred, ` +
      `${q.incoming} incoming, ${q.hold} on hold`,
    `maildrop: ${s.maildrop ?? "unreadable"} file(s) waiting`,
    s.oldest
      ? `oldest: ${s.oldest.queue_id}, queued ${s.oldest.age_seconds} s ago`
      : "oldest: none",
  );
  if (typeof s.warning === "string") lines.push(`warning: ${s.warning}`);
  return lines.join("\n");
}
